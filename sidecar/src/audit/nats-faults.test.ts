import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AuditEvent, verifyChain } from '@pgwarden/policy';
import pg from 'pg';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { startNats, type TestNats } from '../../../test/harness/index.js';
import { startSidecar } from '../start-sidecar.js';
import { createAuditRecorder } from './audit-recorder.js';
import { NatsAuditSink } from './nats-sink.js';
import { readAuditStream, selectRecord, seqsBySession, sessionInfo } from './nats-test-kit.js';

/**
 * Faults that sidecar-faults.test.ts and nats-sink.test.ts (a killed nats-server, a deleted stream, a spool cap)
 * do not inject: a server that stops answering without closing its sockets, a server with a smaller max_payload,
 * a spool directory on a full disk. Real nats-server each time; these tests count the events they sent, so the
 * recorder's heads tick is off.
 */
const NO_TICK = { checkpointIntervalMs: 600_000 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const range = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

const cleanup: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});
const spoolDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'pgwarden-nats-faults-'));
  cleanup.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
};
const natsServer = async (config?: string): Promise<TestNats> => {
  const n = await startNats(config === undefined ? {} : { config });
  cleanup.push(() => n.stop());
  return n;
};
/** The seq ranges an audit.gap event declares equal the holes the chains show, and it counts them all. */
function expectDeclaredGaps(events: AuditEvent[], dropped: number): void {
  const gapEvents = events.filter((e) => e.type === 'audit.gap');
  expect(gapEvents.reduce((n, e) => n + (e.gap?.dropped ?? 0), 0)).toBe(dropped);
  const report = verifyChain(events);
  expect(report.tampered).toEqual([]);
  expect(report.duplicates).toBe(0);
  const declared = gapEvents.flatMap((e) => e.gap?.sessions ?? []);
  expect(report.gaps.map((g) => ({ id: g.session, fromSeq: g.fromSeq, toSeq: g.toSeq }))).toEqual(declared);
}

