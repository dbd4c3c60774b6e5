import { describe, expect, it } from 'vitest';
import {
  positionOfMessageId,
  UndeliveredTally,
  undeliveredLogParts,
  undeliveredMessage,
} from './undelivered-events.js';

describe('undelivered events at shutdown', () => {
  it('reads the position from a message id, with or without the hash part', () => {
    expect(positionOfMessageId('3f2c.17.0123456789abcdef')).toEqual({ session: '3f2c', seq: 17 });
    expect(positionOfMessageId('sidecar-a.b.4')).toEqual({ session: 'sidecar-a.b', seq: 4 });
    // A hash of digits alone is still the hash, not the seq.
    expect(positionOfMessageId('s.5.0123456789012345')).toEqual({ session: 's', seq: 5 });
    expect(positionOfMessageId('no-position')).toBeUndefined();
  });

  it('folds seqs into sorted, merged ranges per session, in the order sessions were met', () => {
    const t = new UndeliveredTally();
    for (const seq of [4, 5, 6, 9, 1, 2, 3, 10]) t.add('spool', 'a', seq);
    t.addSpooled('b.7.0123456789abcdef');
    t.addSpooled(undefined);
    t.add('memory', 'b', 8);
    t.add('memory', undefined, undefined);
    expect(t.report('/spool')).toEqual({
      events: 12,
      spooled: 10,
      memoryOnly: 2,
      unnamed: 2,
      spoolDir: '/spool',
      sessions: [
        { id: 'a', seqs: '1-6,9-10' },
        { id: 'b', seqs: '7-8' },
      ],
    });
  });

  it('says what is lost now and what a deleted pod loses', () => {
    const t = new UndeliveredTally();
    t.add('spool', 'a', 1);
    t.add('memory', 'a', 2);
    const msg = undeliveredMessage(
      t.report('/var/lib/pgwarden', { dropped: 3, since: 'x', until: 'y', cause: 'spool_full', sessions: [] }),
    );
    expect(msg).toContain('1 left in the spool /var/lib/pgwarden');
    expect(msg).toContain('LOST if the pod is deleted');
    expect(msg).toContain('1 never reached a spool and are lost');
    expect(msg).toContain('3 dropped earlier (spool_full) were never declared');
  });

  it('splits a report naming many sessions into log records below the size given, each with the totals', () => {
    const tally = (n: number) => {
      const t = new UndeliveredTally();
      // Session ids are UUIDs (36 characters).
      for (let s = 0; s < n; s++) t.add('spool', `${String(s).padStart(8, '0')}-0000-4000-8000-000000000000`, 1);
      return t.report('/spool');
    };
    expect(undeliveredLogParts(tally(100))).toHaveLength(1);
    const report = tally(500);
    const parts = undeliveredLogParts(report);
    expect(parts.length).toBeGreaterThan(1);
    for (const p of parts) {
      expect(JSON.stringify(p).length).toBeLessThan(12 * 1024);
      expect(p).toMatchObject({ events: 500, spooled: 500, spoolDir: '/spool', parts: parts.length });
    }
    expect(parts.flatMap((p) => p.sessions)).toEqual(report.sessions);
    expect(parts.map((p) => p.part)).toEqual(parts.map((_, i) => i + 1));
  });
});
