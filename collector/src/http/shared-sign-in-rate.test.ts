import { expect, it } from 'vitest';
import type { SqlClient } from '../store/sql-client.js';
import { onBothStores } from '../testing/test-store.js';
import { SharedSignInRate } from './shared-sign-in-rate.js';

const count = async (db: SqlClient, client: string) =>
  (
    await db.query<{ n: number }>('SELECT count(*)::int AS n FROM collector_sign_in_buckets WHERE client = $1', [
      client,
    ])
  )[0]?.n;

/** The same checks on the production store and the embedded one (the demo's). */
function bucketsOn(db: () => SqlClient) {
  it('two replicas share one bucket per client: racing takes grant the burst once, then say how long to wait', async () => {
    const opts = { burst: 5, perMinute: 0.01 };
    const [a, b] = [new SharedSignInRate(db(), opts), new SharedSignInRate(db(), opts)];
    // 24 sign-ins raced from one client across both; each replica alone would have granted 5.
    const waits = await Promise.all(Array.from({ length: 24 }, (_, i) => (i % 2 ? a : b).take('198.51.100.1')));
    expect(waits.filter((w) => w === 0)).toHaveLength(5);
    // 0.01 a minute: the next token is 100 minutes away, give or take the test's own time.
    for (const w of waits.filter((w) => w > 0)) expect(w).toBeGreaterThan(5000);
    // Another client is untouched.
    expect(await a.take('198.51.100.2')).toBe(0);
    expect(Number(await count(db(), '198.51.100.1'))).toBe(1);
  });

  it('refills with the store’s clock, never past the burst, and forgets clients whose bucket is full', async () => {
    // One token every 10 s: nothing refills between two takes, however slow the machine.
    const opts = { burst: 2, perMinute: 6 };
    const [a, b] = [new SharedSignInRate(db(), opts), new SharedSignInRate(db(), opts)];
    expect([await a.take('203.0.113.7'), await b.take('203.0.113.7')]).toEqual([0, 0]);
    // Replica b's own memory would grant a third; the store's bucket is what refuses it.
    const c = new SharedSignInRate(db(), opts);
    const wait = await c.take('203.0.113.7');
    expect(wait).toBeGreaterThanOrEqual(1);
    expect(wait).toBeLessThanOrEqual(10);
    // An hour ago as far as the store can tell: full again, and no fuller than the burst.
    await db().query("UPDATE collector_sign_in_buckets SET at = now() - interval '1 hour' WHERE client = $1", [
      '203.0.113.7',
    ]);
    const d = new SharedSignInRate(db(), opts);
    expect([await d.take('203.0.113.7'), await d.take('203.0.113.8')]).toEqual([0, 0]);
    expect(await new SharedSignInRate(db(), opts).take('203.0.113.7')).toBe(0);
    expect(await new SharedSignInRate(db(), opts).take('203.0.113.7')).toBeGreaterThan(0);
    await db().query("UPDATE collector_sign_in_buckets SET at = now() - interval '1 hour' WHERE client = $1", [
      '203.0.113.8',
    ]);
    expect(await d.sweep()).toBeGreaterThanOrEqual(1);
    expect(Number(await count(db(), '203.0.113.8'))).toBe(0);
    expect(Number(await count(db(), '203.0.113.7'))).toBe(1);
  });
}

onBothStores('the sign-in rate', bucketsOn);
