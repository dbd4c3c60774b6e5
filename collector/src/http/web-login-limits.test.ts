import { request } from 'node:http';
import { createHttpsFetch } from '@pgwarden/policy/oidc';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { approversWithOidc, startTestIdp, type TestIdp } from '../../../test/governance/oidc-provider.js';
import type { Collector } from '../collector.js';
import { type ApprovalsFixture, startApprovalsFixture } from '../testing/approvals-fixture.js';

const ALICE = 'tok-alice-web-login-limits-0123456789';
const PUBLIC_URL = 'https://pgwarden.example';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** A GET sent from `localAddress` (any 127.0.0.0/8 address reaches a loopback listener): one client per address. */
function getFrom(localAddress: string, url: string, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { localAddress, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const cookieOf = (a: Answer) => String(a.headers['set-cookie'] ?? '').split(';')[0] ?? '';

/**
 * A flood of sign-ins from one client, over real HTTP against a collector on a real store, with the real HTTPS
 * identity provider: the flooder gets 429, and everyone else still signs in end to end.
 */
describe('web UI sign-in under a flood', () => {
  let idp: TestIdp;
  let fx: ApprovalsFixture;
  let c: Collector;
  let c2: Collector;
  let toIdp: ReturnType<typeof createHttpsFetch>;

  beforeAll(async () => {
    idp = await startTestIdp();
    toIdp = createHttpsFetch({ ca: idp.ca });
    const approvers = approversWithOidc(idp.issuer, ALICE, ['dora', 'finn']);
    fx = await startApprovalsFixture(approvers, ALICE);
    const replica = () =>
      fx.start({
        // 127.0.0.4 plays an ingress: its X-Forwarded-For is believed, nobody else's.
        http: { port: 0, trustedProxies: ['127.0.0.4'] },
        publicUrl: PUBLIC_URL,
        oidc: {
          issuer: idp.issuer,
          audience: [],
          caFile: idp.caFile,
          // A bucket that does not refill within the test: what passes and what is refused does not hang on speed.
          webLogin: { clientId: 'pgwarden-web', rate: { burst: 4, perMinute: 0.01 } },
        },
      });
    // Two replicas on one store.
    [c, c2] = [await replica(), await replica()];
  });
  afterAll(async () => {
    await c2?.stop();
    await c?.stop();
    await fx?.stop();
    await idp?.close();
  });

  /** /auth/login from `from`, through the provider's /authorize: the callback URL and the login cookie. */
  async function startLogin(from: string, sub: string, headers: Record<string, string> = {}) {
    idp.login = { claims: { sub } };
    const login = await getFrom(from, `${c.url}/auth/login`, headers);
    expect(login.status, login.body).toBe(302);
    const toCallback = await toIdp(String(login.headers.location));
    const back = new URL(toCallback.headers.get('location') ?? '');
    return { callback: `${c.url}/auth/callback${back.search}`, cookie: cookieOf(login) };
  }
  async function finish(from: string, started: { callback: string; cookie: string }, headers = {}) {
    const res = await getFrom(from, started.callback, { cookie: started.cookie, ...headers });
    expect([res.status, res.body]).toEqual([302, '{}']);
    const me = await getFrom(from, `${c.url}/auth/me`, { cookie: cookieOf(res) });
    return JSON.parse(me.body) as unknown;
  }

  it('one address flooding /auth/login gets 429 with Retry-After; a sign-in begun before it and one begun during it both complete', async () => {
    const before = await startLogin('127.0.0.3', 'u-dora');
    const answers: Answer[] = [];
    // X-Forwarded-For from a peer that is not a trusted proxy changes nothing: the flooder cannot pick its budget.
    for (let i = 0; i < 12; i++)
      answers.push(await getFrom('127.0.0.2', `${c.url}/auth/login`, { 'x-forwarded-for': `198.51.100.${i}` }));
    expect(answers.map((a) => a.status)).toEqual([302, 302, 302, 302, ...Array(8).fill(429)]);
    const refused = answers[4];
    expect(JSON.parse(refused?.body ?? '{}')).toMatchObject({ error: { code: 'too_many_sign_ins' } });
    expect(Number(refused?.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    // The callback counts too: a flood of forged callbacks is refused the same way.
    expect((await getFrom('127.0.0.2', `${c.url}/auth/callback?state=x&code=y`)).status).toBe(429);

    const during = await startLogin('127.0.0.5', 'u-finn');
    expect(await finish('127.0.0.5', during)).toEqual({ name: 'finn' });
    idp.login = { claims: { sub: 'u-dora' } };
    expect(await finish('127.0.0.3', before)).toEqual({ name: 'dora' });
  });

  it('the limit holds across replicas on one store: a client spreading its sign-ins over both gets the burst once', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 10; i++)
      statuses.push((await getFrom('127.0.0.6', `${(i % 2 ? c2 : c).url}/auth/login`)).status);
    expect(statuses).toEqual([302, 302, 302, 302, ...Array(6).fill(429)]);
    // Someone else, on either replica, still signs in.
    for (const r of [c, c2]) expect((await getFrom('127.0.0.7', `${r.url}/auth/login`)).status).toBe(302);
  });

  it('behind a trusted proxy each client named by X-Forwarded-For has its own budget; one it did not write is ignored', async () => {
    const viaProxy = (client: string) => ({ 'x-forwarded-for': `10.9.9.9, ${client}` });
    for (let i = 0; i < 4; i++)
      expect((await getFrom('127.0.0.4', `${c.url}/auth/login`, viaProxy('203.0.113.50'))).status).toBe(302);
    const flood = await getFrom('127.0.0.4', `${c.url}/auth/login`, viaProxy('203.0.113.50'));
    expect([flood.status, JSON.parse(flood.body).error.message]).toEqual([
      429,
      'too many sign-ins from 203.0.113.50: try again later',
    ]);
    // Another person behind the same proxy: the left-most entry (10.9.9.9), which the client wrote, does not count.
    const other = await startLogin('127.0.0.4', 'u-finn', viaProxy('203.0.113.51'));
    expect(await finish('127.0.0.4', other, viaProxy('203.0.113.51'))).toEqual({ name: 'finn' });
  });
});
