import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHttpsFetch } from '@pgwarden/policy/oidc';
import pg from 'pg';
import pino from 'pino';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startTestIdp, type TestIdp } from '../../../test/governance/oidc-provider.js';
import { freePort } from '../../../test/harness/ports.js';
import { sha256Hex } from '../auth/token-file.js';
import type { Collector, CollectorOptions } from '../collector.js';
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
    oidc: {
      issuer: idp.issuer,
      audience: [],
      caFile: idp.caFile,
      usernameClaim: 'email',
      groupsClaim: 'groups',
      webLogin: { clientId: 'pgwarden-web', ...webLogin },
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
    const { cookie } = await signIn(a);
    expect(await me(b, cookie)).toBe('dora');
    idp.revoke('u-dora');
    await waitFor(async () => typeof (await me(b, cookie)) !== 'string', 15_000, 'ended');
    for (const c of [a, b]) {
      const r = await me(c, cookie);
      expect(r).toMatchObject({ status: 401, code: 'session_ended' });
      expect((r as { message: string }).message).toMatch(/refused to renew the sign-in \(invalid_grant\)/);
    }
    // Its refresh token is gone from the store at once.
    expect((await sessionRow(cookie)).refresh_sealed).toBeNull();
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
    const t0 = Date.now();
    const { cookie, setCookie } = await signIn(short);
    expect(setCookie).toMatch(`Max-Age=${2 * TTL + 1}`);
    const before = idp.fetches.refresh;
    await waitFor(async () => typeof (await me(short, cookie)) !== 'string', 20_000, 'max age');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2 * TTL * 1000);
    expect(idp.fetches.refresh - before).toBeGreaterThanOrEqual(1);
    expect(((await me(short, cookie)) as { message: string }).message).toContain('maximum age');

    const idle = await startExtra({ sessionKeyFile: keyFile, offlineAccess: true, sessionIdleS: TTL });
    idp.login.ttl = 60;
    const used = await signIn(idle);
    expect(await me(idle, used.cookie)).toBe('dora');
    await sleep((TTL + 1) * 1000);
    expect(await me(idle, used.cookie)).toMatchObject({ status: 401, code: 'session_ended' });
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
        const page = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage();
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

        idp.revoke('u-dora');
        await page.waitForSelector('#sso-in', { state: 'visible', timeout: 30_000 });
        expect(await page.isHidden('#sso-user')).toBe(true);
        expect(await page.textContent('#approval-msg')).toMatch(
          /^signed out: the identity provider refused to renew the sign-in \(invalid_grant\); sign in again$/,
        );
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
