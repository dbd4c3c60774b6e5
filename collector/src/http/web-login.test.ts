import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream } from '@nats-io/jetstream';
import { approvalSubject } from '@pgwarden/policy';
import { createHttpsFetch } from '@pgwarden/policy/oidc';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { approversWithOidc, startTestIdp, type TestIdp } from '../../../test/governance/oidc-provider.js';
import { freePort } from '../../../test/harness/ports.js';
import type { Collector } from '../collector.js';
import { approvalRequest } from '../testing/approval-messages.js';
import {
  type ApprovalsFixture,
  startApprovalsFixture,
  untilApproverRoutesServe,
} from '../testing/approvals-fixture.js';
import { waitFor } from '../testing/wait-for.js';

const ALICE = 'tok-alice-web-login-0123456789';
const PUBLIC_URL = 'https://pgwarden.example';

/**
 * The web UI's sign-in through a real HTTPS identity provider (authorization code + PKCE), as a browser would walk
 * it: /auth/login, the provider's /authorize, /auth/callback, then the API with the session cookie alone.
 */
describe('web UI sign-in with OIDC (authorization code + PKCE)', () => {
  let idp: TestIdp;
  let fx: ApprovalsFixture;
  let c: Collector;
  let toIdp: ReturnType<typeof createHttpsFetch>;
  let dir: string;

  beforeAll(async () => {
    idp = await startTestIdp();
    toIdp = createHttpsFetch({ ca: idp.ca });
    const approvers = approversWithOidc(idp.issuer, ALICE);
    fx = await startApprovalsFixture(approvers, ALICE);
    dir = mkdtempSync(join(tmpdir(), 'pgwarden-web-login-'));
    writeFileSync(join(dir, 'readers.yaml'), `- {name: rhea, oidc: [{issuer: "${idp.issuer}", subject: u-rhea}]}\n`);
    c = await fx.start({
      read: { readersFile: join(dir, 'readers.yaml') },
      publicUrl: PUBLIC_URL,
      oidc: { issuer: idp.issuer, audience: [], caFile: idp.caFile, webLogin: { clientId: 'pgwarden-web' } },
    });
    await untilApproverRoutesServe(c, ALICE);
  });
  afterAll(async () => {
    await c?.stop();
    await fx?.stop();
    await idp?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const cookieOf = (r: Response) => (r.headers.get('set-cookie') ?? '').split(';')[0];
  /** /auth/login, then the provider's /authorize: the callback query and the login cookie, not yet used. */
  async function startLogin(): Promise<{ callback: string; loginCookie: string; authorize: URL }> {
    const login = await fetch(`${c.url}/auth/login`, { redirect: 'manual' });
    expect(login.status).toBe(302);
    const authorize = new URL(login.headers.get('location') ?? '');
    const toCallback = await toIdp(authorize.toString());
    expect(toCallback.status).toBe(302);
    const back = new URL(toCallback.headers.get('location') ?? '');
    expect(`${back.origin}${back.pathname}`).toBe(`${PUBLIC_URL}/auth/callback`);
    return {
      callback: `${c.url}/auth/callback${back.search}`,
      loginCookie: cookieOf(login),
      authorize,
    };
  }
  async function signIn(sub: string): Promise<{ status: number; cookie: string; res: Response; text: string }> {
    idp.login = { claims: { sub } };
    const { callback, loginCookie } = await startLogin();
    const res = await fetch(callback, { redirect: 'manual', headers: { cookie: loginCookie } });
    return { status: res.status, cookie: cookieOf(res), res, text: await res.text() };
  }
  const api = (path: string, cookie: string, init: RequestInit = {}) =>
    fetch(`${c.url}${path}`, { ...init, headers: { cookie, ...(init.headers as Record<string, string>) } });

  it('signs a bound approver in: PKCE and nonce sent, a Strict HttpOnly cookie back, no token in any page', async () => {
    idp.login = { claims: { sub: 'u-dora' } };
    const { authorize, loginCookie, callback } = await startLogin();
    for (const k of ['state', 'nonce', 'code_challenge'])
      expect(authorize.searchParams.get(k), k).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(Object.fromEntries(authorize.searchParams)).toMatchObject({
      response_type: 'code',
      client_id: 'pgwarden-web',
      redirect_uri: `${PUBLIC_URL}/auth/callback`,
      code_challenge_method: 'S256',
    });
    expect(loginCookie).toMatch(/^__Host-pgwarden-login=/);

    const res = await fetch(callback, { redirect: 'manual', headers: { cookie: loginCookie } });
    expect([res.status, res.headers.get('location')]).toEqual([302, `${PUBLIC_URL}/`]);
    const setCookie = res.headers.get('set-cookie') ?? '';
    expect(setCookie).toMatch(
      /^__Host-pgwarden-session=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; Secure; SameSite=Strict; Max-Age=\d+$/,
    );
    expect(await res.text()).not.toMatch(/eyJ/);
    const cookie = cookieOf(res);

    expect(await (await api('/auth/me', cookie)).json()).toEqual({ name: 'dora' });
    expect((await api('/api/v1/sessions', cookie)).status).toBe(200);
    const page = await (await api('/', cookie)).text();
    expect(page).not.toMatch(/eyJ|opaque-access-token/);

    // The session decides as dora, four eyes included.
    const r = approvalRequest();
    const own = approvalRequest({
      identity: { namespace: 'agents', serviceAccount: 'x', user: 'u-dora', issuer: idp.issuer, groups: [] },
    });
    for (const m of [r, own]) await jetstream(fx.nc).publish(approvalSubject('request', m.id), JSON.stringify(m));
    for (const m of [r, own])
      await waitFor(async () => (await api(`/api/v1/approvals/${m.id}`, cookie)).status === 200);
    const decide = (id: string, headers: Record<string, string> = {}) =>
      api(`/api/v1/approvals/${id}`, cookie, { method: 'POST', body: '{"decision":"approve"}', headers });
    // A page on another site cannot ride on the cookie (SameSite=Strict keeps it home; the Origin check too).
    expect((await decide(r.id, { origin: 'https://evil.example' })).status).toBe(403);
    const self = await decide(own.id);
    expect([self.status, ((await self.json()) as any).error.code]).toEqual([403, 'self_approval']);
    const ok = await decide(r.id);
    expect([ok.status, ((await ok.json()) as any).decision.by.name]).toEqual([200, 'dora']);

    // Signed out: the cookie is worth nothing.
    const out = await api('/auth/logout', cookie, { method: 'POST' });
    expect([out.status, out.headers.get('set-cookie')]).toEqual([200, expect.stringMatching(/Max-Age=0/)]);
    expect((await api('/auth/me', cookie)).status).toBe(401);
    expect((await api('/api/v1/approvals', cookie)).status).toBe(401);
  });

  it('a cookie naming no session is dropped by the 401 of any API route, when it was the only credential', async () => {
    const CLEARED = '__Host-pgwarden-session=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0';
    const rhea = await signIn('u-rhea');
    expect((await api('/api/v1/sessions', rhea.cookie)).status).toBe(200);
    // Signed out in another tab: this tab's cookie names nothing now.
    expect((await api('/auth/logout', rhea.cookie, { method: 'POST' })).status).toBe(200);
    const made = '__Host-pgwarden-session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';
    for (const cookie of [rhea.cookie, made])
      for (const [path, init] of [
        ['/api/v1/sessions', {}],
        ['/api/v1/approvals', {}],
        ['/api/v1/approvals/nope', { method: 'POST', body: '{"decision":"approve"}' }],
      ] as const) {
        const r = await api(path, cookie, init);
        expect([r.status, ((await r.json()) as any).error.code, r.headers.get('set-cookie')], path).toEqual([
          401,
          'unauthorized',
          CLEARED,
        ]);
      }
    // A bearer credential was refused, not the cookie: it stays; and no cookie, nothing to drop.
    const bearer = await api('/api/v1/sessions', rhea.cookie, { headers: { authorization: 'Bearer wrong' } });
    expect([bearer.status, bearer.headers.get('set-cookie')]).toEqual([401, null]);
    const none = await fetch(`${c.url}/api/v1/approvals`);
    expect([none.status, none.headers.get('set-cookie')]).toEqual([401, null]);
  });

  it('a reader signs in and reads (the readers file binds them), but the approval queue is not theirs', async () => {
    const rhea = await signIn('u-rhea');
    expect(rhea.status).toBe(302);
    expect(await (await api('/auth/me', rhea.cookie)).json()).toEqual({ name: 'rhea' });
    expect((await api('/api/v1/sessions', rhea.cookie)).status).toBe(200);
    const queue = await api('/api/v1/approvals', rhea.cookie);
    expect([queue.status, ((await queue.json()) as any).error.code]).toEqual([403, 'not_an_approver']);
    // Without the cookie the same request is nobody's.
    expect((await fetch(`${c.url}/api/v1/sessions`)).status).toBe(401);
  });

  it('refuses a callback from another browser, a replayed one, a wrong nonce and an unbound user', async () => {
    idp.login = { claims: { sub: 'u-dora' } };
    const a = await startLogin();
    const b = await startLogin();
    // b's code with a's cookie: not this browser's sign-in (login CSRF).
    const crossed = await fetch(b.callback, { redirect: 'manual', headers: { cookie: a.loginCookie } });
    expect(crossed.status).toBe(400);
    const noCookie = await fetch(a.callback, { redirect: 'manual' });
    expect(noCookie.status).toBe(400);
    // a's own cookie now: its state was spent by the attempt above, so the code cannot be used either.
    expect((await fetch(a.callback, { redirect: 'manual', headers: { cookie: a.loginCookie } })).status).toBe(400);

    const good = await startLogin();
    expect((await fetch(good.callback, { redirect: 'manual', headers: { cookie: good.loginCookie } })).status).toBe(
      302,
    );
    expect((await fetch(good.callback, { redirect: 'manual', headers: { cookie: good.loginCookie } })).status).toBe(
      400,
    );

    idp.login = { claims: { sub: 'u-dora', nonce: 'someone-elses' } };
    const nonce = await startLogin();
    const wrongNonce = await fetch(nonce.callback, { redirect: 'manual', headers: { cookie: nonce.loginCookie } });
    expect([wrongNonce.status, ((await wrongNonce.json()) as any).error.code]).toEqual([401, 'invalid_token']);
    expect(wrongNonce.headers.get('set-cookie')).toBeNull();

    const nobody = await signIn('u-nobody');
    expect([nobody.status, JSON.parse(nobody.text).error.code]).toEqual([403, 'not_a_reader']);
    expect(nobody.res.headers.get('set-cookie')).toBeNull();
  });
});

const CHROMIUM = '/usr/bin/chromium';

// Under CI nothing may be skipped silently: a missing browser fails this test instead.
describe.skipIf(!existsSync(CHROMIUM) && !process.env.CI)('web UI sign-in in a real browser', () => {
  let idp: TestIdp;
  let fx: ApprovalsFixture;
  let c: Collector;
  let browser: Browser;

  beforeAll(async () => {
    idp = await startTestIdp();
    const approvers = approversWithOidc(idp.issuer, ALICE);
    fx = await startApprovalsFixture(approvers, ALICE);
    const port = await freePort();
    c = await fx.start({
      http: { host: '127.0.0.1', port },
      publicUrl: `http://127.0.0.1:${port}`,
      oidc: { issuer: idp.issuer, audience: [], caFile: idp.caFile, webLogin: { clientId: 'pgwarden-web' } },
    });
    await untilApproverRoutesServe(c, ALICE);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic'],
    });
  });
  afterAll(async () => {
    await browser?.close();
    await c?.stop();
    await fx?.stop();
    await idp?.close();
  });

  it('Sign in with SSO leads through the identity provider and back to the queue; the page never sees a token', async () => {
    const r = approvalRequest();
    await jetstream(fx.nc).publish(approvalSubject('request', r.id), JSON.stringify(r));
    idp.login = { claims: { sub: 'u-dora' } };
    // The identity provider's certificate comes from the test's own CA.
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    try {
      const page = await context.newPage();
      // Arriving by a notification's link to one statement: signing in comes back to it, not to the home page.
      const linked = `${c.url}/?approval=${encodeURIComponent(r.id)}`;
      await page.goto(linked);
      await page.waitForSelector('#sso-in', { state: 'visible' });
      await page.click('#sso-in');
      await page.waitForSelector('#sso-user', { state: 'visible' });
      expect(await page.textContent('#sso-user')).toBe('signed in as dora');
      expect(page.url()).toBe(linked);
      await page.waitForSelector(`#approval-list tr[data-approval="${r.id}"].linked`);
      expect(await page.evaluate(() => document.cookie)).not.toContain('pgwarden-session');
      expect(await page.content()).not.toMatch(/eyJ|opaque-access-token/);
      expect(await page.evaluate(() => JSON.stringify({ ...sessionStorage, ...localStorage }))).not.toMatch(/eyJ/);

      await page.click('#sso-out');
      await page.waitForSelector('#sso-in', { state: 'visible' });
      expect(await page.isHidden('#sso-user')).toBe(true);
    } finally {
      await context.close();
    }
  });
});
