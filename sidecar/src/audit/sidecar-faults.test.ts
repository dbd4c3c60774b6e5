import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { auditEventSchema, verifyChain } from '@pgwarden/policy';
import { Ajv } from 'ajv';
import pg from 'pg';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startNats, type TestNats } from '../../../test/harness/index.js';
import { type Sidecar, startSidecar } from '../start-sidecar.js';
import { auditFromFlags } from './audit-flags.js';
import type { NatsAuditSink } from './nats-sink.js';
import { readAuditStream } from './nats-test-kit.js';

/**
 * The sidecar half of the audit fault proof: statements through the real proxy in front of the real PostgreSQL,
 * audited to a real nats-server that is killed and restarted twice mid-run. The stream must end with exactly one
 * statement event per statement, no duplicates, and every session chain intact.
 */
const CLIENTS = 4;
const PER_CLIENT = 500;

let nats: TestNats;
let sidecar: Sidecar;
let spoolDir: string;
let setup: ReturnType<typeof auditFromFlags>;

beforeAll(async () => {
  nats = await startNats();
  spoolDir = mkdtempSync(join(tmpdir(), 'pgwarden-faults-spool-'));
  setup = auditFromFlags({ audit: nats.url, spoolDir, auditFailMode: 'closed' }, { instanceId: 'faults' });
  const shared = inject('pg');
  sidecar = await startSidecar({
    listen: { host: '127.0.0.1', port: 0 },
    upstream: { host: shared.host, port: shared.port, database: shared.database, sslmode: 'disable' },
    credentials: { username: 'app_scram', password: 'scram-pw-1' },
    audit: setup.sink,
    auditRecorder: setup.recorder,
    auditFailMode: setup.failMode,
  });
});

afterAll(async () => {
  await sidecar?.close(1000);
  await setup?.sink.close();
  await nats?.stop();
  rmSync(spoolDir, { recursive: true, force: true });
});

describe('sidecar → NATS audit under faults', () => {
  it(`${CLIENTS * PER_CLIENT} statements while nats-server is killed and restarted twice: exactly once each, chains verify`, async () => {
    const clients = await Promise.all(
      Array.from({ length: CLIENTS }, async () => {
        const c = new pg.Client({
          host: '127.0.0.1',
          port: sidecar.port,
          user: 'agent',
          database: 'app',
          password: 'x',
        });
        await c.connect();
        return c;
      }),
    );
    let done = 0;
    const faults = (async () => {
      const at = async (n: number) => {
        while (done < n) await new Promise((r) => setTimeout(r, 5));
      };
      const total = CLIENTS * PER_CLIENT;
      await at(total * 0.2);
      await nats.kill();
      await at(total * 0.35);
      await nats.start();
      await at(total * 0.6);
      await nats.kill();
      await at(total * 0.75);
      await nats.start();
    })();
    await Promise.all(
      clients.map(async (c, ci) => {
        for (let i = 0; i < PER_CLIENT; i++) {
          const r = await c.query('SELECT $1::int AS n', [ci * PER_CLIENT + i]);
          expect(r.rows[0].n).toBe(ci * PER_CLIENT + i);
          done++;
        }
      }),
    );
    await faults;
    await Promise.all(clients.map((c) => c.end()));
    // Let the sessions' session.end events get recorded, then wait for the spool to drain.
    await new Promise((r) => setTimeout(r, 100));
    const sink = setup.sink as NatsAuditSink;
    await sink.whenIdle(30_000);
    expect(sink.stats()).toMatchObject({ dropped: 0, mode: 'direct' });
    expect(sink.stats().spooled).toBeGreaterThan(0);

    const events = (await readAuditStream(nats.url)).map((m) => m.event);
    const statements = events.filter((e) => e.type === 'statement');
    expect(statements).toHaveLength(CLIENTS * PER_CLIENT);
    expect(new Set(events.map((e) => e.id)).size).toBe(events.length);
    const report = verifyChain(events);
    expect(report).toMatchObject({ ok: true, duplicates: 0, gaps: [], tampered: [], open: [] });
    // The client sessions, and the sidecar's own chain once a tick recorded their heads (audit.heads).
    const clientSessions = new Set(events.filter((e) => e.type === 'session.start').map((e) => e.session.id));
    expect(clientSessions.size).toBe(CLIENTS);
    expect(report.sessions).toBe(CLIENTS + (events.some((e) => e.type === 'audit.heads') ? 1 : 0));
    const validate = new Ajv({ allErrors: true }).compile(auditEventSchema);
    for (const e of events) expect(validate(e), JSON.stringify(validate.errors)).toBe(true);
  }, 120_000);
});

