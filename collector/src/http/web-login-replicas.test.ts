import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHttpsFetch } from '@pgwarden/policy/oidc';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestIdp, type TestIdp } from '../../../test/governance/oidc-provider.js';
import { sha256Hex } from '../auth/token-file.js';
import type { Collector, CollectorOptions } from '../collector.js';
import {
  type ApprovalsFixture,
  startApprovalsFixture,
  untilApproverRoutesServe,
} from '../testing/approvals-fixture.js';
import { waitFor } from '../testing/wait-for.js';

const ALICE = 'tok-alice-web-replicas-0123456789';
const PUBLIC_URL = 'https://pgwarden.example';

/**
 * Two collector replicas on one PostgreSQL store behind one public URL, as the chart runs them behind a Service
 * without session affinity, and a real HTTPS identity provider: whichever replica a browser's request reaches, its
 * sign-in and session are the same, a restart keeps them, and sign-out ends them everywhere.
 */
describe('web UI sign-in across collector replicas on one store', () => {
  let idp: TestIdp;
  let fx: ApprovalsFixture;
  let dir: string;
  let a: Collector;
  let b: Collector;
  let db: pg.Client;
  let toIdp: ReturnType<typeof createHttpsFetch>;
  let startReplica: () => Promise<Collector>;

  const approversYaml = (issuer: string, withDora = true) =>
    [
      `- {name: alice, groups: [dba], tokenSha256: ${sha256Hex(ALICE)}}`,
      ...(withDora ? [`- {name: dora, groups: [dba], oidc: [{issuer: "${issuer}", subject: u-dora}]}`] : []),
      '',
    ].join('\n');

  beforeAll(async () => {
    idp = await startTestIdp();
    toIdp = createHttpsFetch({ ca: idp.ca });
    fx = await startApprovalsFixture(approversYaml(idp.issuer), ALICE);
    dir = mkdtempSync(join(tmpdir(), 'pgwarden-web-replicas-'));
    writeFileSync(join(dir, 'readers.yaml'), `- {name: rhea, oidc: [{issuer: "${idp.issuer}", subject: u-rhea}]}\n`);
    const options: Partial<CollectorOptions> = {
      read: { readersFile: join(dir, 'readers.yaml') },
      publicUrl: PUBLIC_URL,
      oidc: {
        issuer: idp.issuer,
        audience: [],
        caFile: idp.caFile,
        // Every sign-in here comes from one address, and the replicas share its limit (web-login-limits.test.ts).
        webLogin: { clientId: 'pgwarden-web', rate: { burst: 1000, perMinute: 6000 } },
      },
    };
    startReplica = async () => {
      const c = await fx.start(options);
      await untilApproverRoutesServe(c, ALICE);
      return c;
    };
    [a, b] = [await startReplica(), await startReplica()];
    db = new pg.Client({ connectionString: fx.db.url });
    await db.connect();
  });
  afterAll(async () => {
    await db?.end();
    await a?.stop();
    await b?.stop();
    await fx?.stop();
    await idp?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const cookieOf = (r: Response) => (r.headers.get('set-cookie') ?? '').split(';')[0];
  /** /auth/login on `on`, then the provider's /authorize: the callback's query and the login cookie, unused yet. */
  async function startLogin(
    on: Collector,
    sub = 'u-dora',
    path = '/auth/login',
  ): Promise<{ query: string; loginCookie: string }> {
    idp.login = { claims: { sub } };
    const login = await fetch(`${on.url}${path}`, { redirect: 'manual' });
    expect(login.status).toBe(302);
    const toCallback = await toIdp(login.headers.get('location') ?? '');
    expect(toCallback.status).toBe(302);
    return { query: new URL(toCallback.headers.get('location') ?? '').search, loginCookie: cookieOf(login) };
  }
  const callback = (on: Collector, l: { query: string; loginCookie: string }) =>
    fetch(`${on.url}/auth/callback${l.query}`, { redirect: 'manual', headers: { cookie: l.loginCookie } });
  /** Signs in on `start`, called back on `end`: the session cookie. */
  async function signIn(start: Collector, end: Collector, sub = 'u-dora'): Promise<string> {
    const res = await callback(end, await startLogin(start, sub));
    expect([res.status, res.headers.get('location')]).toEqual([302, `${PUBLIC_URL}/`]);
    return cookieOf(res);
  }
  const me = async (on: Collector, cookie: string) => {
    const r = await fetch(`${on.url}/auth/me`, { headers: { cookie } });
    return r.status === 200 ? ((await r.json()) as { name: string }).name : r.status;
  };
  const rows = async (table: string) =>
    (await db.query(`SELECT row_to_json(t)::text AS row FROM ${table} t`)).rows.map((r) => r.row as string);

  it('a sign-in started on one replica completes on the other; the session works on both, stored as a hash only', async () => {
    const pending = await startLogin(a, 'u-dora', '/auth/login?return=/%23approvals');
    const state = new URLSearchParams(pending.query).get('state') ?? '';
    expect(state).toMatch(/^[A-Za-z0-9_-]{43}$/);
    // The sign-in in flight is in the store, by its state's hash: the state itself is only in the browser.
    expect((await rows('collector_web_logins')).some((r) => r.includes(state))).toBe(false);
    const stateHash = createHash('sha256').update(state).digest('base64url');
    expect((await db.query('SELECT 1 FROM collector_web_logins WHERE state_sha256 = $1', [stateHash])).rowCount).toBe(
      1,
    );

    const res = await callback(b, pending);
    // Back where the sign-in started from (a path of this collector only: docs/collector.md#web-ui-sign-in).
    expect([res.status, res.headers.get('location')]).toEqual([302, `${PUBLIC_URL}/#approvals`]);
    const cookie = cookieOf(res);
    const id = cookie.split('=')[1];
    expect(id).toMatch(/^[A-Za-z0-9_-]{43}$/);
    // Used: gone from the store.
    expect((await db.query('SELECT 1 FROM collector_web_logins WHERE state_sha256 = $1', [stateHash])).rowCount).toBe(
      0,
    );

    expect([await me(a, cookie), await me(b, cookie)]).toEqual(['dora', 'dora']);
    for (const c of [a, b])
      expect((await fetch(`${c.url}/api/v1/approvals`, { headers: { cookie } })).status, c.url).toBe(200);

    // Whoever reads the table learns who is signed in, but holds no cookie that would let them ride the session.
    const stored = await rows('collector_web_sessions');
    expect(stored.some((r) => r.includes(id))).toBe(false);
    const { rows: mine } = await db.query(
      'SELECT entry, issuer, subject, username, groups FROM collector_web_sessions WHERE id_sha256 = $1',
      [createHash('sha256').update(id).digest('base64url')],
    );
    expect(mine).toEqual([{ entry: 'dora', issuer: idp.issuer, subject: 'u-dora', username: 'u-dora', groups: [] }]);
    expect(stored.join('\n')).not.toMatch(/eyJ|opaque-access-token/);
  });

  it('a session outlives a restart of the replica that opened it', async () => {
    const cookie = await signIn(a, a);
    expect(await me(a, cookie)).toBe('dora');
    await a.stop();
    a = await startReplica();
    expect(await me(a, cookie)).toBe('dora');
    expect((await fetch(`${a.url}/api/v1/approvals`, { headers: { cookie } })).status).toBe(200);
  });

  it('signing out on one replica ends the session on the other at once', async () => {
    const cookie = await signIn(a, a);
    expect([await me(a, cookie), await me(b, cookie)]).toEqual(['dora', 'dora']);
    const out = await fetch(`${b.url}/auth/logout`, { method: 'POST', headers: { cookie } });
    expect(out.status).toBe(200);
    expect([await me(a, cookie), await me(b, cookie)]).toEqual([401, 401]);
    expect((await fetch(`${a.url}/api/v1/approvals`, { headers: { cookie } })).status).toBe(401);
  });

  it('a callback works once: replayed on either replica, or raced on both, only one gets a session', async () => {
    const once = await startLogin(a);
    expect((await callback(b, once)).status).toBe(302);
    for (const c of [a, b]) {
      const replay = await callback(c, once);
      expect([replay.status, ((await replay.json()) as any).error.code, replay.headers.get('set-cookie')]).toEqual([
        400,
        'bad_login_state',
        null,
      ]);
    }
    const raced = await startLogin(b);
    const both = await Promise.all([callback(a, raced), callback(b, raced)]);
    expect(both.map((r) => r.status).sort()).toEqual([302, 400]);
  });

  it('an approver removed from the file loses their session on every replica; one signed in again keeps working', async () => {
    const cookie = await signIn(a, b);
    const rhea = await signIn(b, a, 'u-rhea');
    writeFileSync(fx.approversFile, approversYaml(idp.issuer, false));
    try {
      for (const c of [a, b]) {
        await waitFor(async () => (await me(c, cookie)) === 401);
        const queue = await fetch(`${c.url}/api/v1/approvals`, { headers: { cookie } });
        expect([queue.status, ((await queue.json()) as any).error.code]).toEqual([403, 'not_an_approver']);
        // The reader's session, opened elsewhere, is untouched.
        expect(await me(c, rhea)).toBe('rhea');
        expect((await fetch(`${c.url}/api/v1/sessions`, { headers: { cookie: rhea } })).status).toBe(200);
      }
    } finally {
      writeFileSync(fx.approversFile, approversYaml(idp.issuer));
      for (const c of [a, b]) await waitFor(async () => (await me(c, cookie)) === 'dora');
    }
  });

  it('while the store cannot answer, a session is unavailable (503), not signed out, and comes back with it', async () => {
    const cookie = await signIn(a, b);
    await db.query('ALTER TABLE collector_web_sessions RENAME TO collector_web_sessions_away');
    try {
      for (const path of ['/auth/me', '/api/v1/sessions', '/api/v1/approvals']) {
        const r = await fetch(`${b.url}${path}`, { headers: { cookie } });
        const body = await r.text();
        expect([r.status, JSON.parse(body).error.code], path).toEqual([503, 'store_unavailable']);
        expect(body).not.toMatch(/collector_web_sessions|postgres/i);
      }
      // Static tokens do not depend on it.
      expect((await fetch(`${b.url}/api/v1/approvals`, { headers: { authorization: `Bearer ${ALICE}` } })).status).toBe(
        200,
      );
    } finally {
      await db.query('ALTER TABLE collector_web_sessions_away RENAME TO collector_web_sessions');
    }
    expect([await me(a, cookie), await me(b, cookie)]).toEqual(['dora', 'dora']);
  });

  it('a session ends with its ID token’s exp, on every replica', async () => {
    idp.login = { claims: { sub: 'u-dora', exp: Math.floor(Date.now() / 1000) + 3 } };
    const login = await fetch(`${a.url}/auth/login`, { redirect: 'manual' });
    const back = new URL((await toIdp(login.headers.get('location') ?? '')).headers.get('location') ?? '');
    const res = await fetch(`${b.url}/auth/callback${back.search}`, {
      redirect: 'manual',
      headers: { cookie: cookieOf(login) },
    });
    expect(res.status).toBe(302);
    const cookie = cookieOf(res);
    // No timing assumption: it works until exp, and stops working after it (the store's clock decides).
    await waitFor(async () => (await me(a, cookie)) === 401);
    expect(await me(b, cookie)).toBe(401);
  });
});
