import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { AUDIT_STREAM, auditEventSchema, auditSubject, canonicalJson, verifyChain } from '@pgwarden/policy';
import { Ajv } from 'ajv';
import { Registry } from 'prom-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startNats, type TestNats } from '../../../test/harness/index.js';
import { createAuditRecorder } from './audit-recorder.js';
import { createFileSink } from './line-sinks.js';
import { NatsAuditSink, SubjectReader } from './nats-sink.js';
import { readAuditStream, selectRecord, seqsBySession, sessionInfo } from './nats-test-kit.js';

/**
 * These tests count the events they sent: no heads or checkpoint tick of the recorder may add one of its own while a
 * slow connect or spool drain runs (audit-heads.test.ts covers the tick).
 */
const NO_TICK = { checkpointIntervalMs: 600_000 };

const validate = new Ajv({ allErrors: true }).compile(auditEventSchema);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const range = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

let nats: TestNats;
const dirs: string[] = [];
const spoolDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'pgwarden-audit-spool-'));
  dirs.push(d);
  return d;
};

async function purge(url: string) {
  const nc = await connect({ servers: url });
  const jsm = await jetstreamManager(nc);
  await jsm.streams.purge(AUDIT_STREAM).catch(() => {});
  await nc.close();
}

beforeAll(async () => {
  nats = await startNats();
});
// A test that fails between its kill and its restart must not leave the next ones without a server (each would then
// time out on its own, hiding which test failed).
afterEach(async () => {
  await nats?.start();
});
afterAll(async () => {
  await nats?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('NATS audit sink (real nats-server)', () => {
  it('creates the stream, publishes to pgwarden.audit.<ns>.<policy> as one batch <session>.<seq>.<hash16>+<n>; same msgID deduplicates', async () => {
    const sink = new NatsAuditSink({
      servers: [nats.url],
      spool: { dir: spoolDir(), maxBytes: 1e8 },
      registry: new Registry(),
    });
    const rec = createAuditRecorder(sink, {
      ...NO_TICK,
      instanceId: 't1',
      policy: () => ({ name: 'analytics.agent', hash: 'sha256:1' }),
    });
    const s = rec.openSession(sessionInfo('sess-a'));
    for (let i = 0; i < 5; i++) s.statement(selectRecord(i));
    s.end({});
    await sink.whenIdle(10_000);
    await sink.close();

    // The sink starts in spool mode (not connected yet); once up, all seven leave in one flush, as one message.
    const msgs = await readAuditStream(nats.url);
    expect(msgs.map((m) => m.event.session.seq)).toEqual(range(7));
    // The id names the first event's position and its hash, which nobody can publish ahead of the sidecar.
    const firstId = `sess-a.1.${msgs[0].event.hash.slice(0, 16)}+7`;
    expect(new Set(msgs.map((m) => `${m.msgID} ${m.batch}`))).toEqual(new Set([`${firstId} 7`]));
    expect(new Set(msgs.map((m) => m.subject))).toEqual(new Set(['pgwarden.audit.agents.analytics_agent']));
    for (const m of msgs) expect(validate(m.event), JSON.stringify(validate.errors)).toBe(true);
    expect(verifyChain(msgs.map((m) => m.event))).toMatchObject({ ok: true, sessions: 1, events: 7 });

    const nc = await connect({ servers: nats.url });
    const body = msgs.map((m) => JSON.stringify(m.event)).join('\n');
    const again = await jetstream(nc).publish(msgs[0].subject, body, { msgID: firstId });
    expect(again.duplicate).toBe(true);
    // Publishing the bare position first, as someone who only knew the session id could, no longer shadows it.
    const guess = await jetstream(nc).publish(msgs[0].subject, '{}', { msgID: 'sess-a.1+7' });
    expect(guess.duplicate).toBe(false);
    const info = await (await jetstreamManager(nc)).streams.info(AUDIT_STREAM);
    expect(info.state.messages).toBe(2);
    expect(info.config.duplicate_window).toBeGreaterThanOrEqual(120e9);
    await nc.close();
    await purge(nats.url);
  });

  it('NATS killed and restarted mid-stream: everything spools, drains in order, none lost, none duplicated', async () => {
    const dir = spoolDir();
    const sink = new NatsAuditSink({
      servers: [nats.url],
      spool: { dir, maxBytes: 1e8, segmentBytes: 64 * 1024 },
      publishTimeoutMs: 1000,
      registry: new Registry(),
    });
    const rec = createAuditRecorder(sink, { instanceId: 't2', ...NO_TICK });
    const sessions = ['k1', 'k2', 'k3'].map((id) => rec.openSession(sessionInfo(id)));
    const perSession = 600;
    for (let i = 0; i < perSession; i++) {
      for (const s of sessions) s.statement(selectRecord(i));
      if (i === 200) await nats.kill();
      if (i === 400) await nats.start();
      if (i % 20 === 0) await sleep(5);
    }
    for (const s of sessions) s.end({});
    await sink.whenIdle(20_000);
    const stats = sink.stats();
    expect(stats.spooled).toBeGreaterThan(0);
    expect(stats.dropped).toBe(0);
    expect(stats.mode).toBe('direct');
    await sink.close();

    const events = (await readAuditStream(nats.url)).map((m) => m.event);
    const seqs = seqsBySession(events);
    for (const id of ['k1', 'k2', 'k3']) expect(seqs.get(id)).toEqual(range(perSession + 2));
    const report = verifyChain(events);
    expect(report).toMatchObject({ ok: true, duplicates: 0, open: [] });
    // Within a session the stream holds events in seq order (oldest first across the outage).
    for (const id of ['k1', 'k2', 'k3']) {
      const inStreamOrder = events.filter((e) => e.session.id === id).map((e) => e.session.seq);
      expect(inStreamOrder).toEqual(range(perSession + 2));
    }
    await purge(nats.url);
  });

  it('returns to direct mode once the spool is drained while traffic never stops; a second outage then loses nothing', async () => {
    const dir = spoolDir();
    await nats.kill();
    const sink = new NatsAuditSink({
      servers: [nats.url],
      spool: { dir, maxBytes: 1e8, segmentBytes: 64 * 1024 },
      publishTimeoutMs: 1000,
      registry: new Registry(),
    });
    const rec = createAuditRecorder(sink, { instanceId: 't2b', ...NO_TICK });
    const s = rec.openSession(sessionInfo('steady'));
    let n = 0;
    // Steady traffic throughout: a few statements every millisecond or so, never a quiet moment.
    const emitFor = async (ms: number, until?: () => boolean) => {
      const end = Date.now() + ms;
      while (Date.now() < end && !until?.()) {
        for (let k = 0; k < 4; k++) s.statement(selectRecord(n++));
        await sleep(1);
      }
    };
    await emitFor(150);
    expect(sink.stats().mode).toBe('spool');
    await nats.start();
    const spooledAtRestart = sink.stats().spooled;
    // Before the fix the sink stayed in spool mode for as long as statements kept coming.
    await emitFor(8000, () => sink.stats().mode === 'direct');
    expect(sink.stats().mode).toBe('direct');
    await emitFor(300);
    // Nothing new went to disk once direct again, and the delivered segments are gone.
    const direct = sink.stats();
    expect(direct.spooled).toBeLessThan(spooledAtRestart + 2000);
    const spooledWhenDirect = direct.spooled;
    await emitFor(200);
    expect(sink.stats().spooled).toBe(spooledWhenDirect);
    expect(sink.stats().spoolBytes).toBe(0);
    // A second outage after leaving spool mode: spills, then drains, in order.
    await nats.kill();
    await emitFor(150);
    expect(sink.stats().mode).toBe('spool');
    await nats.start();
    await emitFor(300);
    s.end({});
    await sink.whenIdle(20_000);
    expect(sink.stats()).toMatchObject({ mode: 'direct', dropped: 0, spoolBytes: 0 });
    await sink.close();

    const events = (await readAuditStream(nats.url)).map((m) => m.event);
    const inStreamOrder = events.filter((e) => e.session.id === 'steady').map((e) => e.session.seq);
    expect(inStreamOrder).toEqual(range(n + 2));
    expect(verifyChain(events)).toMatchObject({ ok: true, duplicates: 0, open: [] });
    await purge(nats.url);
  });

  it('a restarted sidecar drains the spool a previous run left behind', async () => {
    const dir = spoolDir();
    await nats.kill();
    const first = new NatsAuditSink({ servers: [nats.url], spool: { dir, maxBytes: 1e8 }, registry: new Registry() });
    const rec = createAuditRecorder(first, { instanceId: 't3', ...NO_TICK });
    const s = rec.openSession(sessionInfo('r1'));
    for (let i = 0; i < 300; i++) s.statement(selectRecord(i));
    s.end({});
    await sleep(50);
    expect(first.stats()).toMatchObject({ mode: 'spool', spooled: 302, published: 0 });
    await first.close(200);

    await nats.start();
    const second = new NatsAuditSink({ servers: [nats.url], spool: { dir, maxBytes: 1e8 }, registry: new Registry() });
    expect(second.stats().mode).toBe('spool');
    await second.whenIdle(15_000);
    expect(second.stats()).toMatchObject({ mode: 'direct', spoolBytes: 0 });
    await second.close();
    const events = (await readAuditStream(nats.url)).map((m) => m.event);
    expect(seqsBySession(events).get('r1')).toEqual(range(302));
    await purge(nats.url);
  });

  it('spool cap: refuses (not ready), counts drops, and records an audit.gap naming the lost seqs once it can write again', async () => {
    const dir = spoolDir();
    const registry = new Registry();
    await nats.kill();
    const sink = new NatsAuditSink({
      servers: [nats.url],
      spool: { dir, maxBytes: 20_000, segmentBytes: 4096 },
      registry,
    });
    const rec = createAuditRecorder(sink, { instanceId: 't4', ...NO_TICK });
    const s = rec.openSession(sessionInfo('cap'));
    let sent = 1;
    while (sink.ready() && sent < 500) {
      s.statement(selectRecord(sent));
      sent++;
      await new Promise((r) => setImmediate(r));
    }
    expect(sink.ready()).toBe(false);
    for (let i = 0; i < 5; i++) s.statement(selectRecord(i));
    sent += 5;
    // The sink takes them on a later turn: on a loaded machine (CI's whole suite) 20 ms was not always enough.
    for (let i = 0; i < 200 && sink.stats().dropped < 5; i++) await sleep(25);
    // Failed now and then under load with 0 drops: a rotated segment's fd was closed under its queued fdatasync, the
    // EBADF read as a failed sync and the sink turned not ready before the spool was full (disk-spool.test.ts).
    expect(sink.stats().dropped, JSON.stringify({ ...sink.stats(), ready: sink.ready() })).toBeGreaterThanOrEqual(5);
    const metric = await registry.getSingleMetricAsString('pgwarden_audit_dropped_total');
    expect(metric).toMatch(/pgwarden_audit_dropped_total\{sink="nats",cause="spool_full"\} \d+/);

    await nats.start();
    for (let i = 0; i < 100 && !sink.ready(); i++) await sleep(50);
    expect(sink.ready()).toBe(true);
    s.statement(selectRecord(9999));
    sent++;
    s.end({});
    await sink.whenIdle(15_000);
    await sink.close();

    const events = (await readAuditStream(nats.url)).map((m) => m.event);
    const gapEvents = events.filter((e) => e.type === 'audit.gap');
    expect(gapEvents).toHaveLength(1);
    const declared = gapEvents[0].gap!.sessions;
    const report = verifyChain(events);
    // The chain shows exactly the holes the gap event declares (plus nothing else).
    expect(report.tampered).toEqual([]);
    expect(report.gaps.map((g) => ({ id: g.session, fromSeq: g.fromSeq, toSeq: g.toSeq }))).toEqual(declared);
    const lost = declared.reduce((n, g) => n + g.toSeq - g.fromSeq + 1, 0);
    expect(lost).toBe(gapEvents[0].gap!.dropped);
    expect(events.filter((e) => e.session.id === 'cap')).toHaveLength(sent + 1 - lost);
    await purge(nats.url);
  });

  it('recreates the stream when it is deleted under it, and delivers everything', async () => {
    const sink = new NatsAuditSink({
      servers: [nats.url],
      spool: { dir: spoolDir(), maxBytes: 1e8 },
      publishTimeoutMs: 1000,
      registry: new Registry(),
    });
    const s = createAuditRecorder(sink, { instanceId: 't6', ...NO_TICK }).openSession(sessionInfo('del'));
    for (let i = 0; i < 50; i++) s.statement(selectRecord(i));
    await sink.whenIdle(10_000);
    const nc = await connect({ servers: nats.url });
    await (await jetstreamManager(nc)).streams.delete(AUDIT_STREAM);
    await nc.close();
    for (let i = 0; i < 50; i++) s.statement(selectRecord(i));
    s.end({});
    await sink.whenIdle(15_000);
    expect(sink.stats().failures).toBeGreaterThan(0);
    await sink.close();
    // The first 50 went with the deleted stream; the rest arrived in the recreated one, in order.
    const seqs = seqsBySession((await readAuditStream(nats.url)).map((m) => m.event)).get('del');
    expect(seqs).toEqual(range(51).map((i) => i + 51));
    await purge(nats.url);
  });

  it('maxBatchEvents 1: one message per event, id <session>.<seq>.<hash16>, no batch header (as before batching)', async () => {
    const sink = new NatsAuditSink({
      servers: [nats.url],
      spool: { dir: spoolDir(), maxBytes: 1e8 },
      maxBatchEvents: 1,
      registry: new Registry(),
    });
    const s = createAuditRecorder(sink, { instanceId: 't7', ...NO_TICK }).openSession(sessionInfo('one'));
    for (let i = 0; i < 4; i++) s.statement(selectRecord(i));
    await sink.whenIdle(10_000);
    await sink.close();
    const msgs = await readAuditStream(nats.url);
    expect(msgs.map((m) => `${m.msgID} ${m.batch}`)).toEqual(
      msgs.map((m, i) => `one.${i + 1}.${m.event.hash.slice(0, 16)} 1`),
    );
    expect(msgs).toHaveLength(5);
    await purge(nats.url);
  });

  it('drops (and counts) an event too large for NATS instead of blocking the log behind it', async () => {
    const sink = new NatsAuditSink({
      servers: [nats.url],
      spool: { dir: spoolDir(), maxBytes: 1e8 },
      registry: new Registry(),
    });
    sink.emit({ id: 'big.1', session: { id: 'big', seq: 1 }, blob: 'x'.repeat(1_100_000) });
    sink.emit({ id: 'big.2', session: { id: 'big', seq: 2 } });
    await sink.whenIdle(10_000);
    expect(sink.stats()).toMatchObject({ dropped: 1, published: 1 });
    await sink.close();
    expect((await readAuditStream(nats.url)).map((m) => m.msgID)).toEqual(['big.2']);
    await purge(nats.url);
  });

  it('throughput with acks (micro-measure, compared with the file sink)', async () => {
    const n = 20_000;
    const fileSink = createFileSink({ path: join(spoolDir(), 'audit.jsonl'), registry: new Registry() });
    const fs = createAuditRecorder(fileSink, { instanceId: 't5f', ...NO_TICK }).openSession(sessionInfo('tpf'));
    const f0 = performance.now();
    for (let i = 0; i < n; i++) {
      fs.statement(selectRecord(i));
      if (i % 500 === 0) await new Promise((r) => setImmediate(r));
    }
    await fileSink.whenIdle?.();
    const fileRate = Math.round(n / ((performance.now() - f0) / 1000));
    await fileSink.close();

    const sink = new NatsAuditSink({
      servers: [nats.url],
      spool: { dir: spoolDir(), maxBytes: 1e9 },
      registry: new Registry(),
    });
    const rec = createAuditRecorder(sink, { instanceId: 't5', ...NO_TICK });
    const s = rec.openSession(sessionInfo('tp'));
    s.statement(selectRecord(0));
    await sink.whenIdle(10_000); // connected and in direct mode
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      s.statement(selectRecord(i));
      if (i % 500 === 0) await new Promise((r) => setImmediate(r));
    }
    await sink.whenIdle(60_000);
    const secs = (performance.now() - t0) / 1000;
    const rate = Math.round(n / secs);
    console.log(`audit sinks: NATS ${rate} events/s acked (${n} in ${secs.toFixed(2)} s); file ${fileRate} events/s`);
    expect(sink.stats().dropped).toBe(0);
    await sink.close();
    await purge(nats.url);
  });
});

describe('SubjectReader', () => {
  it('reads the subject of canonical event JSON as parsing it would, also from text that mimics the keys', () => {
    const reader = new SubjectReader();
    const base = { v: 1, type: 'statement', id: 's.1', session: { id: 's', seq: 1 }, prevHash: null, hash: 'h' };
    const events: Record<string, unknown>[] = [
      { ...base, identity: { groups: [], namespace: 'agents' }, policy: { hash: 'x', name: 'analytics.agent' } },
      { ...base, identity: { groups: ['a]"b'], namespace: 'n.s' }, masking: { cells: 2, columns: ['c'] } },
      { ...base, policy: { hash: 'x', name: 'p' } },
      { ...base },
      // Key-like text inside strings, and an identity nested before the top-level one.
      {
        ...base,
        approval: { identity: { namespace: 'wrong' } },
        identity: { groups: [], namespace: 'right' },
        statement: { text: 'SELECT \'"identity":{"namespace":"evil"},"prevHash":\'' },
      },
      { ...base, statement: { text: '"identity":{"namespace":"evil"},"policy":{"name":"evil"},"prevHash":' } },
    ];
    for (const e of events) {
      const json = canonicalJson(e);
      expect(reader.of(json), json).toBe(auditSubject(JSON.parse(json)));
      expect(reader.of(json), json).toBe(auditSubject(e)); // again, from what it remembered
    }
    expect(reader.of(canonicalJson(events[4]))).toBe('pgwarden.audit.right._');
  });
});
