import { describe, expect, it } from 'vitest';
import { useTestStore } from '../testing/test-store.js';
import { INGEST_LOCK_KEY } from './ingest-writer.js';
import { connectPostgres } from './sql-client.js';

/** The ingest transaction takes its advisory lock in the round trip of its BEGIN. */
describe('SqlClient transactions with a lock', () => {
  const t = useTestStore();
  const held = `SELECT count(*)::int AS n FROM pg_locks
    WHERE locktype = 'advisory' AND objid = $1 AND pid = pg_backend_pid() AND granted`;

  it('holds the advisory lock from the start of the transaction to its end', async () => {
    const db = await connectPostgres(t.url, { max: 2 });
    try {
      const inside = await db.transaction((tx) => tx.query<{ n: number }>(held, [INGEST_LOCK_KEY]), {
        lock: INGEST_LOCK_KEY,
      });
      expect(inside[0].n).toBe(1);
      expect((await db.transaction((tx) => tx.query<{ n: number }>(held, [INGEST_LOCK_KEY])))[0].n).toBe(0);
      // A second transaction with the lock waits for the first to end.
      const order: string[] = [];
      let release = () => {};
      const first = db.transaction(
        async () => {
          order.push('first locked');
          await new Promise<void>((r) => {
            release = r;
          });
          order.push('first ends');
        },
        { lock: INGEST_LOCK_KEY },
      );
      while (order.length === 0) await new Promise((r) => setTimeout(r, 5));
      const second = db.transaction(async () => void order.push('second locked'), { lock: INGEST_LOCK_KEY });
      await new Promise((r) => setTimeout(r, 100));
      release();
      await Promise.all([first, second]);
      expect(order).toEqual(['first locked', 'first ends', 'second locked']);
    } finally {
      await db.close();
    }
  });

  it('refuses a key that is not an integer rather than put it in the statement', async () => {
    const db = await connectPostgres(t.url, { max: 1 });
    try {
      await expect(db.transaction(async () => 1, { lock: 1.5 })).rejects.toThrow(/not an integer/);
    } finally {
      await db.close();
    }
  });
});
