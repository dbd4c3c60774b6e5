import { createHash } from 'node:crypto';
import {
  closeSync,
  fdatasync,
  fdatasyncSync,
  fstatSync,
  openSync,
  readSync,
  write as writeAsync,
  writeSync,
} from 'node:fs';
import { dirname } from 'node:path';
import type { AuditGap } from '@pgwarden/policy';
import { AuditError } from './errors.js';

/**
 * Room for the record: a gap names at most 1000 session ranges (unsynced-events.ts), about 80 bytes each.
 * The file is this size from the start, so rewriting it needs no new blocks.
 */
export const AT_RISK_RECORD_BYTES = 128 * 1024;
const MAGIC = 'pgwarden-audit-at-risk 1';
/** How often a record that could not be created or written is tried again. */
export const AT_RISK_RETRY_MS = 1000;

/** What a record read at start says about the run before. */
export type CarriedRisk =
  /** Failed syncs of that run may have lost these events, and no declaration of them is known to be durable. */
  | { gap: AuditGap }
  /** A record is there but does not check out (a write of it was cut short): which events is unknown. */
  | { unreadable: true };

/**
 * The events a failed fdatasync may have lost (unsynced-events.ts), kept in a small file beside the audit file or in
 * the spool directory until the `audit.gap` that names them is itself on disk: a sidecar that restarts before its
 * syncs recover then still declares them. Only the failure path writes it, never an event's: nothing per event.
 *
 * The disk that failed a sync may fail this file's too. Two things make it likelier to stick: the file is written
 * whole (zeros) and synced at open, while the disk is healthy, so later records overwrite blocks that already have
 * their storage (a thin-provisioned volume out of space fails only writes that need new blocks); and each record
 * carries its length and SHA-256, so one cut short reads as unreadable (declared as "which events unknown"), never as
 * "nothing at risk". A record whose sync failed still survives a restart of the sidecar (the page cache keeps it),
 * not a crash of the node: `durable` says which. A write or sync that failed is tried again every AT_RISK_RETRY_MS
 * until one succeeds (a sidecar gone idle after a failure would otherwise leave the ranges unrecorded until the next).
 */
export class AtRiskRecord {
  private readonly fd: number;
  /** The record to write next (undefined: none queued); `null` clears the file. */
  private next: AuditGap | null | undefined;
  /** What the file should hold: the last record asked for. */
  private wanted: AuditGap | null = null;
  private writing = false;
  private retry: NodeJS.Timeout | undefined;
  private closing = false;
  private readonly idle: (() => void)[] = [];
  /** The last record written was synced. */
  durable = true;
  private lastError = '';

  private constructor(
    readonly path: string,
    fd: number,
    private readonly onError: (err: Error) => void,
    private readonly onRecovered?: () => void,
  ) {
    this.fd = fd;
  }

  /**
   * Why the record cannot be relied on now, naming its path and errno: events are at risk and their record did not
   * reach the disk (it is being written again). A record that failed to clear is no problem: a restart then declares
   * a range again, which is a duplicate, never a loss.
   */
  get problem(): string | undefined {
    return this.durable || this.wanted === null ? undefined : this.lastError;
  }

  /**
   * Opens (creating and preallocating) the record at `path`; returns it with what the run before left there. Throws
   * AuditError(AUDIT_AT_RISK_RECORD) naming the path and the errno when it cannot be created, read, preallocated or
   * synced: a sink without it would run while a failed sync and a restart could lose events with no gap ever
   * declared (at-risk-keeper.ts keeps such a sink not ready and tries again). `onError` hears of the first of a run of
   * later writes that fail, `onRecovered` of the write that ends it.
   */
  static open(
    path: string,
    onError: (err: Error) => void,
    onRecovered?: () => void,
  ): { record: AtRiskRecord; carried?: CarriedRisk } {
    let fd: number | undefined;
    try {
      // Created if missing; then opened for writes at offset 0 (O_APPEND would ignore the offset).
      closeSync(openSync(path, 'a', 0o600));
      fd = openSync(path, 'r+');
      const record = new AtRiskRecord(path, fd, onError, onRecovered);
      const size = fstatSync(fd).size;
      const carried = size > 0 ? readRecord(fd, size) : undefined;
      if (carried === undefined) {
        // Fresh or cleared: written whole now. A carried record stays as it is until its gap is declared.
        record.writeNow(null);
        syncDirectory(path);
      }
      return { record, carried };
    } catch (err) {
      if (fd !== undefined) closeSync(fd);
      throw new AuditError(
        'AUDIT_AT_RISK_RECORD',
        `cannot create the audit at-risk record ${path} (${errno(err)}): without it a failed fdatasync followed by a ` +
          'restart could lose events without a declared gap',
        { cause: err },
      );
    }
  }

