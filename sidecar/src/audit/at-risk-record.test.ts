import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AuditGap } from '@pgwarden/policy';
import { afterAll, describe, expect, it } from 'vitest';
import { AT_RISK_RECORD_BYTES, AtRiskRecord } from './at-risk-record.js';
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
