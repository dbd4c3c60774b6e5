import { execFileSync } from 'node:child_process';
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { AuditGap } from '@pgwarden/policy';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { AT_RISK_RECORD_BYTES, AtRiskRecord } from './at-risk-record.js';
import { createAuditRecorder } from './audit-recorder.js';
import { mountFailingDisk } from './failing-disk.js';
import { createFileSink } from './line-sinks.js';
import { NatsAuditSink } from './nats-sink.js';
import { selectRecord, sessionInfo } from './nats-test-kit.js';
import { UnsyncedEvents } from './unsynced-events.js';

const dir = mkdtempSync(join(tmpdir(), 'pgwarden-at-risk-'));
const fail = (err: Error) => {
  throw err;
};
const wrote = (u: UnsyncedEvents, id: string, from: number, to: number) => {
  for (let seq = from; seq <= to; seq++) u.wrote(id, seq);
};

describe('what failed syncs may have lost, kept across a restart', () => {
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('is preallocated, carries the ranges of a run that stopped before declaring them, and forgets them once declared', async () => {
    const path = join(dir, 'declared');
    const first = AtRiskRecord.open(path, fail);
    expect(first.carried).toBeUndefined();
    expect(statSync(path).size).toBe(AT_RISK_RECORD_BYTES);
    const u = new UnsyncedEvents(first.record);
    wrote(u, 'a', 1, 3);
    u.synced(u.syncStarting(), true);
    wrote(u, 'a', 4, 6);
    u.synced(u.syncStarting(), false);
    await first.record.close(); // the process ends here: nothing declared
    expect(statSync(path).size).toBe(AT_RISK_RECORD_BYTES);

    const second = AtRiskRecord.open(path, fail);
    expect(second.carried).toMatchObject({
      gap: { cause: 'fsync_failed', dropped: 3, sessions: [{ id: 'a', fromSeq: 4, toSeq: 6 }] },
    });
    const next = new UnsyncedEvents(second.record);
    next.restore(second.carried!);
    expect(next.take()).toMatchObject({ dropped: 3, sessions: [{ id: 'a', fromSeq: 4, toSeq: 6 }] });
    // Taken, but its event is not on disk yet: a restart now would still declare it.
    await second.record.settled();
    expect(AtRiskRecord.open(path, fail).carried).toMatchObject({ gap: { sessions: [{ id: 'a' }] } });
    next.wrote('sidecar-x', 1); // the gap event
    next.synced(next.syncStarting(), true);
    await second.record.close();
    expect(AtRiskRecord.open(path, fail).carried).toBeUndefined();
  });

  it('a sync failing before the gap event is on disk puts its ranges back, with those of the new failure', async () => {
    const path = join(dir, 'refailed');
    const { record } = AtRiskRecord.open(path, fail);
    const u = new UnsyncedEvents(record);
    wrote(u, 'a', 1, 2);
    u.synced(u.syncStarting(), false);
    expect(u.take()?.sessions).toEqual([{ id: 'a', fromSeq: 1, toSeq: 2 }]);
    u.wrote('sidecar-x', 1);
    wrote(u, 'a', 3, 3);
    u.synced(u.syncStarting(), false);
    await record.close();
    const carried = AtRiskRecord.open(path, fail).carried as { gap: AuditGap };
    expect(carried.gap.sessions).toEqual([
      { id: 'a', fromSeq: 1, toSeq: 3 },
      { id: 'sidecar-x', fromSeq: 1, toSeq: 1 },
    ]);
  });

  it('a record cut short or damaged is declared as a gap whose events are unknown, not as nothing', async () => {
    const path = join(dir, 'torn');
    const { record } = AtRiskRecord.open(path, fail);
    const u = new UnsyncedEvents(record);
    wrote(u, 'a', 1, 2);
    u.synced(u.syncStarting(), false);
    await record.close();
    const bytes = readFileSync(path);
    bytes[bytes.indexOf('"a"') + 1] = 0x62; // one byte of the ranges changed: the checksum no longer matches
    writeFileSync(path, bytes);
    const { carried } = AtRiskRecord.open(path, fail);
    expect(carried).toEqual({ unreadable: true });
    const next = new UnsyncedEvents();
    next.restore(carried!);
    expect(next.take()).toMatchObject({ cause: 'fsync_failed', dropped: 0, sessions: [], truncated: true });
  });
});

/** How a sink whose record cannot be had says so: not ready, naming the path and the errno, nothing else of the run. */
function expectNotDurable(sink: { ready(): boolean; notReadyCause?(): string | undefined }, cause: string) {
  expect(sink.ready()).toBe(false);
  expect(sink.notReadyCause?.()).toBe(cause);
}

