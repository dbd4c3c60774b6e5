import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { AUDIT_STREAM, verifyChain } from '@pgwarden/policy';
import { Registry } from 'prom-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startNats, type TestNats } from '../../../test/harness/index.js';
import { createAuditRecorder } from './audit-recorder.js';
import { NatsAuditSink } from './nats-sink.js';
import { readAuditStream, selectRecord, seqsBySession, sessionInfo } from './nats-test-kit.js';

/** No heads or checkpoint tick: the tests count the events they sent. */
const NO_TICK = { checkpointIntervalMs: 600_000 };
const STATEMENTS = 50;

let nats: TestNats;
const dirs: string[] = [];
const spoolDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'pgwarden-spool-recovery-'));
  dirs.push(d);
  return d;
};

beforeAll(async () => {
  nats = await startNats();
});
afterEach(async () => {
  await nats?.start();
  const nc = await connect({ servers: nats.url });
  await (await jetstreamManager(nc)).streams.purge(AUDIT_STREAM).catch(() => {});
  await nc.close();
});
afterAll(async () => {
  await nats?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A run with NATS away: session `id`'s events all go to the spool in `dir`, and the run stops. */
async function spoolOneRun(dir: string, id: string): Promise<void> {
  await nats.kill();
  const sink = new NatsAuditSink({ servers: [nats.url], spool: { dir, maxBytes: 1e8 }, registry: new Registry() });
  const s = createAuditRecorder(sink, { instanceId: `${id}-first`, ...NO_TICK }).openSession(sessionInfo(id));
  for (let i = 1; i <= STATEMENTS; i++) s.statement(selectRecord(i));
  s.end({});
  for (let i = 0; i < 400 && (sink.stats().spooled ?? 0) < STATEMENTS + 2; i++)
    await new Promise((r) => setTimeout(r, 25));
  expect(sink.stats()).toMatchObject({ spooled: STATEMENTS + 2, published: 0 });
  await sink.close(200);
}

/** The spool's one segment, as lines (newline dropped), and a way to write it back. */
function segment(dir: string) {
  const name = readdirSync(dir).find((f) => f.endsWith('.jsonl'))!;
  const path = join(dir, name);
  const lines = readFileSync(path, 'utf8').split('\n').slice(0, -1);
  return { lines, write: (ls: string[]) => writeFileSync(path, ls.map((l) => `${l}\n`).join('')) };
}
const lineOf = (lines: string[], id: string, seq: number) =>
  lines.findIndex((l) => l.includes(`"session":{"id":"${id}","seq":${seq}}`));

/** A sidecar started on the spool with NATS back: it drains it. Returns the stream and its dropped counter. */
async function drain(dir: string, id: string) {
  await nats.start();
  const registry = new Registry();
  const logs: string[] = [];
  const sink = new NatsAuditSink({
    servers: [nats.url],
    spool: { dir, maxBytes: 1e8 },
    registry,
    log: (level, msg) => logs.push(`${level} ${msg}`),
  });
  createAuditRecorder(sink, { instanceId: `${id}-second`, ...NO_TICK });
  await sink.whenIdle(20_000);
  const dropped = await registry.getSingleMetricAsString('pgwarden_audit_dropped_total');
  await sink.close();
  const events = (await readAuditStream(nats.url)).map((m) => m.event);
  return { events, dropped, logs };
}

describe('NATS sink draining a spool that is not as its writer left it (real files, real nats-server)', () => {
  it('a line damaged in the middle, tabs kept, is not sent: it is declared in an audit.gap (spool_corrupt)', async () => {
    const dir = spoolDir();
    await spoolOneRun(dir, 'dmg');
    const seg = segment(dir);
    const k = lineOf(seg.lines, 'dmg', 20);
    const line = seg.lines[k];
    // The statement's text altered on disk, everything around it kept: the JSON still parses, both tabs are there.
    expect(line).toContain('SELECT 19');
    seg.lines[k] = line.replace('SELECT 19', 'DROP TABLE x');
    expect(seg.lines[k].split('\t')).toHaveLength(line.split('\t').length);
    seg.write(seg.lines);

    const { events, dropped, logs } = await drain(dir, 'dmg');
    // Before the checksum this event was published, altered, as seq 20 (its chain then showed it tampered).
    expect(events.some((e) => JSON.stringify(e).includes('DROP TABLE'))).toBe(false);
    const seqs = seqsBySession(events).get('dmg');
    expect(seqs).toEqual(Array.from({ length: STATEMENTS + 2 }, (_, i) => i + 1).filter((s) => s !== 20));
    const gaps = events.filter((e) => e.type === 'audit.gap');
    expect(gaps.map((e) => e.gap)).toEqual([expect.objectContaining({ dropped: 1, cause: 'spool_corrupt' })]);
    expect(verifyChain(events).tampered).toEqual([]);
    expect(dropped).toMatch(/pgwarden_audit_dropped_total\{sink="nats",cause="spool_corrupt"\} 1/);
    expect(logs.filter((l) => l.includes('damaged line'))).toHaveLength(1);
  });

  it('a spool an older build left (no checksums; a piece with the next record joined to it) is drained', async () => {
    const dir = spoolDir();
    await spoolOneRun(dir, 'old');
    const seg = segment(dir);
    // The bytes of builds before the checksum: `<subject>\t<msgID>\t<event JSON>`.
    const older = seg.lines.map((l) => l.replace(/\t[0-9a-f]{8}$/, ''));
    // Their cut-short write on an append-only segment: half of seq 10's line, then seq 11's on the same line.
    const k = lineOf(older, 'old', 10);
    older.splice(k, 2, older[k].slice(0, older[k].length >> 1) + older[k + 1]);
    seg.write(older);

    const { events, dropped } = await drain(dir, 'old');
    const seqs = seqsBySession(events).get('old');
    expect(seqs).toEqual(Array.from({ length: STATEMENTS + 2 }, (_, i) => i + 1).filter((s) => s !== 10));
    const statements = events.filter((e) => e.session.id === 'old' && e.type === 'statement');
    expect(new Set(statements.map((e) => e.policy?.name))).toEqual(new Set(['analytics.agent']));
    // The piece is declared (it may hold what a write lost); the chain shows no altered event.
    const gaps = events.filter((e) => e.type === 'audit.gap');
    expect(gaps.map((e) => e.gap)).toEqual([expect.objectContaining({ dropped: 1, cause: 'spool_corrupt' })]);
    expect(verifyChain(events).tampered).toEqual([]);
    expect(dropped).toMatch(/cause="spool_corrupt"\} 1/);
  });
});
