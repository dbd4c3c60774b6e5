import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { startNats, type TestNats } from '../../../test/harness/index.js';
import { NatsAuditSink } from './nats-sink.js';
import { readAuditStream } from './nats-test-kit.js';
import type { UndeliveredAudit } from './undelivered-events.js';

/** close() with events undelivered: the drain (--audit-drain-timeout) and the report of what it leaves behind. */

let nats: TestNats;
const dirs: string[] = [];
const spoolDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'pgwarden-drain-'));
  dirs.push(d);
  return d;
};

afterEach(async () => {
  await nats?.stop();
});
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** An event with a secret in its text, which no report may repeat. */
const event = (session: string, seq: number) => ({
  id: `${session}.${seq}`,
  type: 'statement',
  session: { id: session, seq },
  identity: { namespace: 'agents' },
  policy: { name: 'p' },
  statement: { text: `SELECT 'secret-${session}-${seq}'` },
});

function sink(opts: {
  spool: boolean;
  drainTimeoutMs: number;
  reports: UndeliveredAudit[];
  starts?: { report: UndeliveredAudit; drainingMs: number }[];
}) {
  const dir = opts.spool ? spoolDir() : undefined;
  return {
    dir,
    s: new NatsAuditSink({
      servers: [nats.url],
      spool: dir ? { dir, maxBytes: 1e8 } : undefined,
      publishTimeoutMs: 1000,
      drainTimeoutMs: opts.drainTimeoutMs,
      onUndelivered: (r, drainingMs) =>
        drainingMs === undefined ? opts.reports.push(r) : opts.starts?.push({ report: r, drainingMs }),
      registry: new Registry(),
    }),
  };
}

describe('NATS audit sink close(): the shutdown drain', () => {
  it('NATS back within the drain: its start names what it is to deliver, the spool is delivered and nothing is left to report', async () => {
    nats = await startNats();
    const reports: UndeliveredAudit[] = [];
    const starts: { report: UndeliveredAudit; drainingMs: number }[] = [];
    const { s, dir } = sink({ spool: true, drainTimeoutMs: 60_000, reports, starts });
    for (let i = 1; i <= 3; i++) s.emit(event('a', i));
    await s.whenIdle(20_000);
    await nats.kill();
    for (let i = 4; i <= 40; i++) s.emit(event('a', i));
    s.flush();
    // The sink knows NATS is gone (it spools): before the drain, close() then returned at once.
    const deadline = Date.now() + 20_000;
    while (s.stats().connected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(s.stats()).toMatchObject({ connected: false, mode: 'spool' });
    // NATS comes back while close() is waiting (before the drain it returned at once, leaving the spool).
    const closing = s.close();
    await nats.start();
    await closing;
    expect(reports).toEqual([]);
    // Named as the drain started, for a container killed before it ends (the pod's grace period).
    expect(starts).toEqual([
      {
        drainingMs: 60_000,
        report: {
          events: 37,
          spooled: 37,
          memoryOnly: 0,
          unnamed: 0,
          spoolDir: dir,
          sessions: [{ id: 'a', seqs: '4-40' }],
        },
      },
    ]);
    expect(JSON.stringify(starts)).not.toContain('secret');
    const seqs = (await readAuditStream(nats.url)).map((m) => m.event.session.seq);
    expect(seqs).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
  }, 90_000);

  it('NATS down throughout: after the drain time, one report names the sessions and seq ranges left in the spool', async () => {
    nats = await startNats();
    const reports: UndeliveredAudit[] = [];
    const dir = spoolDir();
    const s = new NatsAuditSink({
      servers: [nats.url],
      spool: { dir, maxBytes: 1e8 },
      publishTimeoutMs: 1000,
      drainTimeoutMs: 1500,
      onUndelivered: (r, drainingMs) => drainingMs === undefined && reports.push(r),
      registry: new Registry(),
    });
    for (let i = 1; i <= 5; i++) s.emit(event('a', i));
    await s.whenIdle(20_000);
    await nats.kill();
    for (let i = 6; i <= 10; i++) s.emit(event('a', i));
    for (let i = 1; i <= 3; i++) s.emit(event('b', i));
    s.emit(event('a', 12));
    const started = Date.now();
    await s.close();
    expect(Date.now() - started).toBeGreaterThanOrEqual(1400);
    expect(reports).toEqual([
      {
        events: 9,
        spooled: 9,
        memoryOnly: 0,
        unnamed: 0,
        spoolDir: dir,
        sessions: [
          { id: 'a', seqs: '6-10,12' },
          { id: 'b', seqs: '1-3' },
        ],
      },
    ]);
    expect(JSON.stringify(reports)).not.toContain('secret');
  }, 60_000);

  it('without a spool: what memory held is reported lost, with no spool directory', async () => {
    nats = await startNats();
    const reports: UndeliveredAudit[] = [];
    const { s } = sink({ spool: false, drainTimeoutMs: 500, reports });
    s.emit(event('a', 1));
    await s.whenIdle(20_000);
    await nats.kill();
    for (let i = 2; i <= 4; i++) s.emit(event('a', i));
    await s.close();
    expect(reports).toEqual([
      { events: 3, spooled: 0, memoryOnly: 3, unnamed: 0, sessions: [{ id: 'a', seqs: '2-4' }] },
    ]);
  }, 60_000);
});
