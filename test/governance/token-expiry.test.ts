import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGovernanceDb, type GovernanceDb } from './governance-db.js';
import { type Governed, startGoverned } from './governed-sidecar.js';
import { startTestIdp, type TestIdp } from './oidc-provider.js';

// authentication.oidc.endSessionAtExpiry through the real sidecar, a real HTTPS IdP and real PostgreSQL: a session
// ends when the token it logged in with expires (plus clockSkew, here 0s), not only at the next login.
let db: GovernanceDb;
let idp: TestIdp;
let ending: Governed;
let lasting: Governed;

beforeAll(async () => {
  [db, idp] = await Promise.all([createGovernanceDb('expiry'), startTestIdp()]);
  const policy = (endSessionAtExpiry: boolean) => ({
    apiVersion: 'pgwarden.dev/v1alpha1',
    kind: 'DatabaseAccessPolicy',
    metadata: { name: endSessionAtExpiry ? 'ending' : 'lasting', namespace: 'agents' },
    spec: {
      database: { host: 'unused', name: 'app' },
      authentication: {
        mode: 'oidc',
        oidc: { issuer: idp.issuer, audience: 'pgwarden', clockSkew: '0s', endSessionAtExpiry },
      },
      role: db.roles.writer,
      defaultAction: 'allow',
      guardrails: { blockedFunctions: [] },
    },
  });
  [ending, lasting] = await Promise.all([
    startGoverned(db.name, policy(true), { governance: { oidc: { ca: idp.ca } } }),
    startGoverned(db.name, policy(false), { governance: { oidc: { ca: idp.ca } } }),
  ]);
});
afterAll(async () => {
  await ending?.close();
  await lasting?.close();
  await idp?.close();
  await db?.drop();
});

/** The FATAL the client was sent when its session ended, and when. */
function fatalOf(c: pg.Client): Promise<{ err: Error & { code?: string; hint?: string }; at: number }> {
  return new Promise((resolve) => c.once('error', (err) => resolve({ err, at: Date.now() })));
}

/** A token valid for at least `seconds` more (exp is in whole seconds: rounded up, never down). */
const expiringIn = async (seconds: number) =>
  idp.sign({ sub: 'alice', groups: ['data-team'], exp: Math.ceil(Date.now() / 1000 + seconds) });
const expOf = (token: string) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).exp as number;

describe('authentication.oidc.endSessionAtExpiry', () => {
  it('ends an idle session when its token expires, with FATAL 28000 and the reason in the audit trail', async () => {
    // Seconds of headroom: on a slow CI machine a login and one query took over two seconds, and the token expired
    // before the session had started.
    const token = await expiringIn(4);
    const exp = expOf(token);
    const c = await ending.client({ password: token });
    const ended = fatalOf(c);
    expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    const { err, at } = await ended;
    expect(err.code).toBe('28000');
    expect(err.message).toMatch(/^pgwarden: terminating connection because its OIDC token expired/);
    expect(err.hint).toBe('Reconnect with a fresh token.');
    expect(at).toBeGreaterThanOrEqual(exp * 1000);
    expect(at - exp * 1000).toBeLessThan(3000); // at expiry, not at some later periodic check
    await expect(c.query('SELECT 1')).rejects.toThrow();
    const end = ending.audit.events.findLast((e) => e.type === 'session.end');
    expect(end?.result?.error?.message ?? JSON.stringify(end)).toMatch(/token expired/);
  }, 30_000);

  it('lets the statement in flight finish (in its transaction), then ends the session; the transaction does not commit', async () => {
    const token = await expiringIn(3);
    const c = await ending.client({ password: token });
    const ended = fatalOf(c);
    await c.query('BEGIN');
    await c.query("INSERT INTO orders (customer_id, status) VALUES (1, 'expiry-test')");
    // Sleeps until half a second past the expiry, however long the login and the INSERT took.
    const sleep = (expOf(token) * 1000 - Date.now() + 500) / 1000;
    expect(sleep).toBeGreaterThan(0.5);
    const slow = await c.query(`SELECT pg_sleep(${sleep.toFixed(3)}), 7 AS n`);
    expect(slow.rows[0].n).toBe(7); // completed, though the token expired while it ran
    expect(Date.now()).toBeGreaterThan(expOf(token) * 1000);
    const { err } = await ended;
    expect(err.code).toBe('28000');
    // The open transaction died with the session.
    const check = await lasting.client({ password: await expiringIn(60) });
    expect((await check.query("SELECT count(*)::int AS n FROM orders WHERE status = 'expiry-test'")).rows[0].n).toBe(0);
    await check.end();
  }, 30_000);

  it('without it (the default), a session outlives its token, as PostgreSQL sessions outlive a password change', async () => {
    const token = await expiringIn(4);
    const c = await lasting.client({ password: token });
    // Until the token has expired, however long the login took.
    await new Promise((r) => setTimeout(r, Math.max(0, expOf(token) * 1000 - Date.now()) + 300));
    expect(Date.now()).toBeGreaterThan(expOf(token) * 1000);
    expect((await c.query('SELECT 2 AS two')).rows).toEqual([{ two: 2 }]);
    await c.end();
  }, 30_000);
});