describe('NATS audit sink: faults beyond a killed server', () => {
  it('nats-server paused (SIGSTOP): acks time out, events spool, the window stays bounded, none lost or repeated after SIGCONT', async () => {
    const nats = await natsServer();
    const maxQueue = 1000;
    const sink = new NatsAuditSink({
      servers: [nats.url],
      spool: { dir: spoolDir(), maxBytes: 1e8 },
      publishTimeoutMs: 400,
      maxQueue,
      registry: new Registry(),
    });
    const rec = createAuditRecorder(sink, { instanceId: 'stop', ...NO_TICK });
    const ids = ['stop-a', 'stop-b'];
    const sessions = ids.map((id) => rec.openSession(sessionInfo(id)));
    await sink.whenIdle(10_000);
    let n = 0;
    const emitFor = async (ms: number) => {
      for (const until = Date.now() + ms; Date.now() < until; n++) {
        for (const s of sessions) s.statement(selectRecord(n));
        if (n % 10 === 0) await sleep(2);
      }
    };
    await emitFor(300);
    nats.pause();
    let maxQueued = 0;
    const pausedAt = Date.now();
    let spooled = false;
    while (Date.now() - pausedAt < 1500) {
      await emitFor(50);
      maxQueued = Math.max(maxQueued, sink.stats().queued);
      spooled ||= sink.stats().mode === 'spool';
    }
    const whilePaused = sink.stats();
    nats.resume();
    await emitFor(300);
    for (const s of sessions) s.end({});
    await sink.whenIdle(30_000);
    const stats = sink.stats();
    await sink.close();
    expect(spooled).toBe(true);
    expect(whilePaused.failures).toBeGreaterThan(0);
    expect(whilePaused.spooled).toBeGreaterThan(0);
    // Memory holds the window (a read-ahead of the spool) and what one turn added; the rest waits on disk.
    expect(maxQueued).toBeLessThanOrEqual(maxQueue + 100);
    expect(stats).toMatchObject({ dropped: 0, mode: 'direct' });

    const events = (await readAuditStream(nats.url)).map((m) => m.event);
    const seqs = seqsBySession(events);
    for (const id of ids) expect(seqs.get(id)).toEqual(range(n + 2));
    expect(verifyChain(events)).toMatchObject({ ok: true, duplicates: 0, open: [] });
  }, 60_000);

  it('a server whose max_payload is below the batch size: batches shrink to fit, an event over it alone is dropped with an audit.gap instead of blocking the log', async () => {
    const nats = await natsServer('max_payload: 16384\n');
    const sink = new NatsAuditSink({
      servers: [nats.url],
      spool: { dir: spoolDir(), maxBytes: 1e8 },
      publishTimeoutMs: 500,
      registry: new Registry(),
    });
    const rec = createAuditRecorder(sink, { instanceId: 'payload', ...NO_TICK });
    const s = rec.openSession(sessionInfo('payload'));
    const statement = (i: number, size: number) => ({
      ...selectRecord(i),
      request: { sql: `SELECT '${'x'.repeat(size)}', ${i}`, protocol: 'simple' as const, txStatus: 'I' as const },
    });
    for (let i = 0; i < 200; i++) s.statement(statement(i, i === 100 ? 20_000 : 400));
    s.end({});
    await sink.whenIdle(10_000);
    const stats = sink.stats();
    await sink.close();
    expect(stats.dropped).toBe(1);

    const events = (await readAuditStream(nats.url)).map((m) => m.event);
    // session.start is seq 1: the 101st statement is seq 102.
    expect(seqsBySession(events).get('payload')).toEqual(range(202).filter((q) => q !== 102));
    expectDeclaredGaps(events, 1);
    expect(events.find((e) => e.type === 'audit.gap')?.gap?.cause).toBe('too_large');
  }, 30_000);

  // Skipped where the tests do not run as root: a real ENOSPC needs a tmpfs mounted for it, and nothing else this
  // suite can do without privileges fills a disk without filling the machine's (sessions and CI here run as root).
  it.skipIf(process.getuid?.() !== 0)(
    'spool on a full disk while NATS is down: refuses (not ready); once NATS is back it is ready again and delivers, and the chain shows exactly the declared gap',
    async () => {
      const nats = await natsServer();
      const dir = spoolDir();
      // A real ENOSPC: a tmpfs with 64 KiB left once the spool's at-risk record (128 KiB, preallocated at open: a
      // spool that cannot create it does not start) is in (sessions and CI run as root).
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=192k,mode=0700', 'tmpfs', dir]);
      cleanup.push(() => execFileSync('umount', [dir]));
      await nats.kill();
      const sink = new NatsAuditSink({
        servers: [nats.url],
        spool: { dir, maxBytes: 1e8 },
        publishTimeoutMs: 500,
        registry: new Registry(),
      });
      const rec = createAuditRecorder(sink, { instanceId: 'full', ...NO_TICK });
      const s = rec.openSession(sessionInfo('full'));
      let i = 0;
      while (sink.ready() && i < 1000) {
        s.statement(selectRecord(i++));
        await new Promise((r) => setImmediate(r));
      }
      expect(sink.ready()).toBe(false);
      await nats.start();
      for (let t = 0; t < 200 && !sink.ready(); t++) await sleep(25);
      expect(sink.ready()).toBe(true);
      for (let k = 0; k < 20; k++) {
        s.statement(selectRecord(i++));
        await sleep(5);
      }
      expect(sink.ready()).toBe(true);
      s.end({});
      await sink.whenIdle(10_000);
      const stats = sink.stats();
      await sink.close();
      expect(stats.dropped).toBeGreaterThan(0);
      const events = (await readAuditStream(nats.url)).map((m) => m.event);
      expect(events.filter((e) => e.session.id === 'full')).toHaveLength(i + 2 - stats.dropped);
      expectDeclaredGaps(events, stats.dropped);
    },
    30_000,
  );
  it('a stream size cap (--audit-stream-max-bytes) refuses new events instead of deleting stored ones: nothing already stored is lost, the rest waits in the spool', async () => {
    const nats = await natsServer();
    const dir = spoolDir();
    const capped = (maxBytes: number) =>
      new NatsAuditSink({
        servers: [nats.url],
        spool: { dir, maxBytes: 1e8 },
        publishTimeoutMs: 500,
        maxBatchEvents: 1,
        stream: { maxBytes },
        registry: new Registry(),
      });
    const sink = capped(64 * 1024);
    const s = createAuditRecorder(sink, { instanceId: 'cap', ...NO_TICK }).openSession(sessionInfo('cap'));
    for (let i = 0; i < 400; i++) s.statement(selectRecord(i));
    for (let t = 0; t < 100 && sink.stats().failures === 0; t++) await sleep(20);
    const stats = sink.stats();
    await sink.close(100);
    expect(stats).toMatchObject({ dropped: 0, mode: 'spool' });
    expect(stats.published).toBeLessThan(401);
    const stored = seqsBySession((await readAuditStream(nats.url)).map((m) => m.event)).get('cap') ?? [];
    // The stream kept its oldest events: a full stream never deleted what the collector may not have read yet.
    expect(stored).toEqual(range(stored.length));

    // The operator lifts the cap: the next run delivers what the spool kept, in order, once each.
    const next = capped(-1);
    await next.whenIdle(10_000);
    await next.close();
    const events = (await readAuditStream(nats.url)).map((m) => m.event);
    expect(seqsBySession(events).get('cap')).toEqual(range(401));
    expect(verifyChain(events)).toMatchObject({ duplicates: 0, gaps: [], tampered: [] });
  }, 30_000);
});

