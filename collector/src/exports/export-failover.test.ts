import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ROLES } from '../../../test/harness/postgres.js';
import { schemaV1Rules } from '../chain/chain-rules.js';
import { type Collector, startCollector } from '../collector.js';
import type { AuditEvent } from '../event.js';
import { CollectorMetrics } from '../metrics.js';
import { AuditStore } from '../store/audit-store.js';
import { advanceCursor, getCursor } from '../store/queries.js';
import { makeSession } from '../testing/audit-events.js';
import { createTestDatabase } from '../testing/test-database.js';
import { buildExporter } from './export-config.js';
import { EXPORT_LOCK_CLASS, EXPORT_LOCKS_APPLICATION, exportLockKey } from './export-lease.js';
import { type Exporter, ExportRunner } from './export-runner.js';
import { splunkHecExporter } from './splunk-hec.js';

const waitFor = async (check: () => boolean | Promise<boolean>, what: string, ms = 20_000) => {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`not in time: ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
};

/** A collector replica as far as exports go: its own store connections, metrics and runner for the shared exporter. */
interface Replica {
  id: string;
  store: AuditStore;
  metrics: CollectorMetrics;
  runner: ExportRunner;
}

/**
 * Replicas of one collector sharing one PostgreSQL store, each running the same exporter (same name, so the same
 * cursor) against one Splunk HEC receiver that records which replica delivered which event.
 */
describe('exports from replicas sharing a PostgreSQL store', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let server: Server;
  let hecUrl: string;
  const received: { by: string; id: string }[] = [];
  const stores: AuditStore[] = [];
  let sessions = 0;

  beforeAll(async () => {
    db = await createTestDatabase(inject('pg'), ROLES.superuser);
    server = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        const by = String(req.headers.authorization).replace('Splunk ', '');
        for (const line of body.split('\n')) received.push({ by, id: JSON.parse(line).event.id });
        res.writeHead(200).end('{"text":"Success","code":0}');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    hecUrl = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  afterAll(async () => {
    for (const s of stores) await s.close().catch(() => {});
    server?.close();
    await db?.drop();
  });

  async function replica(id: string, exporterName: string, wrap = (e: Exporter) => e): Promise<Replica> {
    const store = await AuditStore.open({ url: db.url, rules: schemaV1Rules });
    stores.push(store);
    const metrics = new CollectorMetrics();
    const exporter = wrap(splunkHecExporter({ name: exporterName, url: hecUrl, token: id }));
    const runner = new ExportRunner(store, exporter, metrics, {
      batchSize: 5,
      idleMs: 50,
      maxBackoffMs: 200,
      standbyRetryMs: 100,
      leaseCheckMs: 100,
    });
    return { id, store, metrics, runner };
  }

  /** Stores a new session through one replica and tells every replica, as the collector's ingest queue does. */
  async function ingest(through: Replica, all: Replica[], statements = 6): Promise<AuditEvent[]> {
    const events = makeSession({ id: `fo-${++sessions}`, statements });
    await through.store.ingest(events);
    for (const r of all) r.runner.notify();
    return events;
  }

  const cursorOf = async (store: AuditStore, name: string) => (await getCursor(store.db, `export:${name}`)) ?? 0;
  const lastPosition = async (store: AuditStore) =>
    Number((await store.db.query<{ p: string }>('SELECT max(ingest_seq)::text AS p FROM audit_events'))[0].p);
  const idsDelivered = (by?: string) => received.filter((r) => by === undefined || r.by === by).map((r) => r.id);
  const repeated = (ids: string[]) => ids.filter((id, i) => ids.indexOf(id) !== i);

  async function scraped(r: Replica, metric: string, exporter: string): Promise<number | undefined> {
    const text = await r.metrics.registry.metrics();
    const m = new RegExp(`^${metric}\\{exporter="${exporter}"\\} (\\S+)$`, 'm').exec(text);
    return m ? Number(m[1]) : undefined;
  }

  /** The backend holding the exporter's lock, as an operator would find it in pg_locks. */
  async function lockHolder(store: AuditStore, name: string): Promise<{ pid: number; app: string } | undefined> {
    const [row] = await store.db.query<{ pid: number; app: string }>(
      `SELECT l.pid, a.application_name AS app FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
       WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 2
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
      [EXPORT_LOCK_CLASS, exportLockKey(`export:${name}`) >>> 0],
    );
    return row;
  }

  it('deliver every event exactly once while both run; one replica is active, the other stands by without lag', async () => {
    const [a, b] = [await replica('a', 'siem'), await replica('b', 'siem')];
    const all = [a, b];
    const events = [...(await ingest(a, all)), ...(await ingest(b, all))];
    a.runner.start();
    b.runner.start();
    try {
      for (let i = 0; i < 4; i++) events.push(...(await ingest(i % 2 ? a : b, all)));
      const last = await lastPosition(a.store);
      await waitFor(async () => (await cursorOf(a.store, 'siem')) === last, 'cursor at the last event');
      expect(repeated(idsDelivered())).toEqual([]);
      expect(idsDelivered().sort()).toEqual(events.map((e) => e.id).sort());

      expect([a.runner.active, b.runner.active].filter(Boolean)).toHaveLength(1);
      const [active, standby] = a.runner.active ? [a, b] : [b, a];
      expect(idsDelivered(standby.id)).toEqual([]);
      expect(await scraped(active, 'pgwarden_collector_export_active', 'siem')).toBe(1);
      expect(await scraped(standby, 'pgwarden_collector_export_active', 'siem')).toBe(0);
      // Caught up once its next read finds nothing (the cursor is saved before that).
      await waitFor(
        async () => (await scraped(active, 'pgwarden_collector_export_lag_seconds', 'siem')) === 0,
        'the active replica reports no lag',
      );
      expect(await scraped(standby, 'pgwarden_collector_export_lag_seconds', 'siem')).toBeUndefined();
      expect(await scraped(standby, 'pgwarden_collector_export_lag_events', 'siem')).toBeUndefined();
      expect((await lockHolder(a.store, 'siem'))?.app).toBe(EXPORT_LOCKS_APPLICATION);

      // The active one loses its lock connection (terminated, as a failover or a network cut would): it stops at
      // once, a replica takes the lock on a new connection (usually the standby, which gets the first try), and the
      // events stored from then on reach the receiver once, from that replica.
      const holder = await lockHolder(a.store, 'siem');
      await a.store.db.query('SELECT pg_terminate_backend($1)', [holder?.pid]);
      await waitFor(() => !active.runner.active, 'the holder noticed');
      await waitFor(async () => {
        const now = await lockHolder(a.store, 'siem');
        return now !== undefined && now.pid !== holder?.pid && (a.runner.active || b.runner.active);
      }, 'a replica holds the lock again');
      expect([a.runner.active, b.runner.active].filter(Boolean)).toHaveLength(1);
      const next = a.runner.active ? a : b;
      const before = received.length;
      const later = [...(await ingest(a, all)), ...(await ingest(b, all))];
      const end = await lastPosition(a.store);
      await waitFor(async () => (await cursorOf(a.store, 'siem')) === end, 'cursor at the last event after failover');
      expect(received.slice(before).map((r) => r.id)).toEqual(later.map((e) => e.id));
      expect(new Set(received.slice(before).map((r) => r.by))).toEqual(new Set([next.id]));
      expect(repeated(idsDelivered())).toEqual([]);

      // The holder stops (a rolling update): the other takes over within its retry interval, and nothing is lost.
      const other = next === a ? b : a;
      await next.runner.stop();
      await waitFor(() => other.runner.active, 'the other replica took over');
      const more = await ingest(a, all);
      const fin = await lastPosition(a.store);
      await waitFor(async () => (await cursorOf(a.store, 'siem')) === fin, 'cursor at the last event after handover');
      expect(repeated(idsDelivered())).toEqual([]);
      expect(idsDelivered().sort()).toEqual([...events, ...later, ...more].map((e) => e.id).sort());
    } finally {
      await a.runner.stop();
      await b.runner.stop();
    }
  });

  it('a holder that loses its lock mid-delivery starts no other batch, and its late cursor save does not move the cursor back', async () => {
    let open: () => void = () => {};
    const gate = new Promise<void>((r) => (open = r));
    let entered = 0;
    // Replica a's destination stalls on its first batch, so its lock is lost while that batch is in flight.
    const stalling = (e: Exporter): Exporter => ({
      ...e,
      name: e.name,
      async deliver(batch) {
        if (entered++ === 0) await gate;
        await e.deliver(batch);
      },
    });
    const a = await replica('slow-a', 'slow', stalling);
    const b = await replica('slow-b', 'slow');
    const all = [a, b];
    // This exporter starts after what the test above stored.
    const start = await advanceCursor(a.store.db, 'export:slow', await lastPosition(a.store));
    const events = [...(await ingest(a, all, 8)), ...(await ingest(a, all, 8))];
    a.runner.start();
    try {
      await waitFor(() => entered === 1, 'replica a delivering its first batch');
      b.runner.start();
      const holder = await lockHolder(a.store, 'slow');
      expect(holder?.app).toBe(EXPORT_LOCKS_APPLICATION);
      await a.store.db.query('SELECT pg_terminate_backend($1)', [holder?.pid]);
      await waitFor(() => b.runner.active, 'replica b took over');
      const last = await lastPosition(a.store);
      await waitFor(async () => (await cursorOf(a.store, 'slow')) === last, 'b delivered everything');
      expect(idsDelivered('slow-b').sort()).toEqual(events.map((e) => e.id).sort());

      // Now a's stalled delivery completes and a saves the cursor for it, far behind b's.
      open();
      await waitFor(async () => (await a.metrics.exported.get()).values.some((v) => v.value > 0), 'a saved its batch');
      expect(await cursorOf(a.store, 'slow')).toBe(last);
      expect(last).toBeGreaterThan(start + 5);
      // Its one batch in flight is the only thing delivered twice (at-least-once), and it started no other.
      expect(entered).toBe(1);
      expect(idsDelivered('slow-a')).toEqual(events.slice(0, 5).map((e) => e.id));
      expect(a.runner.active).toBe(false);
      const more = await ingest(b, all);
      const end = await lastPosition(a.store);
      await waitFor(async () => (await cursorOf(a.store, 'slow')) === end, 'b delivered the new events');
      expect(idsDelivered('slow-a')).toHaveLength(5);
      expect(idsDelivered('slow-b').slice(-more.length)).toEqual(more.map((e) => e.id));
    } finally {
      open();
      await a.runner.stop();
      await b.runner.stop();
    }
  });
});

