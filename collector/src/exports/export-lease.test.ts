import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
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
import { EXPORT_LOCK_CLASS, exportLockKey } from './export-lease.js';
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
