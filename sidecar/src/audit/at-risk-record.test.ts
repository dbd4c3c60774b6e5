import { execFileSync } from 'node:child_process';
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AuditGap } from '@pgwarden/policy';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { AT_RISK_RECORD_BYTES, AtRiskRecord } from './at-risk-record.js';
import { AuditError } from './errors.js';
import { createFileSink } from './line-sinks.js';
import { NatsAuditSink } from './nats-sink.js';
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

/** What a sink that cannot create its record throws: the path and the errno, nothing else of the run. */
function expectRefused(start: () => unknown, path: string, errno: string) {
  let thrown: unknown;
  try {
    start();
  } catch (err) {
    thrown = err;
  }
  expect(thrown).toBeInstanceOf(AuditError);
  expect(thrown).toMatchObject({ code: 'AUDIT_AT_RISK_RECORD' });
  expect((thrown as Error).message).toContain(`cannot create the audit at-risk record ${path} (${errno})`);
}

describe('a sink that cannot create its at-risk record does not start', () => {
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  // Before: the error was only logged and the sink ran (and reported ready) without a record.
  it('file sink and spool: something in the way of the record (EISDIR) refuses the start, naming the path', async () => {
    const fileDir = join(dir, 'in-the-way-file');
    mkdirSync(join(fileDir, 'audit.jsonl.at-risk'), { recursive: true });
    const path = join(fileDir, 'audit.jsonl');
    expectRefused(
      () => createFileSink({ path, fsync: 'batch', registry: new Registry() }),
      `${path}.at-risk`,
      'EISDIR',
    );
    // fsync never keeps no record: nothing to refuse.
    const never = createFileSink({ path, fsync: 'never', registry: new Registry() });
    expect(never.ready()).toBe(true);
    await never.close();

    const spool = join(dir, 'in-the-way-spool');
    mkdirSync(join(spool, 'at-risk'), { recursive: true });
    expectRefused(
      // Refused before any connection is tried: nothing listens there.
      () =>
        new NatsAuditSink({
          servers: ['nats://127.0.0.1:9'],
          spool: { dir: spool, maxBytes: 1e6 },
          registry: new Registry(),
        }),
      join(spool, 'at-risk'),
      'EISDIR',
    );
  });

  // A full disk: the record cannot be preallocated. Root only (a tmpfs mounted for it), as sessions and CI run.
  it.skipIf(process.getuid?.() !== 0)('a full disk (ENOSPC while preallocating it) refuses the start', async () => {
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
      expectRefused(
        () => createFileSink({ path, fsync: 'batch', registry: new Registry() }),
        `${path}.at-risk`,
        'ENOSPC',
      );
      // Room again: the same file starts, with its record whole.
      rmSync(join(mnt, 'filler'));
      const sink = createFileSink({ path, fsync: 'batch', registry: new Registry() });
      expect(sink.ready()).toBe(true);
      expect(statSync(`${path}.at-risk`).size).toBe(AT_RISK_RECORD_BYTES);
      await sink.close();
    } finally {
      // Lazily: a sink an assertion left open must not leave the mount behind.
      execFileSync('umount', ['-l', mnt]);
      rmSync(mnt, { recursive: true, force: true });
    }
  });
});
