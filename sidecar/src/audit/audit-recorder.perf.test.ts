import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cpuUsage } from 'node:process';
import { type AuditEvent, verifyChain } from '@pgwarden/policy';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import type { SessionInfo, StatementRecord, Verdict } from '../proxy/hooks.js';
import { createAuditRecorder } from './audit-recorder.js';
import type { AuditSink } from './audit-sink.js';
import { createFileSink } from './line-sinks.js';

/**
 * Repeatable cost of the audit path per statement: pgbench-like StatementRecords (`-S`: one SELECT by key) through
 * the recorder (event, canonical JSON, sha256 chain) into a null object sink (generic encoding), a null text sink
 * (statement events encoded directly, statement-json.ts) and into the file sink (a text sink), 8 statements per
 * event-loop turn as 8 pgbench clients produce them. Prints µs of process CPU per event; PGWARDEN_AUDIT_PERF_N
 * sets the count (default 5000 keeps it a quick test). For a profile: node --cpu-prof on the same loop.
 */
const N = Number(process.env.PGWARDEN_AUDIT_PERF_N ?? 5000);
const dir = mkdtempSync(join(tmpdir(), 'pgwarden-audit-perf-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const info: SessionInfo = {
  id: '3f0c1a9e-5d2b-4c7a-9e61-0b8f2d4c6a10',
  startedAt: new Date(),
  client: { address: '127.0.0.1', port: 40000 },
  startup: { user: 'bench', database: 'bench', params: { user: 'bench' } },
  identity: { groups: [] },
  upstream: { host: '127.0.0.1', port: 5432, database: 'bench', user: 'bench', tls: false },
};
const verdict: Verdict = { action: 'allow', rule: 'allow-all', reason: 'no policy configured' };
const record = (i: number): StatementRecord => ({
  request: {
    sql: `SELECT abalance FROM pgbench_accounts WHERE aid = ${(i * 7919) % 100_000};`,
    protocol: 'simple',
    txStatus: 'I',
  },
  verdict,
  results: [{ tag: 'SELECT 1', rows: 1, bytes: 11 }],
  startedAt: new Date(),
  durationMs: 0.123456,
  upstreamMs: 0.1,
  heldMs: 0,
});

async function run(sink: AuditSink): Promise<number> {
  // No heads tick within a run: the file's events are counted exactly below.
  const session = createAuditRecorder(sink, { instanceId: 'perf', checkpointIntervalMs: 600_000 }).openSession(info);
  const cpu0 = cpuUsage();
  for (let i = 0; i < N; ) {
    for (let k = 0; k < 8 && i < N; k++, i++) session.statement(record(i));
    await new Promise((r) => setImmediate(r));
  }
  await sink.whenIdle?.();
  const cpu = cpuUsage(cpu0);
  session.end({});
  await sink.close();
  return (cpu.user + cpu.system) / N;
}

describe('audit recorder cost per statement', () => {
  it('null sink and file sink: every event written, chained and verifiable', async () => {
    let seen = 0;
    const nullSink: AuditSink = { emit: () => void seen++, ready: () => true, close: async () => {} };
    let texts = 0;
    const textSink: AuditSink = {
      emit: () => expect.fail('a text sink gets text'),
      emitJson: () => void texts++,
      ready: () => true,
      close: async () => {},
    };
    await run(nullSink); // warm-up: JIT, caches
    await run(textSink);
    const nullUs = await run(nullSink);
    const textUs = await run(textSink);
    const path = join(dir, 'perf.jsonl');
    const fileUs = await run(createFileSink({ path, fsync: 'batch', registry: new Registry() }));
    console.log(
      `audit per statement (N=${N}): null object sink ${nullUs.toFixed(1)} µs CPU, null text sink ${textUs.toFixed(1)} µs CPU, file sink ${fileUs.toFixed(1)} µs CPU`,
    );
    expect(seen).toBe(2 * (N + 2));
    expect(texts).toBe(2 * (N + 2));
    const events = readFileSync(path, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as AuditEvent);
    expect(events).toHaveLength(N + 2);
    expect(events.filter((e) => e.type === 'statement')).toHaveLength(N);
    expect(events[1].statement?.text).toBe('SELECT abalance FROM pgbench_accounts WHERE aid = 0;');
    expect(verifyChain(events)).toMatchObject({ ok: true, sessions: 1, events: N + 2 });
  });
});
