import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type AuditEvent, verifyChain } from '@pgwarden/policy';
import pg from 'pg';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { freePort } from '../../../test/harness/index.js';
import { type Sidecar, startSidecar } from '../start-sidecar.js';
import { auditFromFlags } from './audit-flags.js';
import { createAuditRecorder } from './audit-recorder.js';
import { type FailingDisk, mountFailingDisk } from './failing-disk.js';
import { createFileSink } from './line-sinks.js';
import { NatsAuditSink } from './nats-sink.js';
import { noting, selectRecord, sessionInfo } from './nats-test-kit.js';

/**
 * A background fdatasync that fails (`--audit-fsync batch`): Linux drops the dirty pages of a failed writeback, so
 * the events written before it may be lost although write(2) succeeded. The sink must then count as failed, as a
 * failed write does: not ready (failMode closed refuses statements with 53000, /readyz says why), counted in
 * pgwarden_audit_fsync_failures_total and logged. The failure is real: an ext4 file on a loop device whose backing
 * tmpfs is full (failing-disk.ts), so the kernel's own writeback fails.
 */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
type LogLine = { level: string; msg: string; err: string };
const logger = (lines: LogLine[]) => (level: string, msg: string, err?: unknown) =>
  lines.push({ level, msg, err: err instanceof Error ? err.message : String(err) });
const fsyncFailures = async (reg: Registry, sink: string) =>
  Number(
    /\d+$/.exec(
      (await reg.getSingleMetricAsString('pgwarden_audit_fsync_failures_total'))
        .split('\n')
        .find((l) => l.includes(`sink="${sink}"`)) ?? '0',
    )?.[0],
  );

type Declared = { id: string; fromSeq: number; toSeq: number };

/**
 * The gap a sink declares for what a failed sync may have lost must let verification tell that loss from tampering:
 * with those events gone from the trail (as after a crash that lost them), the chain shows exactly the declared
 * holes and nothing else, and the gap event's own chain (the sidecar's) verifies.
 */
function expectDeclaredFsyncGap(trail: AuditEvent[], atRisk: Declared[]) {
  const gaps = trail.filter((e) => e.type === 'audit.gap');
  expect(gaps).toHaveLength(1);
  expect(gaps[0].gap).toMatchObject({ cause: 'fsync_failed', sessions: atRisk });
  expect(gaps[0].gap!.dropped).toBe(atRisk.reduce((n, r) => n + r.toSeq - r.fromSeq + 1, 0));
  // The page cache still shows every event: the trail as read back is whole.
  expect(verifyChain(trail)).toMatchObject({ gaps: [], tampered: [] });
  const lost = (e: AuditEvent) =>
    atRisk.some((r) => r.id === e.session.id && e.session.seq >= r.fromSeq && e.session.seq <= r.toSeq);
  const report = verifyChain(trail.filter((e) => !lost(e)));
  expect(report.tampered).toEqual([]);
  expect(report.gaps.map((g) => ({ id: g.session, fromSeq: g.fromSeq, toSeq: g.toSeq }))).toEqual(atRisk);
}