async function until(cond: () => boolean, what: string, ms = 15_000) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

type LogLine = { level: string; msg: string; err: string };
const logger = (lines: LogLine[]) => (level: string, msg: string, err?: unknown) =>
  lines.push({ level, msg, err: err instanceof Error ? err.message : String(err) });

describe('a sink whose at-risk record cannot be created starts not durable, and is durable once it can be', () => {
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  // Before: the sink threw AUDIT_AT_RISK_RECORD and the sidecar exited 1 in either failMode, to be restarted into the
  // same failure; now it starts not ready (failMode closed refuses statements, /readyz names the cause) and retries.
  it('file sink: something in the way of the record (EISDIR): not ready naming it, ready once it is gone', async () => {
    const fileDir = join(dir, 'in-the-way-file');
    mkdirSync(join(fileDir, 'audit.jsonl.at-risk'), { recursive: true });
    const path = join(fileDir, 'audit.jsonl');
    const lines: LogLine[] = [];
    const registry = new Registry();
    const sink = createFileSink({ path, fsync: 'batch', registry, log: logger(lines) });
    try {
      expectNotDurable(sink, `cannot create the audit at-risk record ${path}.at-risk (EISDIR)`);
      expect(await registry.getSingleMetricAsString('pgwarden_audit_ready')).toMatch(/sink="file"\} 0/);
      expect(lines).toMatchObject([
        { level: 'error', msg: expect.stringContaining('at-risk record cannot be created') },
      ]);
      expect(lines[0].err).toContain(`${path}.at-risk (EISDIR)`);
      rmSync(join(fileDir, 'audit.jsonl.at-risk'), { recursive: true });
      await until(() => sink.ready(), 'the file sink to be ready');
      expect(sink.notReadyCause?.()).toBeUndefined();
      expect(statSync(`${path}.at-risk`).size).toBe(AT_RISK_RECORD_BYTES);
      expect(await registry.getSingleMetricAsString('pgwarden_audit_ready')).toMatch(/sink="file"\} 1/);
      // Tried every second, logged once.
      expect(lines.filter((l) => l.level === 'error')).toHaveLength(1);
    } finally {
      await sink.close();
    }
    // fsync never keeps no record: nothing to wait for.
    rmSync(`${path}.at-risk`);
    mkdirSync(`${path}.at-risk`);
    const never = createFileSink({ path, fsync: 'never', registry: new Registry() });
    expect(never.ready()).toBe(true);
    await never.close();
  });

  it('spool: not ready while spooling without its record, ready once it can be created', async () => {
    const spool = join(dir, 'in-the-way-spool');
    mkdirSync(join(spool, 'at-risk'), { recursive: true });
    // Nothing listens there: the sink spools.
    const sink = new NatsAuditSink({
      servers: ['nats://127.0.0.1:9'],
      spool: { dir: spool, maxBytes: 1e6 },
      registry: new Registry(),
    });
    try {
      expectNotDurable(sink, `cannot create the audit at-risk record ${join(spool, 'at-risk')} (EISDIR)`);
      rmSync(join(spool, 'at-risk'), { recursive: true });
      await until(() => sink.ready(), 'the spool to be ready');
      expect(statSync(join(spool, 'at-risk')).size).toBe(AT_RISK_RECORD_BYTES);
    } finally {
      await sink.close(100);
    }
  });

  it('a record the run before left, opened late, is declared then', async () => {
    const recDir = join(dir, 'late-carried');
    mkdirSync(recDir);
    const path = join(recDir, 'audit.jsonl');
    // A run that stopped with events at risk, undeclared.
    const before = AtRiskRecord.open(`${path}.at-risk`, fail);
    const u = new UnsyncedEvents(before.record);
    wrote(u, 'gone', 4, 9);
    u.synced(u.syncStarting(), false);
    await before.record.close();
    renameSync(`${path}.at-risk`, `${path}.kept`);
    mkdirSync(`${path}.at-risk`);

    const sink = createFileSink({ path, fsync: 'batch', registry: new Registry() });
    try {
      createAuditRecorder(sink, { instanceId: 'late', checkpointIntervalMs: 600_000 });
      expect(sink.ready()).toBe(false);
      rmSync(`${path}.at-risk`, { recursive: true });
      renameSync(`${path}.kept`, `${path}.at-risk`);
      await until(() => sink.ready(), 'the file sink to be ready');
      await until(() => readFileSync(path, 'utf8').includes('"audit.gap"'), 'the carried gap to be declared');
      await sink.whenIdle!();
    } finally {
      await sink.close();
    }
    const gaps = readFileSync(path, 'utf8')
      .split('\n')
      .filter((l) => l.includes('"audit.gap"'))
      .map((l) => JSON.parse(l).gap);
    expect(gaps).toEqual([
      expect.objectContaining({ cause: 'fsync_failed', dropped: 6, sessions: [{ id: 'gone', fromSeq: 4, toSeq: 9 }] }),
    ]);
  });

  // A full disk: the record cannot be preallocated. Root only (a tmpfs mounted for it), as sessions and CI run.
  it.skipIf(process.getuid?.() !== 0)(
    'a full disk (ENOSPC while preallocating it): not ready until there is room',
    async () => {
      const mnt = mkdtempSync(join(tmpdir(), 'pgwarden-full-at-risk-'));
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0700', 'tmpfs', mnt]);
      try {
        const path = join(mnt, 'audit.jsonl');
        writeFileSync(path, '{"n":1}\n');
        const fd = openSync(join(mnt, 'filler'), 'w');
        try {
          for (;;) writeSync(fd, Buffer.alloc(4096, 1));
        } catch (err) {
          expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC');
        } finally {
          closeSync(fd);
        }
        const sink = createFileSink({ path, fsync: 'batch', registry: new Registry() });
        try {
          expectNotDurable(sink, `cannot create the audit at-risk record ${path}.at-risk (ENOSPC)`);
          // Room again: the record is made whole, and the sink is ready.
          rmSync(join(mnt, 'filler'));
          await until(() => sink.ready(), 'the file sink to be ready');
          expect(statSync(`${path}.at-risk`).size).toBe(AT_RISK_RECORD_BYTES);
        } finally {
          await sink.close();
        }
      } finally {
        // Lazily: a sink an assertion left open must not leave the mount behind.
        execFileSync('umount', ['-l', mnt]);
        rmSync(mnt, { recursive: true, force: true });
      }
    },
  );
});

