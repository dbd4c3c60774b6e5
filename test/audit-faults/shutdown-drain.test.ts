import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AuditEvent } from '@pgwarden/policy';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, inject, it } from 'vitest';
import { readAuditStream } from '../../sidecar/src/audit/nats-test-kit.js';
import { startNats, type TestNats } from '../harness/index.js';
import { BUILT, type Proc, spoolingSidecar } from './processes.js';

/**
 * A sidecar stopped (SIGTERM) while NATS is down, its events in the spool. A pod deletion takes the spool (an emptyDir)
 * with it, so the sidecar goes on delivering for --audit-drain-timeout and, when NATS stays away, names what it leaves
 * behind in one error log line: the only record of those events that outlives the pod.
 */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

const exitOf = (p: Proc) =>
  new Promise<number | null>((resolve) => {
    if (p.child.exitCode !== null || p.child.signalCode !== null) resolve(p.child.exitCode);
    else p.child.once('exit', (code) => resolve(code));
  });

/** Per session, the seqs as ranges `1-4,7` (the report's form). */
function ranges(events: { session: { id: string; seq: number } }[]): Record<string, string> {
  const by = new Map<string, number[]>();
  for (const e of events) by.set(e.session.id, [...(by.get(e.session.id) ?? []), e.session.seq]);
  const out: Record<string, string> = {};
  for (const [id, seqs] of by) {
    seqs.sort((a, b) => a - b);
    const parts: string[] = [];
    for (let i = 0; i < seqs.length; ) {
      let j = i;
      while (j + 1 < seqs.length && seqs[j + 1] === seqs[j] + 1) j++;
      parts.push(i === j ? String(seqs[i]) : `${seqs[i]}-${seqs[j]}`);
      i = j + 1;
    }
    out[id] = parts.join(',');
  }
  return out;
}

// Runs the built code (dist/) in separate processes: skipped without a build outside CI; under CI a missing build
// fails it instead, so nothing is skipped silently there.
describe.skipIf(!BUILT && !process.env.CI)('sidecar stopped while NATS is down', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-shutdown-drain-'));
  let nats: TestNats | undefined;
  let sidecar: Proc | undefined;

  afterEach(async () => {
    await sidecar?.kill();
    await nats?.stop();
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** A sidecar with NATS up, one session's statements delivered, then NATS killed and `marker` statements spooled. */
  async function outage(drainTimeout: string, marker: string) {
    const shared = inject('pg');
    nats = await startNats();
    const { port, spool, start } = await spoolingSidecar(
      dir,
      `postgres://${shared.host}:${shared.port}/app?sslmode=disable`,
      () => nats!.url,
      ['--audit-drain-timeout', drainTimeout, '--grace-period', '1s'],
    );
    sidecar = await start();
    const c = new pg.Client({ host: '127.0.0.1', port, user: 'agent', database: 'app' });
    c.on('error', () => {});
    await c.connect();
    await c.query(`SELECT 'before-outage'`);
    const url = nats.url;
    await until('the first statement in the stream', async () =>
      (await readAuditStream(url)).some((m) => m.event.statement?.text === `SELECT 'before-outage'`),
    );
    await nats.kill();
    const spooled: string[] = [];
    for (let i = 0; i < 20; i++) {
      const sql = `SELECT '${marker}-${i}'`;
      await c.query(sql);
      spooled.push(sql);
    }
    await c.end();
    return { spool, spooled };
  }

  it('NATS back within --audit-drain-timeout: every event is delivered, nothing is reported lost, exit 0', async () => {
    const { spooled } = await outage('60s', 'drained');
    const proc = sidecar!;
    const exited = exitOf(proc);
    proc.child.kill('SIGTERM');
    // NATS comes back once the drain has begun (the sessions closed, their last events emitted), or once the process
    // has gone without one (as it did before the drain: the events then wait in a spool no one reads).
    await until(
      'the drain to start',
      () => /delivering them for up to 60000 ms/.test(proc.output()) || proc.child.exitCode !== null,
    );
    await nats!.start();
    expect(await exited).toBe(0);
    expect(proc.output()).not.toContain('not delivered to NATS at shutdown');

    const events = (await readAuditStream(nats!.url)).map((m) => m.event);
    const texts = new Set(events.map((e) => e.statement?.text));
    expect(spooled.filter((sql) => !texts.has(sql))).toEqual([]);
    const session = events.find((e) => e.statement?.text === spooled[0])!.session.id;
    expect(events.some((e) => e.session.id === session && e.type === 'session.end')).toBe(true);
  }, 120_000);

  it('NATS down throughout: exits 0 after the drain time with one error line naming the sessions and seqs left, no SQL', async () => {
    const { spool, spooled } = await outage('3s', 'secret-marker');
    const proc = sidecar!;
    const exited = exitOf(proc);
    const stoppedAt = Date.now();
    proc.child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(Date.now() - stoppedAt).toBeGreaterThanOrEqual(3000);

    // What the spool holds past its cursor is what the report must name: every line's event, by session and seq.
    const cursor: { segment: number; offset: number } = existsSync(join(spool, 'cursor'))
      ? JSON.parse(readFileSync(join(spool, 'cursor'), 'utf8'))
      : { segment: 0, offset: 0 };
    const left: AuditEvent[] = readdirSync(spool)
      .filter((f) => /^audit-\d+\.jsonl$/.test(f) && Number(f.slice(6, -6)) >= cursor.segment)
      .sort()
      .flatMap((f) => {
        const text = readFileSync(join(spool, f));
        const from = Number(f.slice(6, -6)) === cursor.segment ? cursor.offset : 0;
        return text.subarray(from).toString('utf8').split('\n').filter(Boolean);
      })
      .map((l) => JSON.parse(l.split('\t')[2]) as AuditEvent);
    const statements = left.filter((e) => e.type === 'statement').map((e) => e.statement?.text);
    expect(statements).toEqual(spooled);

    const lines = proc
      .output()
      .split('\n')
      .filter((l) => l.includes('not delivered to NATS at shutdown'));
    expect(lines).toHaveLength(1);
    const line = JSON.parse(lines[0]) as {
      level: number;
      msg: string;
      undelivered: { events: number; spooled: number; memoryOnly: number; sessions: { id: string; seqs: string }[] };
    };
    expect(line.level).toBe(50);
    expect(line.msg).toContain(spool);
    expect(line.msg).toMatch(/LOST if the pod is deleted/);
    expect(line.undelivered).toMatchObject({
      events: left.length,
      spooled: left.length,
      memoryOnly: 0,
      unnamed: 0,
      spoolDir: spool,
    });
    expect(Object.fromEntries(line.undelivered.sessions.map((s) => [s.id, s.seqs]))).toEqual(ranges(left));
    // Named once already as the drain started (a container killed before it ends leaves that line): the same events.
    const starts = proc
      .output()
      .split('\n')
      .filter((l) => l.includes('not yet delivered to NATS at shutdown'))
      .map((l) => JSON.parse(l) as typeof line);
    expect(starts).toHaveLength(1);
    expect(starts[0].level).toBe(40);
    expect(starts[0].msg).toMatch(/delivering them for up to 3000 ms: if the container is killed first, they are LOST/);
    expect(Object.fromEntries(starts[0].undelivered.sessions.map((s) => [s.id, s.seqs]))).toEqual(ranges(left));
    // Positions only: no statement text in the logs, spooled or not.
    expect(proc.output()).not.toContain('secret-marker');
    expect(proc.output()).not.toContain('before-outage');
  }, 120_000);
});