  /** Records `gap` as at risk (null: nothing is), off the event loop; coalesces with a write in flight. */
  save(gap: AuditGap | null): void {
    this.next = gap;
    this.wanted = gap;
    if (!this.writing) this.writeNext();
  }

  /** Resolves once every save so far is written (and its sync tried). */
  settled(): Promise<void> {
    return this.writing ? new Promise((r) => this.idle.push(r)) : Promise.resolve();
  }

  async close(): Promise<void> {
    this.closing = true;
    clearTimeout(this.retry);
    await this.settled();
    closeSync(this.fd);
  }

  private writeNext(): void {
    clearTimeout(this.retry);
    this.retry = undefined;
    const gap = this.next;
    if (gap === undefined) {
      for (const w of this.idle.splice(0)) w();
      return;
    }
    this.next = undefined;
    this.writing = true;
    const buf = encode(gap, false);
    writeAsync(this.fd, buf, 0, buf.length, 0, (werr) => {
      const done = (err: Error | null) => {
        this.writing = false;
        if (err) {
          this.lastError = `cannot write the audit at-risk record ${this.path} (${errno(err)})`;
          if (this.durable) this.onError(new AuditError('AUDIT_AT_RISK_RECORD', this.lastError, { cause: err }));
          this.durable = false;
          // Written again until it sticks (a save meanwhile writes its own record at once instead).
          if (this.next === undefined) this.next = gap;
          if (!this.closing) {
            this.retry = setTimeout(() => this.writeNext(), AT_RISK_RETRY_MS);
            this.retry.unref();
          }
          for (const w of this.idle.splice(0)) w();
          return;
        }
        if (!this.durable) {
          this.durable = true;
          this.onRecovered?.();
        }
        this.writeNext();
      };
      if (werr) done(werr);
      else fdatasync(this.fd, done);
    });
  }

  /** At open only: written and synced before the sink takes events. */
  private writeNow(gap: AuditGap | null): void {
    const buf = encode(gap, true);
    for (let off = 0; off < buf.length; ) off += writeSync(this.fd, buf, off, buf.length - off, off);
    fdatasyncSync(this.fd);
  }
}

/** `<magic> <length> <sha256 hex>\n<JSON>` (length 0 and `-`: nothing at risk); `whole`: zeros to the full size. */
function encode(gap: AuditGap | null, whole: boolean): Buffer {
  const buf = Buffer.alloc(AT_RISK_RECORD_BYTES);
  let body = gap ? Buffer.from(JSON.stringify(gap)) : Buffer.alloc(0);
  if (gap && body.length > AT_RISK_RECORD_BYTES - 200) {
    // More ranges than fit: keep the first ones and say the list is cut (as a gap past MAX_RANGES does).
    const sessions = [...(gap.sessions ?? [])];
    while (body.length > AT_RISK_RECORD_BYTES - 200 && sessions.length > 0) {
      sessions.length = Math.floor(sessions.length * 0.9);
      body = Buffer.from(JSON.stringify({ ...gap, sessions, truncated: true }));
    }
  }
  const sum = body.length > 0 ? createHash('sha256').update(body).digest('hex') : '-';
  const head = buf.write(`${MAGIC} ${body.length} ${sum}\n`, 0);
  body.copy(buf, head);
  // Past the record, the file's earlier bytes stay: its length says where it ends, so a rewrite is a few hundred bytes.
  return whole ? buf : buf.subarray(0, head + body.length);
}

function readRecord(fd: number, size: number): CarriedRisk | undefined {
  const buf = Buffer.alloc(Math.min(size, AT_RISK_RECORD_BYTES));
  const got = readSync(fd, buf, 0, buf.length, 0);
  const nl = buf.indexOf(10);
  const head = nl > 0 && nl < got ? buf.toString('latin1', 0, nl).split(' ') : [];
  if (head.length !== 4 || `${head[0]} ${head[1]}` !== MAGIC) return { unreadable: true };
  const len = Number(head[2]);
  if (len === 0 && head[3] === '-') return undefined;
  const body = buf.subarray(nl + 1, nl + 1 + len);
  if (!Number.isSafeInteger(len) || body.length !== len) return { unreadable: true };
  if (createHash('sha256').update(body).digest('hex') !== head[3]) return { unreadable: true };
  try {
    const gap = JSON.parse(body.toString('utf8')) as AuditGap;
    return Array.isArray(gap.sessions) ? { gap } : { unreadable: true };
  } catch {
    return { unreadable: true };
  }
}

/** Makes a new file's directory entry durable (https://man7.org/linux/man-pages/man2/fsync.2.html, NOTES). */
function syncDirectory(path: string): void {
  const fd = openSync(dirname(path), 'r');
  try {
    fdatasyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function errno(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
}