describe('through the real proxy', () => {
  it('nats-server paused: statements keep flowing without waiting for the audit trail, and every one is recorded once', async () => {
    const nats = await natsServer();
    const dir = spoolDir();
    // The CLI's 5 s ack timeout, shortened so that the pause outlasts it within a few seconds.
    const sink = new NatsAuditSink({
      servers: [nats.url],
      spool: { dir, maxBytes: 1e8 },
      publishTimeoutMs: 400,
      registry: new Registry(),
    });
    const shared = inject('pg');
    const sc = await startSidecar({
      listen: { host: '127.0.0.1', port: 0 },
      upstream: { host: shared.host, port: shared.port, database: shared.database, sslmode: 'disable' },
      credentials: { username: 'app_scram', password: 'scram-pw-1' },
      audit: sink,
      auditRecorder: createAuditRecorder(sink, { instanceId: 'proxy-stop', ...NO_TICK }),
      auditFailMode: 'closed',
    });
    try {
      const c = new pg.Client({ host: '127.0.0.1', port: sc.port, user: 'agent', database: 'app', password: 'x' });
      c.on('error', () => undefined);
      await c.connect();
      let n = 0;
      let slowest = 0;
      const run = async (ms: number) => {
        for (const until = Date.now() + ms; Date.now() < until; n++) {
          const t0 = performance.now();
          expect((await c.query('SELECT $1::int AS n', [n])).rows[0].n).toBe(n);
          slowest = Math.max(slowest, performance.now() - t0);
        }
      };
      await run(200);
      nats.pause();
      slowest = 0;
      await run(1500);
      const whilePaused = { slowest, ...sink.stats() };
      nats.resume();
      await run(200);
      await c.end();
      await sleep(100);
      await sink.whenIdle(30_000);
      expect(whilePaused.failures).toBeGreaterThan(0);
      expect(whilePaused.spooled).toBeGreaterThan(0);
      expect(whilePaused.slowest).toBeLessThan(1000);
      expect(sink.stats().dropped).toBe(0);
      const events = (await readAuditStream(nats.url)).map((m) => m.event);
      expect(events.filter((e) => e.type === 'statement')).toHaveLength(n);
      expect(verifyChain(events)).toMatchObject({ ok: true, duplicates: 0, gaps: [], tampered: [] });
    } finally {
      await sc.close(500);
      await sink.close();
    }
  }, 60_000);
});

