import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHttpsFetch } from '@pgwarden/policy/oidc';
import pg from 'pg';
import pino from 'pino';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startTestIdp, type TestIdp } from '../../../test/governance/oidc-provider.js';
import { freePort } from '../../../test/harness/ports.js';
import { RefreshTokenSeal } from '../auth/refresh-token-seal.js';
import { sha256Hex } from '../auth/token-file.js';
import type { Collector, CollectorOptions } from '../collector.js';
import type { AuditEvent } from '../event.js';
import {
  type ApprovalsFixture,
  startApprovalsFixture,
  untilApproverRoutesServe,
} from '../testing/approvals-fixture.js';
import { waitFor } from '../testing/wait-for.js';

const ALICE = 'tok-alice-web-renewal-0123456789';
const PUBLIC_URL = 'https://pgwarden.example';
const TTL = 3;
const CHROMIUM = '/usr/bin/chromium';
/** What a 401 for an ended session must send: the session cookie, dropped with the attributes it was set with. */
const CLEARED = '__Host-pgwarden-session=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0';

/**
 * Web sessions renewed with the identity provider's refresh tokens (--web-session-key-file), against a real HTTPS
 * identity provider that issues, rotates and revokes them, and two collector replicas on one PostgreSQL store. The
 * ID tokens live TTL seconds, so every test crosses their expiry.
 */