// The record written after start fails: made immutable (chattr +i: writes to its open fd fail with EPERM) on a disk
// whose syncs fail (failing-disk.ts). Root only (mount, losetup, chattr), as sessions and CI here run.
describe.skipIf(process.getuid?.() !== 0)('an at-risk record that cannot be written after start', () => {
  it('keeps the sink not durable naming it, and is written again, with no event after, once it can be', async () => {
    const d = mountFailingDisk();
    const path = join(d.dir, 'audit.jsonl');
    const lines: LogLine[] = [];
    const registry = new Registry();
    const sink = createFileSink({ path, fsync: 'batch', registry, log: logger(lines) });
    const chattr = (flag: string) => execFileSync('chattr', [flag, `${path}.at-risk`]);
    try {
      const s = createAuditRecorder(sink, { instanceId: 'rec-fail', checkpointIntervalMs: 600_000 }).openSession(
        sessionInfo('rec-fail'),
      );
      for (let i = 0; i < 5; i++) s.statement(selectRecord(i));
      await sink.whenIdle!();
      expect(sink.ready()).toBe(true);
      chattr('+i');
      d.fill();
      for (let i = 5; i < 500 && sink.ready(); i++) {
        s.statement(selectRecord(i));
        await new Promise((r) => setTimeout(r, 2));
      }
      expect(sink.ready()).toBe(false);
      // Before: only a log line; the sink's readiness then hung on its syncs alone, and the record was not written
      // again until another sync failed (an idle sidecar killed now lost the ranges undeclared).
      const cause = `cannot write the audit at-risk record ${path}.at-risk (EPERM)`;
      await until(() => sink.notReadyCause?.() === cause, 'the record failure to be the cause');
      expect(lines.filter((l) => l.msg.includes('at-risk record cannot be created or written'))).toHaveLength(1);
      expect(await registry.getSingleMetricAsString('pgwarden_audit_ready')).toMatch(/sink="file"\} 0/);

      // Writable again, nothing more recorded (the syncs still fail): the record is written by its retry.
      chattr('-i');
      await until(() => sink.notReadyCause?.() === undefined, 'the record to be written');
      // What a restart now would find there.
      const copy = join(mkdtempSync(join(tmpdir(), 'pgwarden-at-risk-copy-')), 'at-risk');
      writeFileSync(copy, readFileSync(`${path}.at-risk`));
      const carried = AtRiskRecord.open(copy, fail).carried as { gap: AuditGap };
      rmSync(dirname(copy), { recursive: true });
      expect(carried.gap.sessions).toEqual([expect.objectContaining({ id: 'rec-fail' })]);
      expect(lines.at(-1)).toMatchObject({ level: 'info', msg: 'audit file at-risk record written again' });
    } finally {
      try {
        chattr('-i');
      } catch {}
      await sink.close();
      d.close();
    }
  }, 60_000);
});