describe('two collectors on one PostgreSQL store with the same --exports', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-export-failover-'));
  const collectors: Collector[] = [];

  beforeAll(async () => {
    db = await createTestDatabase(inject('pg'), ROLES.superuser);
  });
  afterAll(async () => {
    for (const c of collectors) await c.stop().catch(() => {});
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A replica writing its jsonl export to a file of its own, as each pod of a StatefulSet would to its volume. */
  async function collector(id: string): Promise<Collector> {
    const c = await startCollector({
      store: { url: db.url },
      http: { port: 0 },
      logger: pino({ level: 'silent' }),
      exporters: [buildExporter({ type: 'jsonl', name: 'siem', path: join(dir, `${id}.jsonl`) })],
    });
    collectors.push(c);
    return c;
  }
  const exported = (id: string): string[] =>
    existsSync(join(dir, `${id}.jsonl`))
      ? readFileSync(join(dir, `${id}.jsonl`), 'utf8')
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l).id)
      : [];
  const stored = async (c: Collector) =>
    (await c.store.db.query<{ id: string }>('SELECT id FROM audit_events ORDER BY ingest_seq')).map((r) => r.id);
  const active = async (c: Collector) => {
    const text = await (await fetch(`${c.url}/metrics`)).text();
    return /^pgwarden_collector_export_active\{exporter="siem"\} 1$/m.test(text);
  };

  it('export each stored event once between them, and the survivor takes over when the exporting one stops', async () => {
    const [a, b] = [await collector('a'), await collector('b')];
    const events = [...makeSession({ id: 'two-a', statements: 10 }), ...makeSession({ id: 'two-b', statements: 10 })];
    for (const [i, e] of events.entries()) await (i % 2 ? a : b).ingest(e);
    const all = () => [...exported('a'), ...exported('b')];
    await waitFor(async () => all().length >= (await stored(a)).length, 'every stored event exported');
    expect(all().sort()).toEqual((await stored(a)).sort());
    expect(all()).toEqual(expect.arrayContaining(events.map((e) => e.id)));
    const flags = [await active(a), await active(b)];
    expect(flags.filter(Boolean)).toHaveLength(1);
    const [on, off] = flags[0] ? [a, b] : [b, a];
    const [onId, offId] = on === a ? ['a', 'b'] : ['b', 'a'];
    expect(exported(offId)).toEqual([]);

    await on.stop();
    collectors.splice(collectors.indexOf(on), 1);
    await waitFor(() => active(off), 'the other collector took over');
    const later = makeSession({ id: 'two-c', statements: 5 });
    for (const e of later) await off.ingest(e);
    await waitFor(async () => all().length >= (await stored(off)).length, 'the later events exported');
    expect(all().sort()).toEqual((await stored(off)).sort());
    expect(exported(offId)).toEqual(expect.arrayContaining(later.map((e) => e.id)));
    expect(exported(onId).filter((id) => later.some((e) => e.id === id))).toEqual([]);
  });
});