// Skipped where the tests do not run as root (mount, losetup); sessions and CI here run as root.
describe.skipIf(process.getuid?.() !== 0)('a failed fdatasync of the audit trail', () => {
  const disks: FailingDisk[] = [];
  const cleanup: (() => Promise<void> | void)[] = [];
  const disk = () => {
    const d = mountFailingDisk();
    disks.push(d);
    return d;
  };
  afterEach(async () => {
    try {
      for (const c of cleanup.splice(0).reverse()) await c();
    } finally {
      for (const d of disks.splice(0)) d.close();
    }
  });

  it('file sink, batch: not ready, counted and logged once; ready again after a sync of later writes succeeds', async () => {
    const d = disk();
    const registry = new Registry();
    const lines: LogLine[] = [];
    const path = join(d.dir, 'audit.jsonl');
    const sink = createFileSink({ path, fsync: 'batch', registry, log: logger(lines) });
    cleanup.push(() => sink.close());
    const rec = createAuditRecorder(sink, { instanceId: 'fsync-file', checkpointIntervalMs: 600_000 });
    const s = rec.openSession(sessionInfo('fsync-file'));
    for (let i = 0; i < 5; i++) s.statement(selectRecord(i));
    await sink.whenIdle!();
    expect(sink.ready()).toBe(true);

    d.fill();
    let i = 5;
    for (; i < 500 && sink.ready(); i++) {
      s.statement(selectRecord(i));
      await sleep(2);
    }
    expect(sink.ready()).toBe(false);
    // Writes still succeed (the page cache takes them): only the sync failed.
    expect(sink.stats!()).toMatchObject({ dropped: 0 });
    expect(await fsyncFailures(registry, 'file')).toBeGreaterThan(0);
    const failures = lines.filter((l) => /fdatasync failed/.test(l.msg));
    expect(failures).toHaveLength(1);
    expect(failures[0]).toMatchObject({ level: 'error' });
    expect(failures[0].err).toMatch(/^(ENOSPC|EIO)\b/);
    // Nothing of the events (statement text) in the log line.
    expect(JSON.stringify(lines)).not.toContain('SELECT');

    // Space again: a sync of writes made after the failure succeeds, and only that makes the sink ready again.
    d.free();
    for (let k = 0; k < 300 && !sink.ready(); k++) {
      s.statement(selectRecord(i++));
      await sleep(10);
    }
    expect(sink.ready()).toBe(true);
    expect(lines.at(-1)).toMatchObject({ level: 'info', msg: 'audit file fdatasync succeeded again' });
  }, 30_000);

  it('file sink, always: a failed sync is not a drop, the sink is not ready', async () => {
    const d = disk();
    const registry = new Registry();
    const lines: LogLine[] = [];
    const sink = createFileSink({ path: join(d.dir, 'audit.jsonl'), fsync: 'always', registry, log: logger(lines) });
    cleanup.push(() => sink.close());
    sink.emit({ session: { id: 's', seq: 1 }, pad: 'x'.repeat(100) });
    expect(sink.ready()).toBe(true);
    d.fill();
    for (let i = 2; i < 200 && sink.ready(); i++) sink.emit({ session: { id: 's', seq: i }, pad: 'x'.repeat(1000) });
    expect(sink.ready()).toBe(false);
    expect(sink.stats!()).toMatchObject({ dropped: 0 });
    expect(await fsyncFailures(registry, 'file')).toBeGreaterThan(0);
    expect(lines.filter((l) => /fdatasync failed/.test(l.msg))).toHaveLength(1);
  }, 30_000);

  it('NATS sink spooling (NATS away): a failed spool fdatasync makes it not ready, counted and logged', async () => {
    const d = disk();
    const registry = new Registry();
    const lines: LogLine[] = [];
    const sink = new NatsAuditSink({
      servers: [`nats://127.0.0.1:${await freePort()}`],
      spool: { dir: join(d.dir, 'spool'), maxBytes: 1e9, fsync: 'batch' },
      registry,
      log: logger(lines),
    });
    cleanup.push(() => sink.close(100));
    const rec = createAuditRecorder(sink, { instanceId: 'fsync-spool', checkpointIntervalMs: 600_000 });
    const s = rec.openSession(sessionInfo('fsync-spool'));
    for (let i = 0; i < 5; i++) s.statement(selectRecord(i));
    await sleep(50);
    expect(sink.stats()).toMatchObject({ mode: 'spool', dropped: 0 });
    expect(sink.ready()).toBe(true);
    d.fill();
    for (let i = 5; i < 500 && sink.ready(); i++) {
      s.statement(selectRecord(i));
      await sleep(2);
    }
    expect(sink.ready()).toBe(false);
    expect(sink.stats()).toMatchObject({ dropped: 0 });
    expect(await fsyncFailures(registry, 'nats')).toBeGreaterThan(0);
    expect(lines.filter((l) => /spool fdatasync failed/.test(l.msg))).toHaveLength(1);
  }, 30_000);

  it('file sink, batch: once syncs work again, an audit.gap names exactly the events the failed sync covered', async () => {
    const d = disk();
    const path = join(d.dir, 'audit.jsonl');
    const sink = createFileSink({ path, fsync: 'batch', registry: new Registry() });
    cleanup.push(() => sink.close());
    const seqs: number[] = [];
    const rec = createAuditRecorder(noting(sink, 'fsync-gap', seqs), {
      instanceId: 'fsync-gap',
      checkpointIntervalMs: 600_000,
    });
    const s = rec.openSession(sessionInfo('fsync-gap'));
    let i = 0;
    for (; i < 5; i++) s.statement(selectRecord(i));
    await sink.whenIdle!();

    d.fill();
    // One write and one sync per round, each awaited: the sync that fails covered exactly that round's events, and
    // every sync before it succeeded (their events are on disk).
    let atRisk: Declared[] = [];
    for (let round = 0; round < 300 && sink.ready(); round++) {
      const before = seqs.length;
      for (let k = 0; k < 8; k++) s.statement(selectRecord(i++));
      await sink.whenIdle!();
      atRisk = [{ id: 'fsync-gap', fromSeq: seqs[before], toSeq: seqs.at(-1)! }];
    }
    expect(sink.ready()).toBe(false);

    d.free();
    for (let k = 0; k < 300 && !sink.ready(); k++) {
      s.statement(selectRecord(i++));
      await sleep(10);
    }
    expect(sink.ready()).toBe(true);
    s.end({});
    await sink.whenIdle!();
    await sink.close();
    const trail = readFileSync(path, 'utf8')
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as AuditEvent);
    expectDeclaredFsyncGap(trail, atRisk);
  }, 30_000);

  it('NATS sink spooling, fsync always: once spool syncs work again, an audit.gap names the events they may have lost', async () => {
    const d = disk();
    const dir = join(d.dir, 'spool');
    const sink = new NatsAuditSink({
      servers: [`nats://127.0.0.1:${await freePort()}`],
      spool: { dir, maxBytes: 1e9, fsync: 'always' },
      registry: new Registry(),
    });
    cleanup.push(() => sink.close(100));
    const seqs: number[] = [];
    const rec = createAuditRecorder(noting(sink, 'fsync-spool-gap', seqs), {
      instanceId: 'fsync-spool-gap',
      checkpointIntervalMs: 600_000,
    });
    const s = rec.openSession(sessionInfo('fsync-spool-gap'));
    let i = 0;
    for (; i < 5; i++) s.statement(selectRecord(i));
    sink.flush();
    expect(sink.stats()).toMatchObject({ mode: 'spool', dropped: 0 });

    d.fill();
    // flush() appends and (fsync always) syncs before it returns: each round's sync covers that round alone.
    const atRisk: Declared[] = [];
    for (let round = 0; round < 300 && sink.ready(); round++) {
      const before = seqs.length;
      for (let k = 0; k < 8; k++) s.statement(selectRecord(i++));
      sink.flush();
      if (!sink.ready()) atRisk.push({ id: 'fsync-spool-gap', fromSeq: seqs[before], toSeq: seqs.at(-1)! });
    }
    expect(sink.ready()).toBe(false);

    d.free();
    for (let k = 0; k < 300 && !sink.ready(); k++) {
      s.statement(selectRecord(i++));
      sink.flush();
      await sleep(10);
    }
    expect(sink.ready()).toBe(true);
    s.end({});
    await sleep(0);
    sink.flush();
    // The spool as the next start would deliver it (NATS stays away): `<subject>\t<msgID>\t<event>` lines.
    const trail = readdirSync(dir)
      .filter((f) => f.endsWith('.jsonl'))
      .sort()
      .flatMap((f) => readFileSync(join(dir, f), 'utf8').trimEnd().split('\n'))
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l.split('\t')[2]) as AuditEvent);
    expectDeclaredFsyncGap(trail, atRisk);
  }, 30_000);

  /** The sidecar in front of the real PostgreSQL, auditing to a file on the failing disk. */
  async function sidecarOn(d: FailingDisk, failMode: 'closed' | 'open') {
    const lines: LogLine[] = [];
    const setup = auditFromFlags(
      { audit: `file:${join(d.dir, 'audit.jsonl')}`, auditFailMode: failMode },
      { instanceId: `fsync-${failMode}`, checkpointIntervalMs: 600_000, log: logger(lines) },
    );
    const shared = inject('pg');
    const sidecar: Sidecar = await startSidecar({
      listen: { host: '127.0.0.1', port: 0 },
      upstream: { host: shared.host, port: shared.port, database: shared.database, sslmode: 'disable' },
      credentials: { username: 'app_scram', password: 'scram-pw-1' },
      audit: setup.sink,
      auditRecorder: setup.recorder,
      auditFailMode: setup.failMode,
      http: { host: '127.0.0.1', port: 0 },
    });
    setup.exposeMetrics(sidecar.metrics.registry);
    const client = new pg.Client({ host: '127.0.0.1', port: sidecar.port, user: 'agent', database: 'app' });
    client.on('error', () => {});
    await client.connect();
    cleanup.push(async () => {
      await client.end().catch(() => {});
      await sidecar.close(1000);
      await setup.sink.close();
    });
    const http = async (path: string) => {
      const r = await fetch(`http://127.0.0.1:${sidecar.httpPort}${path}`);
      return { status: r.status, body: await r.text() };
    };
    return { client, http, lines };
  }

  it('sidecar, failMode closed: statements refused with 53000, /readyz not ready, the metric and a log line', async () => {
    const d = disk();
    const { client, http, lines } = await sidecarOn(d, 'closed');
    expect((await client.query("SELECT 'before' AS x")).rows).toEqual([{ x: 'before' }]);
    expect(await http('/readyz')).toEqual({ status: 200, body: 'ready\n' });

    d.fill();
    let refused: { code?: string; message?: string } | undefined;
    for (let i = 0; i < 300 && !refused; i++) {
      await client.query(`SELECT ${i} AS n, repeat('x', 500)`).catch((e) => {
        refused = e;
      });
      await sleep(2);
    }
    expect(refused).toMatchObject({
      code: '53000',
      message: 'pgwarden: audit log unavailable, statement refused (audit failMode: closed)',
    });
    // The session goes on: every statement is refused the same way while the trail is not durable.
    await expect(client.query('SELECT 1')).rejects.toMatchObject({ code: '53000' });
    const ready = await http('/readyz');
    expect(ready.status).toBe(503);
    expect(ready.body).toContain('audit sink not durable');
    const metrics = (await http('/metrics')).body;
    expect(metrics).toMatch(/pgwarden_audit_fsync_failures_total\{sink="file"\} [1-9]/);
    expect(metrics).toMatch(/pgwarden_audit_ready\{sink="file"\} 0/);
    expect(lines.filter((l) => /fdatasync failed/.test(l.msg))).toMatchObject([{ level: 'error' }]);
  }, 60_000);

  it('sidecar, failMode open: statements keep running, the failures are counted and logged', async () => {
    const d = disk();
    const { client, http, lines } = await sidecarOn(d, 'open');
    d.fill();
    let n = 0;
    for (let i = 0; i < 300 && !/fsync_failures_total\{sink="file"\} [1-9]/.test((await http('/metrics')).body); i++) {
      expect((await client.query(`SELECT ${i} AS n, repeat('x', 500)`)).rows[0].n).toBe(i);
      n++;
      await sleep(2);
    }
    expect(n).toBeLessThan(300);
    // Still served after the failure.
    expect((await client.query("SELECT 'after' AS x")).rows).toEqual([{ x: 'after' }]);
    expect(lines.filter((l) => /fdatasync failed/.test(l.msg))).toMatchObject([{ level: 'error' }]);
  }, 60_000);
});
