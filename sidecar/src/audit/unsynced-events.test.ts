import { describe, expect, it } from 'vitest';
import { UnsyncedEvents } from './unsynced-events.js';

const wrote = (u: UnsyncedEvents, id: string, from: number, to: number) => {
  for (let seq = from; seq <= to; seq++) u.wrote(id, seq);
};

describe('UnsyncedEvents', () => {
  it('names nothing while syncs succeed', () => {
    const u = new UnsyncedEvents();
    wrote(u, 'a', 1, 5);
    u.synced(u.syncStarting(), true);
    wrote(u, 'a', 6, 6);
    u.synced(u.syncStarting(), true);
    expect(u.take()).toBeUndefined();
  });

  it('a failed sync leaves what it covered possibly lost, per session, and what was written while it ran', () => {
    const u = new UnsyncedEvents();
    wrote(u, 'a', 1, 3);
    u.synced(u.syncStarting(), true);
    wrote(u, 'a', 4, 6);
    wrote(u, 'b', 1, 2);
    const t = u.syncStarting();
    // Written while the sync ran: its pages may have been in the failed writeback, whose error is reported once.
    wrote(u, 'a', 7, 7);
    u.synced(t, false);
    expect(u.take()).toMatchObject({
      cause: 'fsync_failed',
      dropped: 6,
      sessions: [
        { id: 'a', fromSeq: 4, toSeq: 7 },
        { id: 'b', fromSeq: 1, toSeq: 2 },
      ],
    });
    expect(u.take()).toBeUndefined();
  });

  it('keeps separate ranges for failures with a successful sync between them, and joins adjacent ones', () => {
    const u = new UnsyncedEvents();
    wrote(u, 'a', 1, 2);
    u.synced(u.syncStarting(), false);
    wrote(u, 'a', 3, 4);
    u.synced(u.syncStarting(), false);
    wrote(u, 'a', 5, 6);
    u.synced(u.syncStarting(), true);
    wrote(u, 'a', 7, 8);
    u.synced(u.syncStarting(), false);
    expect(u.take()?.sessions).toEqual([
      { id: 'a', fromSeq: 1, toSeq: 4 },
      { id: 'a', fromSeq: 7, toSeq: 8 },
    ]);
  });

  it('an earlier sync that succeeds does not vouch for what a later one (still running) covers', () => {
    const u = new UnsyncedEvents();
    wrote(u, 'a', 1, 2);
    const first = u.syncStarting();
    wrote(u, 'a', 3, 4);
    const second = u.syncStarting();
    u.synced(first, true);
    u.synced(second, false);
    expect(u.take()?.sessions).toEqual([{ id: 'a', fromSeq: 1, toSeq: 4 }]);
  });

  it('counts events without a position and says truncated past 1000 sessions', () => {
    const u = new UnsyncedEvents();
    u.wrote(undefined, undefined);
    for (let i = 0; i < 1001; i++) u.wrote(`s${i}`, 1);
    u.synced(u.syncStarting(), false);
    const gap = u.take()!;
    expect(gap).toMatchObject({ dropped: 1002, truncated: true });
    expect(gap.sessions).toHaveLength(1000);
  });
});