describe('failMode through the real proxy', () => {
  it('closed: once the spool is full and NATS is down, statements fail with SQLSTATE 53000 and never reach PostgreSQL; they pass again after recovery', async () => {
    const own = await startNats();
    const dir = mkdtempSync(join(tmpdir(), 'pgwarden-failmode-spool-'));
    await own.kill();
    // No heads tick: the events and drops are counted exactly (audit-heads.test.ts covers the tick).
    const a = auditFromFlags(
      { audit: own.url, spoolDir: dir, spoolMaxBytes: '24KiB', auditFailMode: 'closed' },
      { checkpointIntervalMs: 600_000 },
    );
    const shared = inject('pg');
    const sc = await startSidecar({
      listen: { host: '127.0.0.1', port: 0 },
      upstream: { host: shared.host, port: shared.port, database: shared.database, sslmode: 'disable' },
      credentials: { username: 'app_scram', password: 'scram-pw-1' },
      audit: a.sink,
      auditRecorder: a.recorder,
      auditFailMode: a.failMode,
    });
    try {
      const c = new pg.Client({ host: '127.0.0.1', port: sc.port, user: 'agent', database: 'app', password: 'x' });
      await c.connect();
      // Prepared while events could still be spooled: its later runs (Bind + Execute, no Parse) must be gated too.
      const prepared = { name: 'p41', text: 'SELECT 41 + $1::int AS n', values: [1] };
      expect((await c.query(prepared)).rows).toEqual([{ n: 42 }]);
      let denied: (Error & { code?: string }) | undefined;
      for (let i = 0; i < 500 && !denied; i++) {
        await c.query('SELECT 1').catch((err: Error & { code?: string }) => {
          denied = err;
        });
        await new Promise((r) => setImmediate(r));
      }
      expect(denied?.code).toBe('53000');
      expect(denied?.message).toMatch(/audit log unavailable/);
      // A write that would have run upstream is refused before it gets there.
      await expect(c.query('CREATE TEMP TABLE should_not_exist (i int)')).rejects.toMatchObject({ code: '53000' });
      await expect(c.query(prepared)).rejects.toMatchObject({ code: '53000', message: /audit log unavailable/ });
      await own.start();
      await (a.sink as NatsAuditSink).whenIdle(15_000);
      expect(a.sink.ready()).toBe(true);
      await expect(c.query('SELECT to_regclass($1) AS t', ['pg_temp.should_not_exist'])).resolves.toMatchObject({
        rows: [{ t: null }],
      });
      expect((await c.query(prepared)).rows).toEqual([{ n: 42 }]);
      await c.end();
    } finally {
      await sc.close(500);
      await a.sink.close();
      await own.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

describe('failMode open through the real proxy', () => {
  it('keeps serving with a full spool, counts the drops, and records an audit.gap naming them once NATS is back', async () => {
    const own = await startNats();
    const dir = mkdtempSync(join(tmpdir(), 'pgwarden-failopen-spool-'));
    await own.kill();
    const a = auditFromFlags(
      { audit: own.url, spoolDir: dir, spoolMaxBytes: '16KiB', auditFailMode: 'open' },
      { checkpointIntervalMs: 600_000 },
    );
    const shared = inject('pg');
    const sc = await startSidecar({
      listen: { host: '127.0.0.1', port: 0 },
      upstream: { host: shared.host, port: shared.port, database: shared.database, sslmode: 'disable' },
      credentials: { username: 'app_scram', password: 'scram-pw-1' },
      audit: a.sink,
      auditRecorder: a.recorder,
      auditFailMode: a.failMode,
    });
    try {
      const c = new pg.Client({ host: '127.0.0.1', port: sc.port, user: 'agent', database: 'app', password: 'x' });
      await c.connect();
      for (let i = 0; i < 100; i++) expect((await c.query('SELECT $1::int AS i', [i])).rows[0].i).toBe(i);
      const sink = a.sink as NatsAuditSink;
      const dropped = sink.stats().dropped;
      expect(dropped).toBeGreaterThan(0);
      const target = new Registry();
      a.exposeMetrics(target);
      expect(await target.getSingleMetricAsString('pgwarden_audit_dropped_total')).toContain(
        `cause="spool_full"} ${dropped}`,
      );
      await own.start();
      for (let i = 0; i < 200 && !sink.ready(); i++) await new Promise((r) => setTimeout(r, 25));
      await c.query('SELECT 1');
      await c.end();
      await new Promise((r) => setTimeout(r, 100));
      await sink.whenIdle(15_000);
      const events = (await readAuditStream(own.url)).map((m) => m.event);
      const gaps = events.filter((e) => e.type === 'audit.gap');
      expect(gaps).toHaveLength(1);
      expect(gaps[0].gap?.dropped).toBe(dropped);
      const report = verifyChain(events);
      expect(report.tampered).toEqual([]);
      expect(report.gaps.map((g) => ({ id: g.session, fromSeq: g.fromSeq, toSeq: g.toSeq }))).toEqual(
        gaps[0].gap?.sessions,
      );
    } finally {
      await sc.close(500);
      await a.sink.close();
      await own.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
