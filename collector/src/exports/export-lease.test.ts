import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ROLES } from '../../../test/harness/postgres.js';
import { schemaV1Rules } from '../chain/chain-rules.js';
import { CollectorMetrics } from '../metrics.js';
import { AuditStore } from '../store/audit-store.js';
import { getCursor } from '../store/queries.js';
import { connectPostgres, type SqlClient } from '../store/sql-client.js';
import { makeSession } from '../testing/audit-events.js';
import { createTestDatabase } from '../testing/test-database.js';
import { EXPORT_LOCK_CLASS, ExportLockSession, exportLockKey } from './export-lease.js';
import { ExportRunner } from './export-runner.js';
import { jsonlFileExporter } from './jsonl-file.js';

const waitFor = async (check: () => boolean | Promise<boolean>, what: string, ms = 20_000) => {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`not in time: ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
};

/**
 * A TCP relay to PostgreSQL whose connections can go silent, as across a network partition: nothing passes either
 * way, a close included, and each side's socket stays open until told otherwise.
 */
class PartitionableRelay {
  private readonly pairs: { client: Socket; server: Socket; silent: boolean }[] = [];
  private readonly relay: Server;

  constructor(target: { host: string; port: number }) {
    this.relay = createServer((client) => {
      const server = connect(target.port, target.host);
      const pair = { client, server, silent: false };
      this.pairs.push(pair);
      client.on('data', (d) => pair.silent || server.write(d));
      server.on('data', (d) => pair.silent || client.write(d));
      client.on('close', () => pair.silent || server.destroy());
      server.on('close', () => pair.silent || client.destroy());
      client.on('error', () => {});
      server.on('error', () => {});
    });
  }

  listen(): Promise<number> {
    return new Promise((r) =>
      this.relay.listen(0, '127.0.0.1', () => r((this.relay.address() as { port: number }).port)),
    );
  }

  /** Every connection open now goes silent; new ones work. */
  partition(): void {
    for (const p of this.pairs) p.silent = true;
  }

  /** PostgreSQL's side of the silent connections ends, as when its keepalives give up on the vanished peer. */
  serverGivesUp(): void {
    for (const p of this.pairs) if (p.silent) p.server.destroy();
  }

  close(): void {
    for (const p of this.pairs) {
      p.client.destroy();
      p.server.destroy();
    }
    this.relay.close();
  }
}

describe('an exporter lease on a connection that goes silent', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let store: AuditStore;
  let relayed: SqlClient;
  const relay = new PartitionableRelay(inject('pg'));
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-export-lease-'));

  beforeAll(async () => {
    db = await createTestDatabase(inject('pg'), ROLES.superuser);
    store = await AuditStore.open({ url: db.url, rules: schemaV1Rules });
    const url = new URL(db.url);
    url.port = String(await relay.listen());
    relayed = await connectPostgres(url.toString(), { max: 1 });
  });
  afterAll(async () => {
    relay.close();
    await relayed?.close().catch(() => {});
    await store?.close();
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  const exported = (file: string): string[] =>
    existsSync(join(dir, file))
      ? readFileSync(join(dir, file), 'utf8')
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l).id)
      : [];
  const lockHolder = async () =>
    (
      await store.db.query<{ pid: number }>(
        `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = $1 AND objid = $2 AND objsubid = 2
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
        [EXPORT_LOCK_CLASS, exportLockKey('export:siem') >>> 0],
      )
    )[0]?.pid;
  const caughtUp = async () => {
    const [row] = await store.db.query<{ p: string }>('SELECT max(ingest_seq)::text AS p FROM audit_events');
    return (await getCursor(store.db, 'export:siem')) === Number(row.p);
  };

  it('makes the holder stop before PostgreSQL frees its lock for another replica, and each event is delivered once', async () => {
    const opts = { batchSize: 5, idleMs: 50, standbyRetryMs: 100, leaseCheckMs: 100, leaseTimeoutMs: 500 };
    // Replica a reads and saves through the store directly, but holds its lock over the relay: only that connection
    // is cut off, the case where nothing but the lock could stop it.
    const aStore = { db: { ...store.db, session: relayed.session } } as unknown as AuditStore;
    const a = new ExportRunner(
      aStore,
      jsonlFileExporter({ name: 'siem', path: join(dir, 'a.jsonl') }),
      new CollectorMetrics(),
      opts,
    );
    const b = new ExportRunner(
      store,
      jsonlFileExporter({ name: 'siem', path: join(dir, 'b.jsonl') }),
      new CollectorMetrics(),
      opts,
    );
    const events = makeSession({ id: 'silent-1', statements: 12 });
    try {
      a.start();
      await waitFor(() => a.active, 'a exporting');
      b.start();
      await store.ingest(events);
      a.notify();
      await waitFor(caughtUp, 'a delivered the first events');
      const pid = await lockHolder();
      expect(pid).toBeDefined();

      relay.partition();
      await waitFor(() => !a.active, 'a gave up its lease');
      // PostgreSQL still holds a's lock for its session, so nobody else could have taken over yet.
      expect(await lockHolder()).toBe(pid);
      expect(b.active).toBe(false);

      const later = makeSession({ id: 'silent-2', statements: 12 });
      await store.ingest(later);
      events.push(...later);
      relay.serverGivesUp();
      await waitFor(async () => (await lockHolder()) !== pid && (a.active || b.active), 'a replica took over');
      await waitFor(caughtUp, 'the later events delivered');
      const all = [...exported('a.jsonl'), ...exported('b.jsonl')];
      expect(all).toEqual(expect.arrayContaining(events.map((e) => e.id)));
      expect(all).toHaveLength(events.length);
    } finally {
      await a.stop();
      await b.stop();
    }
  });
});

