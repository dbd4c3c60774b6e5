import { appendFileSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { holdThreadPool } from '../testing/hold-thread-pool.js';
import { DiskSpool } from './disk-spool.js';

const dirs: string[] = [];
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'pgwarden-spool-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const rec = (i: number, pad = 0) => ({
  subject: 'pgwarden.audit.ns.p',
  msgID: `s.${i}`,
  data: JSON.stringify({ i, p: 'x'.repeat(pad) }),
});

describe('DiskSpool', () => {
  it('reads back what was appended, in order, across segments, and deletes segments behind the cursor', () => {
    const dir = tempDir();
    const spool = new DiskSpool({ dir, maxBytes: 1e7, segmentBytes: 1000 });
    const ends = spool.append(Array.from({ length: 100 }, (_, i) => rec(i, 20)));
    expect(ends).toHaveLength(100);
    expect(readdirSync(dir).filter((f) => f.endsWith('.jsonl')).length).toBeGreaterThan(3);
    const got: number[] = [];
    for (;;) {
      const batch = spool.read(7);
      if (batch.length === 0) break;
      for (const r of batch) {
        got.push((JSON.parse(r.data) as { i: number }).i);
        expect(r.msgID).toBe(`s.${got.at(-1)}`);
      }
      spool.ack(batch.at(-1)!.end);
    }
    expect(got).toEqual(Array.from({ length: 100 }, (_, i) => i));
    expect(spool.empty).toBe(true);
    expect(readdirSync(dir).filter((f) => f.endsWith('.jsonl')).length).toBe(1);
    spool.reset();
    expect(spool.bytes).toBe(0);
    spool.close();
  });

  it('names what is still undelivered, from the cursor on, across segments and a restart; a line naming none as such', () => {
    const dir = tempDir();
    const spool = new DiskSpool({ dir, maxBytes: 1e7, segmentBytes: 1000 });
    spool.append(Array.from({ length: 30 }, (_, i) => rec(i, 20)));
    const read = spool.read(10);
    spool.ack(read.at(-1)!.end);
    // Read ahead but not acknowledged: still undelivered.
    spool.read(5);
    const pending = (sp: DiskSpool) => {
      const ids: (string | undefined)[] = [];
      sp.forEachPending((id) => ids.push(id));
      return ids;
    };
    const undelivered = Array.from({ length: 20 }, (_, i) => `s.${i + 10}`);
    expect(pending(spool)).toEqual(undelivered);
    spool.close();
    const last = readdirSync(dir)
      .filter((f) => f.endsWith('.jsonl'))
      .sort()
      .at(-1)!;
    appendFileSync(join(dir, last), 'damaged without tabs\n');
    const reopened = new DiskSpool({ dir, maxBytes: 1e7, segmentBytes: 1000 });
    expect(pending(reopened)).toEqual([...undelivered, undefined]);
    reopened.close();
  });

  it('resumes after a restart at the saved cursor (acked records are not read again)', () => {
    const dir = tempDir();
    const a = new DiskSpool({ dir, maxBytes: 1e7, segmentBytes: 500 });
    a.append(Array.from({ length: 30 }, (_, i) => rec(i)));
    const first = a.read(12);
    a.ack(first.at(-1)!.end);
    a.close();
    const b = new DiskSpool({ dir, maxBytes: 1e7, segmentBytes: 500 });
    expect(b.empty).toBe(false);
    const rest = b.read(100).map((r) => (JSON.parse(r.data) as { i: number }).i);
    expect(rest).toEqual(Array.from({ length: 18 }, (_, i) => i + 12));
    b.append([rec(30)]);
    expect(b.read(10).map((r) => r.msgID)).toEqual(['s.30']);
    b.close();
  });

  it('cuts a torn last record left by a crash mid-write', () => {
    const dir = tempDir();
    const a = new DiskSpool({ dir, maxBytes: 1e7 });
    a.append([rec(1), rec(2)]);
    a.close();
    const seg = readdirSync(dir).find((f) => f.endsWith('.jsonl'))!;
    appendFileSync(join(dir, seg), 'pgwarden.audit.ns.p\ts.3\t{"i":3,"p"');
    const b = new DiskSpool({ dir, maxBytes: 1e7 });
    expect(b.read(10).map((r) => r.msgID)).toEqual(['s.1', 's.2']);
    b.append([rec(4)]);
    expect(b.read(10).map((r) => r.msgID)).toEqual(['s.4']);
    b.close();
  });

  it('reads a malformed line as damaged, counted, instead of stalling delivery behind it', () => {
    const dir = tempDir();
    const a = new DiskSpool({ dir, maxBytes: 1e7 });
    a.append([rec(1)]);
    a.close();
    const seg = readdirSync(dir).find((f) => f.endsWith('.jsonl'))!;
    appendFileSync(join(dir, seg), 'garbage without tabs\n');
    const b = new DiskSpool({ dir, maxBytes: 1e7 });
    b.append([rec(2)]);
    expect(b.read(10).map((r) => (r.damaged ? 'damaged' : r.msgID))).toEqual(['s.1', 'damaged', 's.2']);
    expect(b.skippedLines).toBe(1);
    b.close();
  });

  it('refuses appends past the size cap and accepts again once acked segments are gone', () => {
    const dir = tempDir();
    const spool = new DiskSpool({ dir, maxBytes: 2000, segmentBytes: 500 });
    const ends = spool.append(Array.from({ length: 100 }, (_, i) => rec(i)));
    expect(ends.length).toBeGreaterThan(10);
    expect(ends.length).toBeLessThan(100);
    expect(spool.bytes).toBeLessThanOrEqual(2000);
    expect(spool.append([rec(1000)])).toHaveLength(0);
    const batch = spool.read(ends.length);
    spool.ack(batch.at(-1)!.end);
    expect(spool.bytes).toBeLessThan(600);
    expect(spool.append([rec(1001)])).toHaveLength(1);
    spool.close();
  });

  it('keeps records longer than one read chunk whole', () => {
    const dir = tempDir();
    const spool = new DiskSpool({ dir, maxBytes: 1e8 });
    spool.append([rec(1, 600_000), rec(2, 10)]);
    const got = spool.read(10);
    expect(got.map((r) => r.msgID)).toEqual(['s.1', 's.2']);
    expect((JSON.parse(got[0].data) as { p: string }).p).toHaveLength(600_000);
    spool.close();
  });
});

describe('DiskSpool: background fdatasync and segment rotation', () => {
  it('a segment retired while its fdatasync waits for a thread is closed after that sync, not under it', async () => {
    const dir = tempDir();
    const errors: Error[] = [];
    const spool = new DiskSpool({ dir, maxBytes: 1e7, segmentBytes: 1000, onSyncError: (e) => errors.push(e) });
    const release = await holdThreadPool();
    let released = false;
    try {
      spool.append([rec(0, 20)]); // a background fdatasync of segment 0, queued behind the held threads
      spool.append(Array.from({ length: 40 }, (_, i) => rec(i + 1, 20))); // fills segment 0 and more: rotations
      // The last segment is closed too: segment 0's fd number, reused by each new segment, is then free.
      spool.close();
      await release();
      released = true;
    } finally {
      if (!released) await release();
    }
    await spool.closed();
    // Before: the queued sync ran on an fd that was closed by then, failed with EBADF, and the spool was not durable
    // (with the number reused by the next segment meanwhile, it synced that file instead).
    expect(errors.map((e) => e.message)).toEqual([]);
    expect(spool.syncFailed).toBe(false);
    expect(spool.takeSyncGap()).toBeUndefined();
  });
});
