import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGovernanceDb, type GovernanceDb } from './governance-db.js';
import { errorOf, examplePolicy, type Governed, startGoverned } from './governed-sidecar.js';
import { startTestIdp, type TestIdp } from './oidc-provider.js';

let db: GovernanceDb;
let idp: TestIdp;
let g: Governed;
const REVIEW_TIMEOUT_MS = 300;

beforeAll(async () => {
  [db, idp] = await Promise.all([createGovernanceDb('oidc'), startTestIdp()]);
  const policy = examplePolicy('writer-review.yaml');
  policy.spec.role = db.roles.writer;
  policy.spec.authentication.oidc.issuer = idp.issuer;
  g = await startGoverned(db.name, policy, {
    governance: { oidc: { ca: idp.ca }, reviewTimeoutMs: REVIEW_TIMEOUT_MS },
  });
});
afterAll(async () => {
  await g?.close();
  await idp?.close();
  await db?.drop();
});

describe('OIDC login through the sidecar (writer policy)', () => {
  it('a valid JWT as the password logs in; the session runs as the policy role', async () => {
    const c = await g.client({ password: await idp.sign({ sub: 'alice', groups: ['data-team'] }) });
    expect((await c.query('SELECT current_user AS u')).rows[0].u).toBe(db.roles.writer);
    expect((await c.query('SELECT count(*)::int AS n FROM orders')).rows[0].n).toBeGreaterThan(0);
    await c.end();
  });

  it('psql logs in with the token in PGPASSWORD', async () => {
    const token = await idp.sign({ sub: 'psql-user' });
    // Asynchronously: the sidecar runs in this process and must keep serving while psql waits.
    const r = await promisify(execFile)(
      'psql',
      ['-h', '127.0.0.1', '-p', String(g.port), '-U', 'agent', '-d', 'app', '-XAtc', 'SELECT current_user'],
      {
        env: { ...process.env, PGPASSWORD: token, PGSSLMODE: 'disable' },
        timeout: 10_000,
      },
    );
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe(db.roles.writer);
  });

  it('refuses an expired token, a wrong audience and alg confusion with 28P01; the token is never recorded', async () => {
    const now = Math.floor(Date.now() / 1000);
    const expired = await idp.sign({ exp: now - 600 });
    const n = g.events.length;
    const cases: [string, RegExp][] = [
      [expired, /OIDC token has expired/],
      [await idp.sign({ aud: 'other' }), /audience/],
      ['not-a-token', /well-formed/],
    ];
    for (const [password, message] of cases) {
      const err = await g.client({ password }).then(
        () => undefined,
        (e: Error & { code?: string }) => e,
      );
      expect(err?.code).toBe('28P01');
      expect(err?.message).toMatch(message);
    }
    const refused = g.events.slice(n).filter((e) => e.type === 'auth.refused');
    expect(refused.map((e) => (e as { reason: string }).reason)).toEqual([
      'token_expired',
      'wrong_audience',
      'malformed_token',
    ]);
    const recorded = JSON.stringify([g.events, g.audit.events]);
    for (const part of expired.split('.')) expect(recorded).not.toContain(part);
  });
});

describe('review: held statements time out into denials until approvers are wired', () => {
  it('a write that needs review is held for approval.timeout, then denied; it never ran', async () => {
    const c = await g.client({ password: await idp.sign({ sub: 'alice', groups: ['data-team'] }) });
    const before = await db.fingerprint();
    const t0 = Date.now();
    const err = await errorOf(c, 'DELETE FROM orders WHERE id = 42');
    const held = Date.now() - t0;
    expect(err?.code).toBe('42501');
    expect(err?.message).toMatch(/held for review by rule "write-orders-needs-review", but no approver decided/);
    expect(held).toBeGreaterThanOrEqual(REVIEW_TIMEOUT_MS - 20);
    expect(await db.fingerprint()).toBe(before);
    // The session continues normally after the held denial.
    expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    await c.end();
    expect(g.events.some((e) => e.type === 'statement.released' && e.outcome === 'timeout')).toBe(true);
  });

  it('the oncall group writes directly (subject match), and the write happens', async () => {
    const c = await g.client({ password: await idp.sign({ sub: 'bob', groups: ['oncall'] }) });
    expect(await errorOf(c, 'DELETE FROM orders WHERE id = 42')).toBeUndefined();
    expect((await db.su('SELECT count(*)::int AS n FROM orders WHERE id = 42')).rows[0].n).toBe(0);
    // requireWhere still applies to oncall.
    expect((await errorOf(c, 'DELETE FROM orders'))?.message).toMatch(/requireWhere/);
    await c.end();
  });
});