describe('without a spool (direct mode): events wait in memory for their ack', () => {
  it('nats-server paused, failMode closed: statements are refused (53000) once an ack is overdue, not after 10000 events in memory; every statement that ran is recorded', async () => {
    const nats = await natsServer();
    // The CLI's 5 s ack timeout, shortened so that the test does not wait for it; not so short that an ack a loaded
    // machine delays before the pause (CI once saw one past 400 ms) counts as overdue.
    const sink = new NatsAuditSink({ servers: [nats.url], publishTimeoutMs: 1500, registry: new Registry() });
    const shared = inject('pg');
    const sc = await startSidecar({
      listen: { host: '127.0.0.1', port: 0 },
      upstream: { host: shared.host, port: shared.port, database: shared.database, sslmode: 'disable' },
      credentials: { username: 'app_scram', password: 'scram-pw-1' },
      audit: sink,
      auditRecorder: createAuditRecorder(sink, { instanceId: 'direct-stop', ...NO_TICK }),
      auditFailMode: 'closed',
    });
    try {
      const c = new pg.Client({ host: '127.0.0.1', port: sc.port, user: 'agent', database: 'app', password: 'x' });
      // A failed assertion closes the sidecar under the session: its FATAL must not become an unhandled error.
      c.on('error', () => undefined);
      await c.connect();
      await sink.whenIdle(10_000);
      let ran = 0;
      let refused = 0;
      const query = async () => {
        try {
          expect((await c.query('SELECT $1::int AS n', [ran])).rows[0].n).toBe(ran);
          ran++;
          return true;
        } catch (err) {
          expect((err as { code?: string }).code).toBe('53000');
          refused++;
          return false;
        }
      };
      for (let i = 0; i < 50; i++) expect(await query()).toBe(true);
      await sink.whenIdle(10_000);
      nats.pause();
      // The socket stays open: only the overdue acks tell. Before: the sink stayed ready until 10000 events waited in
      // memory (or ~30 s of missed pings), every one of them lost to a crash meanwhile.
      let ranWhilePaused = 0;
      for (const until = Date.now() + 20_000; Date.now() < until && (await query()); ) ranWhilePaused++;
      expect(refused).toBe(1);
      expect(sink.ready()).toBe(false);
      const waiting = sink.stats().queued;
      expect(waiting).toBeLessThan(10_000);
      // What waits in memory is what ran since the last ack (and the refusal's own event).
      expect(waiting).toBeLessThanOrEqual(ranWhilePaused + 2);
      for (let i = 0; i < 5; i++) expect(await query()).toBe(false);
      nats.resume();
      let back = false;
      for (const until = Date.now() + 30_000; !back && Date.now() < until; ) {
        back = await query();
        if (!back) await sleep(100);
      }
      expect(back).toBe(true);
      for (let i = 0; i < 20; i++) expect(await query()).toBe(true);
      await c.end();
      await sleep(100);
      await sink.whenIdle(30_000);
      expect(sink.stats().dropped).toBe(0);
      const events = (await readAuditStream(nats.url)).map((m) => m.event);
      const statements = events.filter((e) => e.type === 'statement');
      expect(statements.filter((e) => e.decision?.action !== 'deny')).toHaveLength(ran);
      expect(statements.filter((e) => e.decision?.reason === 'audit_unavailable')).toHaveLength(refused);
      expect(verifyChain(events)).toMatchObject({ ok: true, duplicates: 0, gaps: [], tampered: [] });
    } finally {
      await sc.close(500);
      await sink.close();
    }
  }, 90_000);

  it('the memory it may take is bounded in characters too: past maxQueueChars events drop (declared) and the sink is not ready', async () => {
    const nats = await natsServer();
    const sink = new NatsAuditSink({
      servers: [nats.url],
      publishTimeoutMs: 400,
      maxQueueChars: 64 * 1024,
      registry: new Registry(),
    });
    const rec = createAuditRecorder(sink, { instanceId: 'direct-chars', ...NO_TICK });
    const s = rec.openSession(sessionInfo('direct-chars'));
    await sink.whenIdle(10_000);
    nats.pause();
    // Statements of ~10 KB of text each: a few fit under 64 KiB, the rest would only pile up in memory.
    const big = (i: number) => ({
      ...selectRecord(i),
      request: { ...selectRecord(i).request, sql: `SELECT '${'x'.repeat(10_000)}', ${i}` },
    });
    for (let i = 0; i < 20; i++) s.statement(big(i));
    const whilePaused = sink.stats();
    expect(whilePaused.queued).toBeLessThanOrEqual(8);
    expect(whilePaused.dropped).toBe(20 - whilePaused.queued);
    expect(sink.ready()).toBe(false);
    nats.resume();
    for (let i = 20; i < 25; i++) {
      // Once it is up again, events are taken (a small one now and then, as statements come).
      for (const until = Date.now() + 30_000; !sink.ready() && Date.now() < until; ) await sleep(50);
      s.statement(selectRecord(i));
    }
    s.end({});
    await sink.whenIdle(30_000);
    const dropped = sink.stats().dropped;
    await sink.close();
    const events = (await readAuditStream(nats.url)).map((m) => m.event);
    expect(events.filter((e) => e.session.id === 'direct-chars')).toHaveLength(27 - dropped);
    expectDeclaredGaps(events, dropped);
  }, 60_000);
});
