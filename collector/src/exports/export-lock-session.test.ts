import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ROLES } from '../../../test/harness/postgres.js';
import { schemaV1Rules } from '../chain/chain-rules.js';
import { type Collector, startCollector } from '../collector.js';
import { AuditStore } from '../store/audit-store.js';
import { makeSession } from '../testing/audit-events.js';
import { createTestDatabase } from '../testing/test-database.js';
import { buildExporter } from './export-config.js';
import { EXPORT_LOCK_CLASS, EXPORT_LOCKS_APPLICATION, ExportLockSession, exportLockKey } from './export-lease.js';

const waitFor = async (check: () => boolean | Promise<boolean>, what: string, ms = 20_000) => {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`not in time: ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
};

/**
 * A replica's exporters hold their leases on one shared connection: session-level advisory locks with different keys
 * on one session. Real PostgreSQL; the operator's view (pg_stat_activity, pg_locks) is what the tests read.
 */
describe('exporter leases of one replica share one lock connection', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let store: AuditStore;
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-export-locks-'));
  const collectors: Collector[] = [];

  beforeAll(async () => {
    db = await createTestDatabase(inject('pg'), ROLES.superuser);
    store = await AuditStore.open({ url: db.url, rules: schemaV1Rules });
  });
  afterAll(async () => {
    for (const c of collectors) await c.stop().catch(() => {});
    await store?.close();
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Which backend holds each cursor's lock (undefined: nobody). */
  const holders = async (cursors: string[]): Promise<(number | undefined)[]> => {
    const rows = await store.db.query<{ objid: string; pid: number }>(
      `SELECT objid::text, pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = $1 AND objsubid = 2
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
      [EXPORT_LOCK_CLASS],
    );
    return cursors.map((c) => rows.find((r) => Number(r.objid) === exportLockKey(c) >>> 0)?.pid);
  };
  /** Export lock connections to this database, as pg_stat_activity names them (any naming this code ever used). */
  const lockConnections = async () =>
    store.db.query<{ pid: number; app: string }>(
      `SELECT pid, application_name AS app FROM pg_stat_activity
        WHERE datname = current_database() AND application_name LIKE 'pgwarden-export%' ORDER BY pid`,
    );

  it('release unlocks only its own key (the others stay held on the same connection); losing the connection loses every lease on it, each told once', async () => {
    const cursors = ['export:r1', 'export:r2', 'export:r3'];
    const a = new ExportLockSession(store.db, { checkMs: 100 });
    const b = new ExportLockSession(store.db, { checkMs: 100 });
    const lost: string[] = [];
    const leases = cursors.map((c) => a.lease(c, () => lost.push(c)));
    const other = b.lease('export:r2');
    try {
      for (const l of leases) expect(await l.acquire()).toBe(true);
      const [pid] = await holders(cursors);
      expect(await holders(cursors)).toEqual([pid, pid, pid]);
      expect(await other.acquire()).toBe(false);

      await leases[1].release();
      expect(leases[1].held).toBe(false);
      expect(await holders(cursors)).toEqual([pid, undefined, pid]);
      expect(await other.acquire()).toBe(true);
      expect((await holders(cursors))[1]).not.toBe(pid);
      // A few checks later the connection is still there, and the others still hold theirs.
      await new Promise((r) => setTimeout(r, 400));
      expect([leases[0].held, leases[2].held]).toEqual([true, true]);
      expect((await holders(cursors)).filter((p) => p === pid)).toHaveLength(2);
      expect(lost).toEqual([]);

      // The shared connection is terminated: every lease still on it is lost, each told once; the released one not.
      await store.db.query('SELECT pg_terminate_backend($1)', [pid]);
      await waitFor(() => lost.length === 2, 'both leases told');
      await new Promise((r) => setTimeout(r, 200));
      expect(lost.sort()).toEqual(['export:r1', 'export:r3']);
      expect(leases.map((l) => l.held)).toEqual([false, false, false]);
      expect(other.held).toBe(true);
      // A new connection takes them again.
      expect(await leases[0].acquire()).toBe(true);
      const [again] = await holders(cursors);
      expect(again).not.toBe(pid);
    } finally {
      await a.close();
      await b.close();
    }
    expect(await holders(cursors)).toEqual([undefined, undefined, undefined]);
  });

  it('a collector with three exporters holds their locks on one connection; when it is terminated all three stop and a second replica takes over each', async () => {
    const names = ['siem-1', 'siem-2', 'siem-3'];
    const cursors = names.map((n) => `export:${n}`);
    const replica = async (id: string) => {
      const c = await startCollector({
        store: { url: db.url },
        http: { port: 0 },
        logger: pino({ level: 'silent' }),
        exporters: names.map((n) => buildExporter({ type: 'jsonl', name: n, path: join(dir, `${id}-${n}.jsonl`) })),
      });
      collectors.push(c);
      return c;
    };
    const activeOn = async (c: Collector) => {
      const text = await (await fetch(`${c.url}/metrics`)).text();
      return names.map((n) => new RegExp(`^pgwarden_collector_export_active\\{exporter="${n}"\\} 1$`, 'm').test(text));
    };
    const exported = (id: string, name: string): string[] => {
      const f = join(dir, `${id}-${name}.jsonl`);
      return existsSync(f)
        ? readFileSync(f, 'utf8')
            .trim()
            .split('\n')
            .map((l) => JSON.parse(l).id)
        : [];
    };

    const a = await replica('a');
    await waitFor(async () => (await activeOn(a)).every(Boolean), 'a exporting all three');
    const [pid] = await holders(cursors);
    expect(await holders(cursors)).toEqual([pid, pid, pid]);
    // Before: one connection per exporter, `pgwarden-export export:<name>` each.
    expect(await lockConnections()).toEqual([{ pid, app: EXPORT_LOCKS_APPLICATION }]);

    const b = await replica('b');
    // b's runners try at once: its lock connection is open, and gets none of the locks.
    await waitFor(async () => (await lockConnections()).length === 2, "b's lock connection");
    expect(await holders(cursors)).toEqual([pid, pid, pid]);
    expect(await activeOn(b)).toEqual([false, false, false]);
    const first = makeSession({ id: 'locks-1', statements: 4 });
    for (const e of first) await a.ingest(e);
    for (const n of names)
      await waitFor(() => exported('a', n).length === first.length, `a exported the first session to ${n}`);

    await store.db.query('SELECT pg_terminate_backend($1)', [pid]);
    await waitFor(async () => (await activeOn(a)).every((x) => !x), 'all three of a stopped');
    // a tries again after its retry delay and could win a lock back from b on a loaded machine: stopped, so that b
    // is the one to take over, whatever the timing.
    collectors.splice(collectors.indexOf(a), 1);
    await a.stop();
    await waitFor(async () => (await activeOn(b)).every(Boolean), 'b took over all three');
    const [next] = await holders(cursors);
    expect(next).not.toBe(pid);
    expect(await holders(cursors)).toEqual([next, next, next]);
    expect((await lockConnections()).find((r) => r.pid === next)?.app).toBe(EXPORT_LOCKS_APPLICATION);

    const later = makeSession({ id: 'locks-2', statements: 4 });
    for (const e of later) await b.ingest(e);
    for (const n of names) {
      await waitFor(() => later.every((e) => exported('b', n).includes(e.id)), `b exported the later session to ${n}`);
      expect(exported('a', n).filter((id) => later.some((e) => e.id === id))).toEqual([]);
      expect(new Set([...exported('a', n), ...exported('b', n)])).toEqual(
        new Set([...first, ...later].map((e) => e.id)),
      );
    }
  }, 60_000);
});
