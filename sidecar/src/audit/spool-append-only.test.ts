import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AuditEvent, verifyChain } from '@pgwarden/policy';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it, type TestContext } from 'vitest';
import { startNats, type TestNats } from '../../../test/harness/index.js';
import { createAuditRecorder } from './audit-recorder.js';
import { DiskSpool, type SpoolPos } from './disk-spool.js';
import { AuditError } from './errors.js';
import { NatsAuditSink } from './nats-sink.js';
import { readAuditStream, selectRecord, sessionInfo } from './nats-test-kit.js';

/**
 * A spool write the disk cuts short whose piece cannot be cut back out: the segment is append-only (`chattr +a`), so
 * ftruncate fails with EPERM while appends work, on a tmpfs small enough to fill. Root only (mount, chattr), as
 * sessions and CI run; skipped with the reason where the kernel refuses the flag on tmpfs (before Linux 6.0).
 */
const cleanup: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

const SEGMENT = 'audit-000000000001.jsonl';

/** A tmpfs of `kb` KiB with an empty append-only first segment in it; a filler of 24 KiB frees room when removed. */
function fullDisk(ctx: TestContext, kb: number): { dir: string; segment: string; filler: string } {
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-spool-append-only-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${kb}k,mode=0700`, 'tmpfs', dir]);
  // An append-only file cannot be deleted: it goes with the mount.
  cleanup.push(() => {
    execFileSync('umount', ['-l', dir]);
    rmSync(dir, { recursive: true, force: true });
  });
  const segment = join(dir, SEGMENT);
  writeFileSync(segment, '');
  try {
    execFileSync('chattr', ['+a', segment], { stdio: 'pipe' });
  } catch (err) {
    ctx.skip(`chattr +a is not supported on tmpfs here: ${(err as Error).message}`);
  }
  expect(() => truncateSync(segment, 0)).toThrow(/EPERM/);
  return { dir, segment, filler: join(dir, 'filler') };
}

const record = (i: number) => ({
  subject: 'pgwarden.audit.ns.p',
  msgID: `s.${i}`,
  // ~1000 bytes a line: a write of 15 is cut by the end of the disk somewhere inside one of its records.
  data: JSON.stringify({ i, pad: 'x'.repeat(960) }),
});

/** The segment's lines, and which of them are not records (the pieces). */
function segmentLines(path: string): { records: string[]; pieces: string[]; text: string } {
  const text = readFileSync(path, 'latin1');
  const records: string[] = [];
  const pieces: string[] = [];
  for (const line of text.split('\n').slice(0, -1)) {
    const data = line.split('\t')[2];
    try {
      JSON.parse(data ?? '');
      records.push(line);
    } catch {
      pieces.push(line);
    }
  }
  return { records, pieces, text };
}

describe.skipIf(process.getuid?.() !== 0)(
  'spool on a full disk where a cut-short write cannot be taken back out',
  () => {
    it('the records that write left whole count as written, the piece is skipped, and no later record joins it', (ctx) => {
      const { dir, segment, filler } = fullDisk(ctx, 64);
      writeFileSync(filler, Buffer.alloc(24 * 1024, 1));
      const spool = new DiskSpool({ dir, maxBytes: 1e8, fsync: 'never' });
      const written: string[] = [];
      let next = 0;
      let failure: unknown;
      let cutLine = '';
      for (let w = 0; w < 20 && failure === undefined; w++) {
        const batch = Array.from({ length: 15 }, () => record(next++));
        try {
          const ends = spool.append(batch);
          expect(ends).toHaveLength(15);
          written.push(...batch.map((r) => r.msgID));
        } catch (err) {
          failure = err;
          expect(err).toBeInstanceOf(AuditError);
          expect((err as AuditError).code).toBe('AUDIT_SPOOL_IO');
          // Before: the write's whole records were not reported (the caller dropped them) yet stayed readable.
          const ends = (err as { written?: SpoolPos[] }).written;
          if (!ends) throw new Error('a failed append does not say which of its records it wrote whole');
          written.push(...batch.slice(0, ends.length).map((r) => r.msgID));
          const cut = batch[ends.length];
          cutLine = `${cut.subject}\t${cut.msgID}\t${cut.data}`;
          // The truncate really failed: the piece of the next record is still at the end of the file.
          const { records, text } = segmentLines(segment);
          expect(text.at(-1)).not.toBe('\n');
          expect(records.map((l) => l.split('\t')[1])).toEqual(written);
          expect(ends.at(-1)).toEqual({ segment: 1, offset: text.lastIndexOf('\n') + 1 } satisfies SpoolPos);
        }
      }
      expect(failure).toBeDefined();

      // Still full: the next write fails before a byte of it lands, and reports nothing written.
      expect(() => spool.append([record(next++)])).toThrow(/cannot write audit spool/);

      // A restart on the append-only segment: opening it cannot cut the piece off either (before: EPERM from open).
      spool.close();
      const again = new DiskSpool({ dir, maxBytes: 1e8, fsync: 'never' });
      rmSync(filler);
      const later = Array.from({ length: 3 }, () => record(next++));
      expect(again.append(later)).toHaveLength(3);
      written.push(...later.map((r) => r.msgID));

      const read = again.read(1000).map((r) => r.msgID);
      expect(again.skippedLines).toBe(0);
      expect(read).toEqual(written);
      expect(again.empty).toBe(false);
      expect(again.readAll).toBe(true);
      // The piece is one line of its own, ended so that no reader takes it for a record; every later line is whole.
      const { records, pieces } = segmentLines(segment);
      expect(pieces).toHaveLength(1);
      // What the disk took of the cut record, ended by CAN (and perhaps a CAN of a terminator cut short itself).
      expect(pieces[0].endsWith('\x18')).toBe(true);
      const piece = pieces[0].replace(/\x18+$/, '');
      expect(piece.length).toBeGreaterThan(0);
      expect(piece.length).toBeLessThan(cutLine.length);
      expect(cutLine.startsWith(piece)).toBe(true);
      expect(records.map((l) => l.split('\t')[1])).toEqual(written);
      again.close();
      expect(readdirSync(dir)).toContain(SEGMENT);
    });

    it('NATS sink: every event counted as spooled is delivered once, and the chain shows exactly the declared gap', async (ctx) => {
      // 128 KiB of it go to the spool's at-risk record (preallocated at open), 24 KiB to the filler.
      const { dir, segment, filler } = fullDisk(ctx, 192);
      const nats: TestNats = await startNats();
      cleanup.push(() => nats.stop());
      await nats.kill();
      const sink = new NatsAuditSink({
        servers: [nats.url],
        spool: { dir, maxBytes: 1e8 },
        publishTimeoutMs: 500,
        registry: new Registry(),
      });
      writeFileSync(filler, Buffer.alloc(24 * 1024, 1));
      const rec = createAuditRecorder(sink, { instanceId: 'append-only', checkpointIntervalMs: 600_000 });
      const s = rec.openSession(sessionInfo('append-only'));
      let i = 0;
      // Turns of 20 events, one spool write each: the write that meets the end of the disk is cut inside it.
      while (sink.stats().dropped === 0 && i < 2000) {
        for (let k = 0; k < 20; k++) s.statement(selectRecord(i++));
        await new Promise((r) => setImmediate(r));
      }
      expect(sink.stats().dropped).toBeGreaterThan(0);
      expect(sink.ready()).toBe(false);
      // The piece of the cut write is still there (the truncate failed), and the write's whole records before it.
      expect(readFileSync(segment).at(-1)).not.toBe(0x0a);
      rmSync(filler);
      for (let k = 0; k < 5; k++) {
        s.statement(selectRecord(i++));
        await new Promise((r) => setImmediate(r));
      }
      expect(sink.ready()).toBe(true);
      await nats.start();
      s.end({});
      await sink.whenIdle(20_000);
      const stats = sink.stats();
      await sink.close();

      // NATS was away throughout: every event went through this segment, once, and the records the cut write left whole
      // before its piece count as spooled (before: all 20 events of that write were dropped, and some delivered).
      expect(stats.dropped).toBeLessThan(20);
      expect(stats.published).toBe(stats.spooled);

      const events = (await readAuditStream(nats.url)).map((m) => m.event);
      // Every event the sink counted as spooled reached the stream; none of the rest did.
      expect(events.filter((e) => e.session.id === 'append-only')).toHaveLength(i + 2 - stats.dropped);
      const gapEvents = events.filter((e) => e.type === 'audit.gap');
      expect(gapEvents.map((e) => e.gap?.cause)).toEqual(['spool_io']);
      expect(gapEvents.reduce((n, e) => n + (e.gap?.dropped ?? 0), 0)).toBe(stats.dropped);
      const report = verifyChain(events as AuditEvent[]);
      expect(report.tampered).toEqual([]);
      expect(report.duplicates).toBe(0);
      expect(report.gaps.map((g) => ({ id: g.session, fromSeq: g.fromSeq, toSeq: g.toSeq }))).toEqual(
        gapEvents.flatMap((e) => e.gap?.sessions ?? []),
      );
      // The piece stayed in the segment as the one line that is not a record.
      const { records, pieces } = segmentLines(segment);
      expect(pieces).toHaveLength(1);
      expect(pieces[0].endsWith('\x18')).toBe(true);
      expect(records).toHaveLength(stats.spooled);
    }, 60_000);
  },
);
