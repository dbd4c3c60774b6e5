import {
  closeSync,
  fdatasync,
  fdatasyncSync,
  fstatSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  statSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import type { AuditGap } from '@pgwarden/policy';
import { AtRiskKeeper } from './at-risk-keeper.js';
import { AuditError, SpoolWriteError } from './errors.js';
import { decodeSpoolLine, spoolLine } from './spool-line.js';
import { UnsyncedEvents } from './unsynced-events.js';

/**
 * Append-only, strictly FIFO spool of audit records in segment files `audit-<n>.jsonl` under one directory.
 * A record is one line with its checksum (spool-line.ts); a line that does not check out is skipped and counted
 * (`skippedLines`), never read as a record. A file `cursor` holds how far delivery got, so a restarted sidecar
 * resumes there; segments wholly behind the cursor are deleted. A line without its newline (a crash mid write) is
 * cut off when the spool is opened.
 */

/**
 * Ends the piece a write cut short (the disk filled) leaves behind where it cannot be cut back out (ftruncate fails:
 * an append-only segment), before anything is appended after it. ASCII CAN ("cancel": disregard the data before it)
 * never ends a record, whose last byte is a hex digit of its checksum (in an older build's line, the `}` of its JSON);
 * read() skips such a line without counting it as damaged, since its event was dropped and declared when the write
 * failed. A newline alone would not do: the piece would fail its checksum and be declared lost a second time.
 */
const PIECE_END = '\x18\n';
const CAN = 0x18;

export interface SpoolPos {
  segment: number;
  /** Byte offset just past the record. */
  offset: number;
}

export interface SpoolRecord {
  subject: string;
  msgID: string;
  data: string;
  end: SpoolPos;
  /**
   * Not a record: a line, or the part of one before a record, that did not check out (spool-line.ts). Whatever it
   * held is lost and must be declared; acknowledging `end` moves past it like any record.
   */
  damaged?: true;
}

export type SpoolFsync = 'always' | 'batch' | 'never';

export interface DiskSpoolOptions {
  dir: string;
  /** Total size cap; appends that would pass it are refused. */
  maxBytes: number;
  segmentBytes?: number;
  /** always: fdatasync before append returns; batch (default): fdatasync after each append, off the event loop; never. */
  fsync?: SpoolFsync;
  /** Called for each fdatasync that failed (the spool is `syncFailed` until a later one succeeds, see below). */
  onSyncError?: (err: Error) => void;
  /** Called when `syncFailed` clears; takeSyncGap() then names what the failed syncs may have lost. */
  onSyncRecovered?: () => void;
  /**
   * Called when the at-risk record (what failed syncs may have lost) cannot be created or written: the spool is not
   * durable (`recordProblem`) until it can, which is tried again every AT_RISK_RETRY_MS.
   */
  onRecordError?: (err: Error) => void;
  /** Called when the record is usable again; `carriedRisk` may then be newly set (a record that opened late). */
  onRecordRecovered?: () => void;
}

/**
 * After a failed fdatasync the spool or file sink counts as failed until a sync succeeds at least this long after the
 * last failure. A sync right after one can succeed although the disk still fails: Linux reports a writeback error
 * once, and new writes may land in blocks that already have their storage (the rest of a partly written block)
 * while the next new block fails again; readiness then flapped with every batch, admitting statements between.
 */
export const SYNC_FAILURE_HOLD_MS = 1000;

const SEGMENT = /^audit-(\d{12})\.jsonl$/;
const segName = (n: number) => `audit-${String(n).padStart(12, '0')}.jsonl`;
const READ_CHUNK = 256 * 1024;

export class DiskSpool {
  private readonly dir: string;
  private readonly maxBytes: number;
  private readonly segmentBytes: number;
  private readonly fsync: SpoolFsync;
  /** Sizes of the segments on disk, oldest first. */
  private readonly segments = new Map<number, number>();
  private writeSeg = 0;
  private writeFd: number | undefined;
  /**
   * Bytes at the end of the write segment after its last whole line: the piece of a cut-short write that could not be
   * cut back out (PIECE_END). Not in `segments` (the reader stops before it) but in `totalBytes` (it takes the space).
   */
  private pieceBytes = 0;
  private readPos: SpoolPos;
  private ackPos: SpoolPos;
  private cursorDirty = false;
  private totalBytes = 0;
  private syncing = false;
  private syncAgain = false;
  /** The fd the background fdatasync runs on, and whether its segment was retired meanwhile (closeWriteSegment). */
  private syncingFd: number | undefined;
  private closeAfterSync = false;
  private syncWaiters: (() => void)[] = [];
  private readonly onSyncError: ((err: Error) => void) | undefined;
  private readonly onSyncRecovered: (() => void) | undefined;
  private readonly unsynced: UnsyncedEvents;
  /** What failed syncs may have lost, kept in the spool directory until declared durably (at-risk-keeper.ts). */
  private readonly record: AtRiskKeeper | undefined;
  private recordClosed: Promise<void> = Promise.resolve();
  /** A run before this one left events at risk undeclared: takeSyncGap() names them (with any of this run's). */
  carriedRisk = false;
  /**
   * The last fdatasync failed: records written before it may be lost (Linux drops the dirty pages of a failed
   * writeback and reports the error once, so a retry proves nothing about them). Cleared by a sync that succeeds
   * SYNC_FAILURE_HOLD_MS or more after the last failure, which shows that the writes since reached the disk.
   */
  syncFailed = false;
  private lastSyncFailure = 0;
  /** An append was refused at the cap; cleared when delivered segments are deleted. */
  private refused = false;
  /** Lines read() skipped as damaged so far (each may have held an event: the caller declares them). */
  skippedLines = 0;

  constructor(opts: DiskSpoolOptions) {
    this.dir = opts.dir;
    this.maxBytes = opts.maxBytes;
    this.segmentBytes = opts.segmentBytes ?? 8 * 1024 * 1024;
    this.fsync = opts.fsync ?? 'batch';
    this.onSyncError = opts.onSyncError;
    this.onSyncRecovered = opts.onSyncRecovered;
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      for (const f of readdirSync(this.dir)) {
        const m = SEGMENT.exec(f);
        if (m) this.segments.set(Number(m[1]), statSync(join(this.dir, f)).size);
      }
    } catch (err) {
      throw new AuditError('AUDIT_SPOOL_IO', `cannot open audit spool ${this.dir}`, { cause: err });
    }
    if (this.fsync !== 'never') {
      // One that cannot be created now is tried again; the spool is not durable until then (recordProblem).
      this.record = new AtRiskKeeper(join(this.dir, 'at-risk'), {
        onError: (err) => opts.onRecordError?.(err),
        onRecovered: (carried) => {
          if (carried) {
            this.unsynced.restore(carried);
            this.carriedRisk = true;
          }
          opts.onRecordRecovered?.();
        },
      });
      this.unsynced = new UnsyncedEvents(this.record);
      const carried = this.record.open();
      if (carried) this.unsynced.restore(carried);
      this.carriedRisk = carried !== undefined;
    } else {
      this.unsynced = new UnsyncedEvents();
    }
    const ids = [...this.segments.keys()].sort((a, b) => a - b);
    const sizes = new Map(this.segments);
    this.segments.clear();
    for (const id of ids) this.segments.set(id, sizes.get(id)!);
    const last = ids.at(-1);
    if (last !== undefined) this.cutTornTail(last);
    for (const size of this.segments.values()) this.totalBytes += size;
    this.totalBytes += this.pieceBytes;
    this.writeSeg = last ?? 1;
    const cursor = this.loadCursor();
    const size = cursor ? this.segments.get(cursor.segment) : undefined;
    this.ackPos =
      cursor && size !== undefined
        ? { segment: cursor.segment, offset: Math.min(cursor.offset, size) }
        : { segment: ids[0] ?? 1, offset: 0 };
    this.readPos = { ...this.ackPos };
  }

  /**
   * Why the at-risk record cannot be relied on (naming its path and errno), undefined while it can. Until it can, a
   * failed sync and a restart could lose events without a declared gap: the spool is not durable.
   */
  get recordProblem(): string | undefined {
    return this.record?.problem;
  }

  /** Bytes the spool holds on disk. */
  get bytes(): number {
    return this.totalBytes;
  }

  /** The cap refused a record and no space has been freed since. */
  get full(): boolean {
    return this.refused || this.totalBytes >= this.maxBytes;
  }

  /** True when everything written has been read (there may still be unacknowledged reads). */
  get readAll(): boolean {
    return this.atEnd(this.readPos);
  }

  /** True when the spool holds nothing that still needs delivering. */
  get empty(): boolean {
    return this.atEnd(this.ackPos);
  }

  /** Records up to `pos` are already held by the reader (they were spilled from memory): reading resumes after. */
  markRead(pos: SpoolPos): void {
    this.readPos = pos;
  }

  private atEnd(pos: SpoolPos): boolean {
    if (pos.offset < (this.segments.get(pos.segment) ?? 0)) return false;
    for (const [seg, size] of this.segments) if (seg > pos.segment && size > 0) return false;
    return true;
  }

  /**
   * Appends records in order and returns the end position of each one written. Stops at the size cap: the
   * caller drops what did not fit (returned array shorter). On I/O failure throws SpoolWriteError (AUDIT_SPOOL_IO)
   * naming the records written whole before it: those stay in the spool, the caller drops only the rest.
   */
  append(
    records: readonly { subject: string; msgID: string; data: string; session?: string; seq?: number }[],
  ): SpoolPos[] {
    const ends: SpoolPos[] = [];
    try {
      this.appendTo(ends, records);
    } catch (err) {
      if (ends.length > 0) this.sync();
      throw err instanceof AuditError ? new SpoolWriteError(ends, err) : err;
    }
    if (ends.length > 0) this.sync();
    return ends;
  }

  private appendTo(
    ends: SpoolPos[],
    records: readonly { subject: string; msgID: string; data: string; session?: string; seq?: number }[],
  ): void {
    let i = 0;
    while (i < records.length) {
      if (this.writeFd === undefined) this.openWriteSegment();
      const size = this.segments.get(this.writeSeg) ?? 0;
      // Where the file ends: past a piece, if one is left, which this write ends first.
      const at = size + this.pieceBytes;
      const parts: string[] = this.pieceBytes > 0 ? [PIECE_END] : [];
      let batchBytes = this.pieceBytes > 0 ? PIECE_END.length : 0;
      const first = ends.length;
      for (; i < records.length; i++) {
        const r = records[i];
        const line = spoolLine(r.subject, r.msgID, r.data);
        const n = Buffer.byteLength(line);
        if (this.totalBytes + batchBytes + n > this.maxBytes) {
          this.refused = true;
          break;
        }
        parts.push(line);
        batchBytes += n;
        ends.push({ segment: this.writeSeg, offset: at + batchBytes });
        if (at + batchBytes >= this.segmentBytes) {
          i++;
          break;
        }
      }
      const count = ends.length - first;
      if (count === 0) break;
      const buf = Buffer.from(parts.join(''));
      let off = 0;
      try {
        while (off < batchBytes) off += writeSync(this.writeFd!, buf, off, batchBytes - off, at + off);
      } catch (err) {
        // The records this write left whole (none where its cut could be taken back out) are in the spool.
        const whole = this.cutShort(buf, off, at);
        while (ends.length > first && ends[ends.length - 1].offset > whole) ends.pop();
        this.wrote(records, i - count, ends.length - first);
        throw new AuditError('AUDIT_SPOOL_IO', `cannot write audit spool ${this.dir}`, { cause: err });
      }
      this.wrote(records, i - count, count);
      this.pieceBytes = 0;
      this.segments.set(this.writeSeg, at + batchBytes);
      this.totalBytes += batchBytes;
      if (at + batchBytes >= this.segmentBytes) this.rotate();
      if (this.totalBytes >= this.maxBytes) break;
    }
  }

  /** `n` records from `records[from]` on are written whole: a failed sync may lose them (the at-risk record). */
  private wrote(records: readonly { session?: string; seq?: number }[], from: number, n: number): void {
    if (this.fsync !== 'never')
      for (let k = from; k < from + n; k++) this.unsynced.wrote(records[k].session, records[k].seq);
  }

  /**
   * A write at `at` failed after `off` bytes (the disk filled part way through). Takes them back out, so the segment
   * stays a sequence of whole lines. Where that fails (EPERM: an append-only segment), what was written stays: its
   * whole lines count, and what follows the last of them is the segment's piece, ended by the next write (PIECE_END).
   * Returns the end of the segment's last whole line.
   */
  private cutShort(buf: Buffer, off: number, at: number): number {
    const size = at - this.pieceBytes;
    if (off === 0) return size;
    try {
      ftruncateSync(this.writeFd!, at);
      return size;
    } catch {}
    this.totalBytes += off;
    // JSON text holds no raw newline, and UTF-8 has no 0x0a inside a character: a newline ends a line.
    const nl = buf.lastIndexOf(0x0a, off - 1);
    if (nl < 0) {
      this.pieceBytes += off;
      return size;
    }
    this.pieceBytes = off - nl - 1;
    this.segments.set(this.writeSeg, at + nl + 1);
    return at + nl + 1;
  }

  /** Reads up to `max` records after the last read position, oldest first. */
  read(max: number): SpoolRecord[] {
    const out: SpoolRecord[] = [];
    while (out.length < max && !this.readAll) {
      const seg = this.readPos.segment;
      const size = this.segments.get(seg);
      if (size === undefined || this.readPos.offset >= size) {
        // Past the end of an older segment: the next one holds the continuation.
        const next = [...this.segments.keys()].find((s) => s > seg);
        if (next === undefined) break;
        this.readPos = { segment: next, offset: 0 };
        continue;
      }
      this.readLines(seg, size, max, out);
    }
    return out;
  }

  /** Everything up to and including the record ending at `pos` is delivered. */
  ack(pos: SpoolPos): void {
    this.ackPos = pos;
    this.cursorDirty = true;
    for (const [seg, size] of this.segments) {
      if (seg >= pos.segment) break;
      this.removeSegment(seg, size);
    }
  }

  /**
   * Calls `visit` with the message id of each record not yet delivered (from the acknowledged position on), oldest
   * first; undefined for a line that names none. Only the id field is read, the checksums are not checked: this
   * names what a shutdown leaves behind, within the seconds the pod has left, and never sends anything.
   */
  forEachPending(visit: (msgID: string | undefined) => void): void {
    for (const [seg, size] of this.segments) {
      if (seg < this.ackPos.segment) continue;
      const from = seg === this.ackPos.segment ? this.ackPos.offset : 0;
      if (from >= size) continue;
      const buf = Buffer.allocUnsafe(size - from);
      const fd = openSync(join(this.dir, segName(seg)), 'r');
      let got = 0;
      try {
        while (got < buf.length) {
          const n = readSync(fd, buf, got, buf.length - got, from + got);
          if (n === 0) break;
          got += n;
        }
      } finally {
        closeSync(fd);
      }
      let start = 0;
      for (let nl = buf.indexOf(10, 0); nl >= 0 && nl < got; nl = buf.indexOf(10, start)) {
        // The piece of a cut-short write (PIECE_END) is no record: its event was declared when the write failed.
        if (!(nl > start && buf[nl - 1] === CAN)) {
          const t1 = buf.indexOf(9, start);
          const t2 = t1 < 0 || t1 >= nl ? -1 : buf.indexOf(9, t1 + 1);
          visit(t2 < 0 || t2 >= nl ? undefined : buf.toString('utf8', t1 + 1, t2));
        }
        start = nl + 1;
      }
    }
  }

  /** Writes the cursor file (cheap; the caller debounces). Not fsync'd: a crash only re-sends, never loses. */
  saveCursor(): void {
    if (!this.cursorDirty) return;
    this.cursorDirty = false;
    const tmp = join(this.dir, 'cursor.tmp');
    writeFileSync(tmp, JSON.stringify(this.ackPos));
    renameSync(tmp, join(this.dir, 'cursor'));
  }

  /** Once everything is delivered: deletes all segments and starts over at a fresh segment. */
  reset(): void {
    if (!this.empty) return;
    this.closeWriteSegment();
    for (const [seg, size] of [...this.segments]) this.removeSegment(seg, size);
    this.writeSeg += 1;
    this.readPos = { segment: this.writeSeg, offset: 0 };
    this.ackPos = { ...this.readPos };
    this.cursorDirty = true;
    this.saveCursor();
  }

  close(): void {
    this.saveCursor();
    this.closeWriteSegment();
    if (this.record) this.recordClosed = this.record.close();
  }

  /** Resolves once the at-risk record's last write after close() ended, and the background fdatasync with it. */
  async closed(): Promise<void> {
    if (this.syncing) await new Promise<void>((r) => this.syncWaiters.push(r));
    await this.recordClosed;
  }

  private readLines(seg: number, size: number, max: number, out: SpoolRecord[]): void {
    const fd = openSync(join(this.dir, segName(seg)), 'r');
    try {
      let chunk = READ_CHUNK;
      for (;;) {
        const len = Math.min(chunk, size - this.readPos.offset);
        const buf = Buffer.allocUnsafe(len);
        const got = readSync(fd, buf, 0, len, this.readPos.offset);
        let start = 0;
        let nl = buf.indexOf(10, 0);
        if (nl < 0 || nl >= got) {
          if (len >= size - this.readPos.offset) {
            throw new AuditError('AUDIT_SPOOL_CORRUPT', `audit spool segment ${seg} ends without a newline`);
          }
          chunk *= 2; // one record longer than the chunk
          continue;
        }
        while (nl >= 0 && nl < got && out.length < max) {
          if (nl > start && buf[nl - 1] === CAN) {
            // The piece of a cut-short write (PIECE_END): its event was dropped, and declared, when it failed.
            start = nl + 1;
            nl = buf.indexOf(10, start);
            continue;
          }
          // A line that does not check out (disk damage, a hand edit) is no record: the caller declares it lost.
          const { record, damaged } = decodeSpoolLine(buf, start, nl);
          const end = { segment: seg, offset: this.readPos.offset + nl + 1 };
          if (damaged) {
            this.skippedLines++;
            out.push({ subject: '', msgID: '', data: '', end, damaged: true });
          }
          if (record) out.push({ subject: record.subject, msgID: record.msgID, data: record.data, end });
          start = nl + 1;
          nl = buf.indexOf(10, start);
        }
        this.readPos = { segment: seg, offset: this.readPos.offset + start };
        return;
      }
    } finally {
      closeSync(fd);
    }
  }

  private sync(): void {
    if (this.fsync === 'never' || this.writeFd === undefined) return;
    if (this.fsync === 'always') {
      // The records are written (append returns their ends): a failed sync makes the spool not durable, not them lost.
      const token = this.unsynced.syncStarting();
      let err: Error | null = null;
      try {
        fdatasyncSync(this.writeFd);
      } catch (e) {
        err = e as Error;
      }
      this.synced(err, token);
      return;
    }
    if (this.syncing) {
      this.syncAgain = true;
      return;
    }
    this.syncing = true;
    const fd = this.writeFd;
    this.syncingFd = fd;
    const token = this.unsynced.syncStarting();
    fdatasync(fd, (err) => {
      this.syncing = false;
      this.syncingFd = undefined;
      if (this.closeAfterSync) {
        this.closeAfterSync = false;
        closeSync(fd);
      }
      this.synced(err, token);
      for (const w of this.syncWaiters.splice(0)) w();
      // Records appended while this sync ran, perhaps to a segment opened since: sync whatever segment is current.
      if (this.syncAgain) {
        this.syncAgain = false;
        this.sync();
      }
    });
  }

  /** What failed syncs may have lost (cause `fsync_failed`), once; undefined when nothing. */
  takeSyncGap(): AuditGap | undefined {
    this.carriedRisk = false;
    return this.unsynced.take();
  }

  private synced(err: Error | null, token: number): void {
    this.unsynced.synced(token, !err);
    if (err) {
      this.onSyncError?.(err);
      this.syncFailed = true;
      this.lastSyncFailure = performance.now();
    } else if (this.syncFailed && performance.now() - this.lastSyncFailure >= SYNC_FAILURE_HOLD_MS) {
      this.syncFailed = false;
      this.onSyncRecovered?.();
    }
  }

  private openWriteSegment(): void {
    try {
      this.writeFd = openSync(join(this.dir, segName(this.writeSeg)), 'a', 0o600);
      this.segments.set(this.writeSeg, fstatSync(this.writeFd).size - this.pieceBytes);
    } catch (err) {
      throw new AuditError('AUDIT_SPOOL_IO', `cannot open audit spool segment in ${this.dir}`, { cause: err });
    }
  }

  private rotate(): void {
    this.closeWriteSegment();
    this.writeSeg += 1;
  }

  private closeWriteSegment(): void {
    if (this.writeFd === undefined) return;
    const fd = this.writeFd;
    this.writeFd = undefined;
    // A batch fdatasync may still be queued on this fd: finish durability synchronously before closing it. Its
    // records are written whatever the sync says: a failure is reported (syncFailed), not thrown as a failed write.
    if (this.fsync !== 'never') {
      const token = this.unsynced.syncStarting();
      let err: Error | null = null;
      try {
        fdatasyncSync(fd);
      } catch (e) {
        err = e as Error;
      }
      this.synced(err, token);
    }
    // A background fdatasync still queued on this fd must not find it closed: it failed with EBADF, which read as a
    // failed sync (the sink turned not ready and declared a gap for nothing; under load, with the thread pool behind,
    // it did), or, with the number reused meanwhile, it synced another file. Its callback closes the fd instead.
    if (this.syncingFd === fd) this.closeAfterSync = true;
    else closeSync(fd);
  }

  private removeSegment(seg: number, size: number): void {
    if (seg === this.writeSeg) {
      this.closeWriteSegment();
      this.totalBytes -= this.pieceBytes;
      this.pieceBytes = 0;
    }
    try {
      unlinkSync(join(this.dir, segName(seg)));
    } catch {}
    this.segments.delete(seg);
    this.totalBytes -= size;
    if (size > 0) this.refused = false;
  }

  private loadCursor(): SpoolPos | undefined {
    try {
      const c = JSON.parse(readFileSync(join(this.dir, 'cursor'), 'utf8')) as SpoolPos;
      return Number.isSafeInteger(c.segment) && Number.isSafeInteger(c.offset) ? c : undefined;
    } catch {
      return undefined;
    }
  }

  private cutTornTail(seg: number): void {
    const path = join(this.dir, segName(seg));
    const size = this.segments.get(seg) ?? 0;
    if (size === 0) return;
    // Read-only: an append-only segment opens for writing only with O_APPEND.
    const fd = openSync(path, 'r');
    let keep: number;
    try {
      const tail = Buffer.alloc(Math.min(size, 1024 * 1024));
      readSync(fd, tail, 0, tail.length, size - tail.length);
      const nl = tail.lastIndexOf(10);
      if (nl === tail.length - 1) return;
      keep = nl < 0 ? (tail.length === size ? 0 : size) : size - tail.length + nl + 1;
      if (keep === size)
        throw new AuditError('AUDIT_SPOOL_CORRUPT', `audit spool segment ${seg} has a torn record longer than 1 MiB`);
    } finally {
      closeSync(fd);
    }
    try {
      truncateSync(path, keep);
    } catch {
      // An append-only segment (EPERM): the piece stays, and the first append ends it (PIECE_END).
      this.pieceBytes = size - keep;
    }
    this.segments.set(seg, keep);
  }
}
