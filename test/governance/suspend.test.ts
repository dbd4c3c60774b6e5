import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGovernanceDb, type GovernanceDb } from './governance-db.js';
import { errorOf, examplePolicy, type Governed, startGoverned, until, writePolicy } from './governed-sidecar.js';

// spec.suspend, the kill switch, through the real sidecar and PostgreSQL: a reload that suspends the policy ends the
// sessions at once (a statement running upstream is cancelled, an open transaction rolled back), refuses new ones
// before looking at their credentials, and lifting it lets agents back in.
let db: GovernanceDb;
let g: Governed;

function policy(suspend: boolean): Record<string, any> {
  const p = examplePolicy('analyst-readonly.yaml');
  p.spec.role = db.roles.writer;
  p.spec.suspend = suspend;
  p.spec.rules.push({ name: 'write-orders', action: 'allow', statements: ['insert'], tables: ['public.orders'] });
  p.spec.guardrails.blockedFunctions = [];
  delete p.spec.guardrails.statementTimeout;
  return p;
}

async function reload(suspend: boolean): Promise<void> {
  const n = g.events.length;
  writePolicy(g.policyFile, policy(suspend));
  await g.waitEvent((e) => e.type === 'policy.loaded', n);
}

beforeAll(async () => {
  db = await createGovernanceDb('suspend');
  g = await startGoverned(db.name, policy(false));
}, 60_000);
afterAll(async () => {
  await g?.close();
  await db?.drop();
});

describe('spec.suspend', () => {
  it('ends every session at once: a running statement is cancelled upstream and an open transaction rolled back', async () => {
    const writer = await g.client();
    const sleeper = await g.client();
    await writer.query('BEGIN');
    await writer.query('INSERT INTO orders (id, customer_id) VALUES (1001, 1)');
    const running = errorOf(sleeper, 'SELECT pg_sleep(30) /* suspend-test */');
    const active = () =>
      db
        .su(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE '%suspend-test%' AND pid <> pg_backend_pid()",
        )
        .then((r) => r.rows[0].n as number);
    await until('the sleep to start', active, (n) => n === 1);

    const t0 = performance.now();
    await reload(true);
    const ended = await running;
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(ended).toMatchObject({
      code: '57P01',
      message: `terminating connection because pgwarden policy "analyst" was suspended`,
    });
    expect(await errorOf(writer, 'SELECT 1')).toBeDefined();
    // Upstream: the sleep was cancelled (not left running behind a closed socket) and the insert rolled back.
    await until('the sleep to be cancelled', active, (n) => n === 0);
    const rows = () => db.su('SELECT count(*)::int AS n FROM orders WHERE id = 1001').then((r) => r.rows[0].n);
    await until('the insert to be rolled back', rows, (n) => n === 0);

    const ends = g.audit.events.filter((e) => e.type === 'session.end' && e.end.error === 'policy suspended');
    expect(ends).toHaveLength(2);
    // The statement that was running is recorded as cut short by the session's end.
    const sleep = g.audit.events.find((e) => e.type === 'statement' && e.statement.text.includes('suspend-test'));
    expect(sleep?.result.error.code).toBe('08006');
  });

  it('refuses new sessions with FATAL 28000 before authenticating them, and lets agents back in once lifted', async () => {
    const refused = await g.client().then(
      () => undefined,
      (err: Error & { code?: string }) => err,
    );
    expect(refused).toMatchObject({
      code: '28000',
      message: 'pgwarden: policy "analyst" is suspended: new sessions are refused',
    });
    expect(g.events.filter((e) => e.type === 'login.refused').at(-1)).toMatchObject({
      reason: 'policy_suspended',
      code: '28000',
      policy: { name: 'analyst' },
    });
    await reload(false);
    const c = await g.client();
    expect((await c.query('SELECT count(*)::int AS n FROM orders')).rows).toEqual([{ n: 50 }]);
  });
});