describe('web sessions renewed past their ID token', () => {
  let idp: TestIdp;
  let fx: ApprovalsFixture;
  let dir: string;
  let keyFile: string;
  let a: Collector;
  let b: Collector;
  let db: pg.Client;
  let toIdp: ReturnType<typeof createHttpsFetch>;
  const logs: string[] = [];
  /** Every response body the collectors sent in these tests. */
  const bodies: string[] = [];
  const extra: Collector[] = [];

  const approversYaml = (issuer: string) =>
    [
      `- {name: alice, groups: [dba], tokenSha256: ${sha256Hex(ALICE)}}`,
      `- {name: dora, groups: [dba], oidc: [{issuer: "${issuer}", subject: dora@example.com}]}`,
      '',
    ].join('\n');
  const options = (webLogin: Record<string, unknown>): Partial<CollectorOptions> => ({
    publicUrl: PUBLIC_URL,
    logger: pino({ level: 'trace' }, { write: (line: string) => void logs.push(line) }),
    // As the CLI runs it: the collector's own chain records reads, and the ends of web sign-ins.
    readAudit: {},
    oidc: {
      issuer: idp.issuer,
      audience: [],
      caFile: idp.caFile,
      usernameClaim: 'email',
      groupsClaim: 'groups',
      // Every sign-in here comes from one address; the limit is shared by the replicas, and not what is tested.
      webLogin: { clientId: 'pgwarden-web', rate: { burst: 1000, perMinute: 6000 }, ...webLogin },
    },
  });
  const start = async (webLogin: Record<string, unknown>) => {
    const c = await fx.start(options(webLogin));
    await untilApproverRoutesServe(c, ALICE);
    return c;
  };
  const startExtra = async (webLogin: Record<string, unknown>) => {
    const c = await start(webLogin);
    extra.push(c);
    return c;
  };

  beforeAll(async () => {
    idp = await startTestIdp();
    toIdp = createHttpsFetch({ ca: idp.ca });
    fx = await startApprovalsFixture(approversYaml(idp.issuer), ALICE);
    dir = mkdtempSync(join(tmpdir(), 'pgwarden-web-renewal-'));
    keyFile = join(dir, 'session.key');
    writeFileSync(keyFile, randomBytes(32), { mode: 0o600 });
    const renewing = { sessionKeyFile: keyFile, offlineAccess: true };
    [a, b] = [await start(renewing), await start(renewing)];
    db = new pg.Client({ connectionString: fx.db.url });
    await db.connect();
  });
  afterAll(async () => {
    await db?.end();
    for (const c of [a, b, ...extra]) await c?.stop();
    await fx?.stop();
    await idp?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  beforeEach(() => {
    idp.login = { claims: { sub: 'u-dora', email: 'dora@example.com', groups: ['dba', 'oncall'] }, ttl: TTL };
    idp.refresh = { issue: 'offline_access', rotate: true, idToken: true, nonce: 'omit', claims: {} };
    idp.behaviour.token = 'ok';
  });

  const cookieOf = (r: Response) => (r.headers.get('set-cookie') ?? '').split(';')[0];
  /** Signs in on `on` as the IdP's next login: the session cookie, and the Set-Cookie header. */
  async function signIn(on: Collector): Promise<{ cookie: string; setCookie: string }> {
    const login = await fetch(`${on.url}/auth/login`, { redirect: 'manual' });
    expect(login.status).toBe(302);
    const back = new URL((await toIdp(login.headers.get('location') ?? '')).headers.get('location') ?? '');
    const res = await fetch(`${on.url}/auth/callback${back.search}`, {
      redirect: 'manual',
      headers: { cookie: cookieOf(login) },
    });
    bodies.push(await res.text());
    expect(res.status).toBe(302);
    return { cookie: cookieOf(res), setCookie: res.headers.get('set-cookie') ?? '' };
  }
  /** /auth/me: the name, or the status and error of a refusal. */
  const me = async (
    on: Collector,
    cookie: string,
  ): Promise<string | { status: number; code: string; message: string }> => {
    const r = await fetch(`${on.url}/auth/me`, { headers: { cookie } });
    const text = await r.text();
    bodies.push(text);
    const body = JSON.parse(text);
    return r.status === 200 ? body.name : { status: r.status, code: body.error?.code, message: body.error?.message };
  };
  const sessionRow = async (cookie: string) => {
    const id = cookie.split('=')[1];
    const { createHash } = await import('node:crypto');
    const { rows } = await db.query('SELECT * FROM collector_web_sessions WHERE id_sha256 = $1', [
      createHash('sha256').update(id).digest('base64url'),
    ]);
    return rows[0];
  };
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  /** The web.session.end events stored for sign-ins of `subject` (the IdP's `sub`), oldest first. */
  const ends = async (subject: string) =>
    (
      await db.query<{ event: string }>(
        "SELECT event::text FROM audit_events WHERE type = 'web.session.end' ORDER BY ingest_seq",
      )
    ).rows
      .map((r) => JSON.parse(r.event) as AuditEvent)
      .filter((e) => e.webSession?.oidc.subject === subject);
  /** The one web.session.end of `subject`'s sign-in, once stored (none is stored twice: checked after a pause). */
  const endOf = async (subject: string) => {
    await waitFor(async () => (await ends(subject)).length > 0, 15_000, `web.session.end of ${subject}`);
    await sleep(500);
    const all = await ends(subject);
    expect(all).toHaveLength(1);
    return all[0].webSession;
  };
  /** A request with the cookie, raw: status, error code and Set-Cookie. */
  const raw = async (url: string, cookie: string, init: RequestInit = {}) => {
    const r = await fetch(url, { ...init, headers: { cookie, ...init.headers } });
    const text = await r.text();
    bodies.push(text);
    return { status: r.status, code: JSON.parse(text).error?.code, setCookie: r.headers.get('set-cookie') };
  };
  const signInAs = (sub: string) => {
    idp.login.claims = { ...idp.login.claims, sub };
  };

  it('a session outlives several ID tokens on both replicas, renewed with rotated refresh tokens', async () => {
    // offline_access is asked for because it is configured, and with it prompt=consent (OpenID Connect Core §11).
    const { cookie, setCookie } = await signIn(a);
    expect(idp.lastAuthorize?.get('scope')).toBe('openid profile email offline_access');
    expect(idp.lastAuthorize?.get('prompt')).toBe('consent');
    // The cookie lasts as long as the session may (12 h), not as the ID token.
    expect(setCookie).toMatch(/Max-Age=43200$/);
    const before = idp.fetches.refresh;
    const until = Date.now() + (3 * TTL + 1) * 1000;
    for (let i = 0; Date.now() < until; i++) {
      expect(await me(i % 2 ? a : b, cookie)).toBe('dora');
      await sleep(250);
    }
    expect(idp.fetches.refresh - before).toBeGreaterThanOrEqual(3);
    const row = await sessionRow(cookie);
    // The refresh token in the store is the latest one the identity provider issued (rotation), sealed.
    expect(row.refresh_sealed).toBeInstanceOf(Buffer);
    expect(idp.refreshTokens.live.size).toBeGreaterThan(0);
    expect(row.expires_at.getTime()).toBeGreaterThan(Date.now());
  });

  it('a renewed ID token re-derives who the session is: other groups apply, and one no entry binds is signed out', async () => {
    const { cookie } = await signIn(b);
    expect((await sessionRow(cookie)).groups).toEqual(['dba', 'oncall']);
    idp.refresh.claims = { groups: ['dba'] };
    await waitFor(
      async () => (await me(b, cookie)) === 'dora' && (await sessionRow(cookie)).groups.length === 1,
      15_000,
      'groups renewed',
    );
    expect(await me(a, cookie)).toBe('dora');
    // Its username claim no longer names anyone an entry binds.
    idp.refresh.claims = { email: 'dora@elsewhere.example' };
    await waitFor(async () => typeof (await me(a, cookie)) !== 'string', 15_000, 'signed out');
    const ended = await me(b, cookie);
    expect(ended).toMatchObject({ status: 401, code: 'session_ended' });
    expect((ended as { message: string }).message).toContain('no longer bound to a reader or approver');
    const q = await fetch(`${a.url}/api/v1/approvals`, { headers: { cookie } });
    expect([q.status, ((await q.json()) as any).error.code]).toEqual([401, 'session_ended']);
  });

  it('a renewed ID token with another sub or another nonce ends the session; the sign-in’s own nonce is accepted', async () => {
    idp.refresh.nonce = 'same';
    const same = await signIn(a);
    const firstRefresh = idp.fetches.refresh;
    await waitFor(async () => (await me(a, same.cookie)) === 'dora' && idp.fetches.refresh > firstRefresh + 1);
    for (const [claims, nonce, why] of [
      [{ sub: 'u-mallory' }, 'omit', 'another subject'],
      [{}, 'someone-elses', 'nonce other than the sign-in'],
    ] as const) {
      idp.refresh.claims = {};
      idp.refresh.nonce = 'omit';
      const { cookie } = await signIn(a);
      idp.refresh.claims = claims;
      idp.refresh.nonce = nonce;
      await waitFor(async () => typeof (await me(b, cookie)) !== 'string', 15_000, why);
      expect(((await me(a, cookie)) as { message: string }).message).toContain(why);
    }
  });

  it('a revoked refresh token ends the session at its next renewal, on every replica, saying why', async () => {
    signInAs('u-dora-revoked');
    const { cookie } = await signIn(a);
    expect(await me(b, cookie)).toBe('dora');
    idp.revoke('u-dora-revoked');
    await waitFor(async () => typeof (await me(b, cookie)) !== 'string', 15_000, 'ended');
    for (const c of [a, b]) {
      const r = await me(c, cookie);
      expect(r).toMatchObject({ status: 401, code: 'session_ended' });
      expect((r as { message: string }).message).toMatch(/refused to renew the sign-in \(invalid_grant\)/);
    }
    // Its refresh token is gone from the store at once.
    expect((await sessionRow(cookie)).refresh_sealed).toBeNull();
    // Every 401 of the ended session tells the browser to drop its cookie, on the API as on /auth/me.
    for (const url of [`${a.url}/auth/me`, `${b.url}/api/v1/approvals`])
      expect(await raw(url, cookie)).toEqual({ status: 401, code: 'session_ended', setCookie: CLEARED });
    // Recorded once in the collector's own chain, however many replicas and requests saw it end.
    expect(await endOf('u-dora-revoked')).toEqual({
      reader: 'dora',
      oidc: { issuer: idp.issuer, subject: 'u-dora-revoked' },
      reason: 'refresh_refused',
      detail: 'the identity provider refused to renew the sign-in (invalid_grant)',
    });
  });

  it('signing out ends the session on every replica, clears the cookie and is recorded once', async () => {
    signInAs('u-dora-out');
    const { cookie } = await signIn(b);
    expect(await me(a, cookie)).toBe('dora');
    for (const c of [a, b]) {
      const r = await raw(`${c.url}/auth/logout`, cookie, { method: 'POST' });
      expect([r.status, r.setCookie]).toEqual([200, CLEARED]);
    }
    // Its row is gone: the cookie names nothing, and /auth/me (which the page asks when it opens) drops it too.
    expect(await raw(`${a.url}/auth/me`, cookie)).toEqual({ status: 401, code: 'unauthorized', setCookie: CLEARED });
    expect(await raw(`${a.url}/auth/me`, '')).toEqual({ status: 401, code: 'unauthorized', setCookie: null });
    expect(await endOf('u-dora-out')).toEqual({
      reader: 'dora',
      oidc: { issuer: idp.issuer, subject: 'u-dora-out' },
      reason: 'signed_out',
      detail: 'signed out',
    });
  });

  it('a key rotation signs nobody out: tokens sealed under the old key renew and move to the new one; with the old key gone they end cleanly', async () => {
    // Not rotated by the identity provider: only sealing it again moves a session's token to the new key.
    idp.refresh.rotate = false;
    const oldKey = readFileSync(keyFile);
    const newKey = randomBytes(32);
    const newKeyFile = join(dir, 'session-next.key');
    writeFileSync(newKeyFile, `${newKey.toString('base64')}\n`, { mode: 0o600 });
    signInAs('u-dora-kept');
    const kept = await signIn(a);
    signInAs('u-dora-stale');
    const stale = await signIn(a);
    const id = (cookie: string) => cookie.split('=')[1];
    const sealed = async (cookie: string) => (await sessionRow(cookie)).refresh_sealed as Buffer;
    expect(new RefreshTokenSeal(oldKey).open(await sealed(kept.cookie), id(kept.cookie))).toBeDefined();

    const rotated = await startExtra({
      sessionKeyFile: newKeyFile,
      sessionPreviousKeyFiles: [keyFile],
      offlineAccess: true,
    });
    const before = idp.fetches.refresh;
    await waitFor(
      async () => (await me(rotated, kept.cookie)) === 'dora' && idp.fetches.refresh > before,
      15_000,
      'renewed after the rotation',
    );
    const moved = await sealed(kept.cookie);
    expect(new RefreshTokenSeal(newKey).open(moved, id(kept.cookie))).toBeDefined();
    expect(new RefreshTokenSeal(oldKey).open(moved, id(kept.cookie))).toBeUndefined();
    expect(logs.join('')).toMatch(/"resealed":true[^\n]*web session renewed/);

    // The old key removed: the session that renewed goes on; the one that did not since ends, saying why.
    const only = await startExtra({ sessionKeyFile: newKeyFile, offlineAccess: true });
    const after = idp.fetches.refresh;
    await waitFor(
      async () => (await me(only, kept.cookie)) === 'dora' && idp.fetches.refresh > after,
      15_000,
      'renewed under the new key alone',
    );
    let ended: Awaited<ReturnType<typeof raw>> | undefined;
    await waitFor(
      async () => {
        const r = await raw(`${only.url}/api/v1/approvals`, stale.cookie);
        expect(r.status).not.toBe(500);
        if (r.status === 200) return false;
        ended = r;
        return true;
      },
      15_000,
      'the stale session ended',
    );
    expect(ended).toEqual({ status: 401, code: 'session_ended', setCookie: CLEARED });
    expect(((await me(only, stale.cookie)) as { message: string }).message).toMatch(
      /its refresh token opens under none of the web session keys/,
    );
    expect(await endOf('u-dora-stale')).toMatchObject({ reason: 'key_unknown', reader: 'dora' });
    expect(await me(only, kept.cookie)).toBe('dora');
    expect(await ends('u-dora-kept')).toEqual([]);
  });

  it('while the identity provider does not answer, the session lasts until its ID token expires, then ends saying why', async () => {
    const { cookie } = await signIn(b);
    // The ID token's exp, as the store keeps it (the store's clock is this machine's).
    const exp = (await sessionRow(cookie)).expires_at.getTime() / 1000;
    idp.behaviour.token = 'error';
    let ended: { status: number; code: string; message: string } | undefined;
    await waitFor(
      async () => {
        const r = await me(a, cookie);
        if (typeof r === 'string') return false;
        ended = r;
        return true;
      },
      15_000,
      'ended',
    );
    // Not before the ID token's exp (half a second of slack for rounding between the store and this process).
    expect(Date.now() / 1000).toBeGreaterThanOrEqual(exp - 0.5);
    expect(ended).toMatchObject({ status: 401, code: 'session_ended' });
    expect(ended?.message).toMatch(/ID token expired and the identity provider could not renew it/);
    idp.behaviour.token = 'ok';
    expect(await me(b, cookie)).toMatchObject({ status: 401, code: 'session_ended' });
  });

  it('two replicas asked at once for a session whose ID token expired spend its refresh token once', async () => {
    const { cookie } = await signIn(a);
    await sleep((TTL + 0.5) * 1000);
    const before = idp.fetches.refresh;
    const answers = await Promise.all([a, b, a, b, a, b, a, b].map((c) => me(c, cookie)));
    expect(answers).toEqual(Array(8).fill('dora'));
    // One renewal: with rotation, a second one would have presented a spent token and ended the session.
    expect(idp.fetches.refresh - before).toBe(1);
    expect(await me(b, cookie)).toBe('dora');
  });

  it('a session ends at its maximum age, and once idle, renewals or not', async () => {
    const short = await startExtra({ sessionKeyFile: keyFile, offlineAccess: true, sessionMaxAgeS: 2 * TTL + 1 });
    signInAs('u-dora-aged');
    const t0 = Date.now();
    const { cookie, setCookie } = await signIn(short);
    expect(setCookie).toMatch(`Max-Age=${2 * TTL + 1}`);
    const before = idp.fetches.refresh;
    await waitFor(async () => typeof (await me(short, cookie)) !== 'string', 20_000, 'max age');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2 * TTL * 1000);
    expect(idp.fetches.refresh - before).toBeGreaterThanOrEqual(1);
    expect(((await me(short, cookie)) as { message: string }).message).toContain('maximum age');
    expect(await raw(`${short.url}/auth/me`, cookie)).toMatchObject({ status: 401, setCookie: CLEARED });
    expect(await endOf('u-dora-aged')).toMatchObject({ reason: 'max_age', detail: expect.stringContaining('7s') });

    const idle = await startExtra({ sessionKeyFile: keyFile, offlineAccess: true, sessionIdleS: TTL });
    idp.login.ttl = 60;
    signInAs('u-dora-idle');
    const used = await signIn(idle);
    expect(await me(idle, used.cookie)).toBe('dora');
    await sleep((TTL + 1) * 1000);
    expect(await me(idle, used.cookie)).toMatchObject({ status: 401, code: 'session_ended' });
    expect(await endOf('u-dora-idle')).toMatchObject({ reason: 'idle', detail: 'the sign-in was unused for 3s' });
  });

  it('without a key no refresh token is kept (nor offline_access asked for): the session ends with its ID token', async () => {
    const plain = await startExtra({});
    idp.refresh.issue = 'always';
    const { cookie, setCookie } = await signIn(plain);
    expect(idp.lastAuthorize?.get('scope')).toBe('openid profile email');
    expect(idp.lastAuthorize?.has('prompt')).toBe(false);
    expect(setCookie).toMatch(/Max-Age=[0-3]$/);
    expect((await sessionRow(cookie)).refresh_sealed).toBeNull();
    const before = idp.fetches.refresh;
    await waitFor(async () => typeof (await me(plain, cookie)) !== 'string', 15_000, 'expired');
    expect(idp.fetches.refresh).toBe(before);
  });

  // Under CI nothing may be skipped silently: a missing browser fails this test instead.
  it.skipIf(!existsSync(CHROMIUM) && !process.env.CI)(
    'in a browser, the open queue stays signed in past the ID token, and says why once the sign-in is revoked',
    async () => {
      const port = await freePort();
      const c = await fx.start({
        ...options({ sessionKeyFile: keyFile, offlineAccess: true }),
        http: { host: '127.0.0.1', port },
        publicUrl: `http://127.0.0.1:${port}`,
      });
      extra.push(c);
      await untilApproverRoutesServe(c, ALICE);
      const browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic'],
      });
      try {
        // The identity provider's certificate comes from the test's own CA.
        const context = await browser.newContext({ ignoreHTTPSErrors: true });
        const page = await context.newPage();
        const sessionCookie = async () =>
          (await context.cookies()).filter((k) => k.name === '__Host-pgwarden-session').map((k) => k.name);
        await page.goto(c.url);
        await page.waitForSelector('#sso-in', { state: 'visible' });
        await page.click('#sso-in');
        await page.waitForSelector('#sso-user', { state: 'visible' });
        const before = idp.fetches.refresh;
        // The page asks for the queue every 5 s: across two ID tokens' lifetimes it renews, and stays signed in.
        await waitFor(async () => idp.fetches.refresh - before >= 2, 30_000, 'two renewals');
        expect(await page.textContent('#sso-user')).toBe('signed in as dora');
        expect(await page.textContent('#approval-msg')).toBe('');
        await page.reload();
        await page.waitForSelector('#sso-user', { state: 'visible' });
        expect(await page.content()).not.toMatch(/rt-[0-9a-f]{48}/);
        expect(await sessionCookie()).toEqual(['__Host-pgwarden-session']);

        idp.revoke('u-dora');
        await page.waitForSelector('#sso-in', { state: 'visible', timeout: 30_000 });
        expect(await page.isHidden('#sso-user')).toBe(true);
        expect(await page.textContent('#approval-msg')).toMatch(
          /^signed out: the identity provider refused to renew the sign-in \(invalid_grant\); sign in again$/,
        );
        // The 401 that said so also dropped the cookie: the browser holds nothing that names the ended session.
        expect(await sessionCookie()).toEqual([]);
      } finally {
        await browser.close();
      }
    },
    90_000,
  );

  it('no refresh token reaches the store in clear, the logs or any answer', async () => {
    const { cookie } = await signIn(b);
    await waitFor(async () => (await sessionRow(cookie)).renew_after < (await sessionRow(cookie)).expires_at);
    await sleep(TTL * 1000);
    expect(await me(a, cookie)).toBe('dora');
    const issued = idp.refreshTokens.issued;
    expect(issued.length).toBeGreaterThan(3);
    const { rows } = await db.query(
      `SELECT string_agg(row_to_json(t)::text, E'\n') AS dump FROM collector_web_sessions t`,
    );
    const everywhere = [rows[0].dump as string, logs.join(''), bodies.join('\n')];
    expect(logs.join('')).toMatch(/web session renewed/);
    for (const t of issued)
      for (const text of everywhere) {
        expect(text).not.toContain(t);
        expect(text).not.toContain(Buffer.from(t).toString('hex'));
        expect(text).not.toContain(Buffer.from(t).toString('base64'));
      }
  });
});