describe('the lease connection asks PostgreSQL to probe it within seconds', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let store: AuditStore;
  beforeAll(async () => {
    db = await createTestDatabase(inject('pg'), ROLES.superuser);
    store = await AuditStore.open({ url: db.url, rules: schemaV1Rules });
  });
  afterAll(async () => {
    await store?.close();
    await db?.drop();
  });

  /**
   * The keepalive timer of backend `pid`'s TCP socket in seconds, as the kernel shows it in /proc/net/tcp (`tr` 2 is
   * the keepalive timer, `tm->when` its remaining time in clock ticks of USER_HZ = 100); undefined while another
   * timer runs (a retransmission's, while a reply is not yet acknowledged) or none does.
   */
  const keepaliveTimer = (pid: number): number | undefined => {
    const inodes = new Set<string>();
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`, { encoding: 'utf8' }));
      if (m) inodes.add(m[1]);
    }
    for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
      for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
        const f = line.trim().split(/\s+/);
        if (f.length < 10 || !inodes.has(f[9])) continue;
        const [tr, when] = f[5].split(':');
        return tr === '02' ? Number.parseInt(when, 16) / 100 : undefined;
      }
    }
    return undefined;
  };

  it("the holder's backend socket probes after 5 s idle, not the kernel's two hours: a vanished holder's lock is freed in ~11 s", async () => {
    const locks = new ExportLockSession(store.db);
    const lease = locks.lease('export:keepalive');
    try {
      expect(await lease.acquire()).toBe(true);
      const [row] = await store.db.query<{ pid: number }>(
        `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = $1 AND objid = $2 AND objsubid = 2
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
        [EXPORT_LOCK_CLASS, exportLockKey('export:keepalive') >>> 0],
      );
      expect(row?.pid).toBeDefined();
      // PostgreSQL turns SO_KEEPALIVE on for every client socket; the lease's SETs shorten its idle time to 5 s.
      // Without them the timer reads the kernel's default (7200 s).
      let timer = keepaliveTimer(row.pid);
      for (let i = 0; timer === undefined && i < 50; i++) {
        await new Promise((r) => setTimeout(r, 100));
        timer = keepaliveTimer(row.pid);
      }
      expect(timer, 'a keepalive timer on the backend socket').toBeDefined();
      expect(timer).toBeLessThanOrEqual(5);
    } finally {
      await lease.release();
      await locks.close();
    }
  });
});
