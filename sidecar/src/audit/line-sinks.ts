import { closeSync, fdatasync, fdatasyncSync, fstatSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import type { AuditGap } from '@pgwarden/policy';
import type { Registry } from 'prom-client';
import { AtRiskKeeper } from './at-risk-keeper.js';
import type { CarriedRisk } from './at-risk-record.js';
import { auditMetrics } from './audit-metrics.js';
import { type AuditSink, type AuditSinkStats, eventJson, type GapListener } from './audit-sink.js';
import { SYNC_FAILURE_HOLD_MS } from './disk-spool.js';
import { DropTracker, nowMicros } from './drop-tracker.js';
import { AuditError } from './errors.js';
import { UnsyncedEvents } from './unsynced-events.js';

export interface FileSinkOptions {
  path: string;
  /**
   * batch (default): fdatasync off the event loop, at most one starting per BATCH_SYNC_INTERVAL_MS, covering every
   * write before it; always: before emit returns; never.
   */
  fsync?: 'always' | 'batch' | 'never';
  /** `batch` mode: the least time between the starts of two fdatasyncs (ms). Default BATCH_SYNC_INTERVAL_MS. */
  syncIntervalMs?: number;
  /** The least time between two write(2)s (ms; 0: one per event-loop turn). Default WRITE_INTERVAL_MS. */
  writeIntervalMs?: number;
  registry?: Registry;
  log?: (level: 'info' | 'warn' | 'error', msg: string, err?: unknown) => void;
}

/**
 * `batch` mode starts at most one fdatasync per this many milliseconds (docs/audit.md). Back-to-back syncs under load
 * cost a thread-pool round trip and a disk flush for nearly every event-loop turn that wrote (measured: 2–5 µs of
 * system CPU per statement more than with coalescing, docs/benchmarks.md); waiting up to 5 ms lets one flush cover
 * many turns, while a power loss still loses at most the last ~5 ms of events plus the flush in flight. Where each
 * flush is dear (a VM whose every flush exits to the hypervisor: 5–11 µs per statement at 5 ms, docs/benchmarks.md)
 * `--audit-fsync batch:<interval>` widens the window on purpose.
 */
export const BATCH_SYNC_INTERVAL_MS = 5;

/**
 * The file sink writes at most once per this many milliseconds: a turn that follows a quiet millisecond writes at
 * its own end, busier turns share the next write. On ext4 each append costs its syscall, the inode's lock and a
 * journal handle whatever its size: one per event-loop turn cost 2–5 µs more CPU per statement under pgbench -c 8
 * than one per millisecond (docs/benchmarks.md, seventeenth session). A kill of the sidecar
 * can then take up to ~1 ms of events instead of one turn's; the NATS sink already holds events for up to 5 ms
 * before sending them (JetStreamPublisher's linger), and `--audit-fsync always` still writes each one at once.
 */
export const WRITE_INTERVAL_MS = 1;

/** Flushes of the open line sinks: run at process exit so a turn's buffered lines are not lost on the way out. */
const openFileSinks = new Set<() => void>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const f of openFileSinks) f();
  });
}

/**
 * One JSON object per line on standard output (for `kubectl logs` and local runs): no durability of its own.
 * A turn's lines go out as one write at its end (and at close / process exit), in order.
 */
export function createStdoutSink(): AuditSink {
  let published = 0;
  let pending: string[] = [];
  const flush = () => {
    if (pending.length === 0) return;
    const text = pending.join('');
    pending = [];
    process.stdout.write(text);
  };
  const add = (json: string) => {
    published++;
    if (pending.push(`${json}\n`) === 1) setImmediate(flush);
  };
  openFileSinks.add(flush);
  installExitHook();
  return {
    emit: (e) => add(eventJson(e)),
    emitJson: add,
    ready: () => true,
    close: async () => {
      flush();
      openFileSinks.delete(flush);
    },
    stats: () => ({ kind: 'stdout', queued: pending.length, published, dropped: 0 }),
  };
}

/**
 * Appends JSON lines to a file. Lines are collected and written in emit order with one write(2) at the end of the
 * event-loop turn that recorded them, or, when the last write is less than WRITE_INTERVAL_MS old, together with
 * the lines of the turns that follow until that interval is up (also at close and at process exit): an event has
 * reached the kernel (survives a crash of the sidecar) at most ~1 ms after its turn. A write(2) per event cost more
 * than building it. fdatasync follows per the fsync policy (what survives a crash of the machine): `batch`
 * coalesces them (BATCH_SYNC_INTERVAL_MS); `always` writes and fdatasyncs before emit returns.
 */
export function createFileSink(opts: FileSinkOptions): AuditSink {
  const fsync = opts.fsync ?? 'batch';
  const syncIntervalMs = opts.syncIntervalMs ?? BATCH_SYNC_INTERVAL_MS;
  const writeIntervalMs = opts.writeIntervalMs ?? WRITE_INTERVAL_MS;
  const metrics = auditMetrics(opts.registry);
  const drops = new DropTracker();
  const log = opts.log ?? (() => {});
  /** pgwarden_audit_ready, set when readiness changes (not per write). */
  let shownReady = true;
  const showReady = () => {
    const r = isReady();
    if (r === shownReady) return;
    shownReady = r;
    metrics.ready.set({ sink: 'file' }, r ? 1 : 0);
  };
  let fd: number;
  try {
    fd = openSync(opts.path, 'a', 0o600);
    endLastLine(opts.path, fd);
  } catch (err) {
    throw new AuditError('AUDIT_BAD_SPEC', `cannot open audit file ${opts.path}`, { cause: err });
  }
  // What failed syncs may have lost is kept beside the file until declared durably (at-risk-keeper.ts); while it
  // cannot be created or written the sink is not ready, and it is tried again.
  const record =
    fsync === 'never'
      ? undefined
      : new AtRiskKeeper(`${opts.path}.at-risk`, {
          onError: (err) => {
            log(
              'error',
              'audit file at-risk record cannot be created or written: the sink is not durable until it can ' +
                '(a failed sync and a restart could lose events undeclared); trying again every second',
              err,
            );
            // Later: at open this runs before the sink's state below exists.
            queueMicrotask(showReady);
          },
          onRecovered: (late) => {
            log('info', 'audit file at-risk record written again');
            if (late) {
              unsynced.restore(late);
              carried = late;
              const gap = gapListener && syncOk ? unsynced.take() : undefined;
              if (gap) {
                carried = undefined;
                reportGap(gapListener!, gap);
              }
            }
            showReady();
          },
        });
  let carried: CarriedRisk | undefined = record?.open();
  const isReady = () => healthy && syncOk && !closed && record?.problem === undefined;
  let healthy = true;
  shownReady = record?.problem === undefined;
  metrics.ready.set({ sink: 'file' }, shownReady ? 1 : 0);
  /**
   * The last fdatasync succeeded. Linux drops the dirty pages of a failed writeback and reports the error once, so
   * the events written before a failed sync may be gone while a retry succeeds (PostgreSQL PANICs for this): a failure
   * makes the sink not ready until a sync of later writes succeeds SYNC_FAILURE_HOLD_MS or more after the last
   * failure, which only shows that those reached the disk.
   */
  let syncOk = true;
  let lastSyncFailure = 0;
  let published = 0;
  let dropped = 0;
  let syncing = false;
  let dirty = false;
  let syncs = 0;
  let writes = 0;
  let lastSyncStart = Number.NEGATIVE_INFINITY;
  let syncTimer: NodeJS.Timeout | undefined;
  let closed = false;
  let gapListener: GapListener | undefined;
  /** What failed syncs may have lost, declared in an `audit.gap` once syncs succeed again. */
  const unsynced = new UnsyncedEvents(record);
  if (carried) unsynced.restore(carried);
  /** Gaps handed to the listener on a later microtask, not yet emitted (keeps whenIdle honest). */
  let gapsDue = 0;
  const idleWaiters: (() => void)[] = [];
  /** Events not written yet (JSON text, no newline), and each one's session and seq (for the gap record). */
  let pending: string[] = [];
  let pendingIds: (string | undefined)[] = [];
  let pendingSeqs: (number | undefined)[] = [];
  /** The pending write: at the end of this turn (Immediate) or when the write interval is up (Timeout). */
  let flushTimer: NodeJS.Immediate | NodeJS.Timeout | undefined;
  let flushLater = false;
  let lastWrite = Number.NEGATIVE_INFINITY;
  const lines = new LineBuffer();
  /** A write that failed part way left a piece of a line that could not be taken out: the next write ends it first. */
  let lineCut = false;

  /** close() waits for the background fdatasync: closing its fd under it fails it (EBADF) or syncs a reused number. */
  const syncWaiters: (() => void)[] = [];
  const wakeIdle = () => {
    if (pending.length === 0 && !dirty && !syncing && gapsDue === 0) for (const w of idleWaiters.splice(0)) w();
  };
  const sync = () => {
    if (syncing || !dirty || closed || syncTimer) return;
    const wait = lastSyncStart + syncIntervalMs - performance.now();
    if (wait > 0) {
      syncTimer = setTimeout(() => {
        syncTimer = undefined;
        sync();
      }, wait);
      return;
    }
    syncing = true;
    dirty = false;
    lastSyncStart = performance.now();
    syncs++;
    const token = unsynced.syncStarting();
    fdatasync(fd, (err) => {
      syncing = false;
      for (const w of syncWaiters.splice(0)) w();
      synced(err, token);
      if (dirty) sync();
      else wakeIdle();
    });
  };
  /** A sync on this thread (fsync always, close), its outcome reported as the background one's is. */
  const syncNow = () => {
    const token = unsynced.syncStarting();
    let err: Error | null = null;
    try {
      fdatasyncSync(fd);
    } catch (e) {
      err = e as Error;
    }
    synced(err, token);
  };
  const synced = (err: Error | null, token: number) => {
    unsynced.synced(token, !err);
    if (err) {
      metrics.fsyncFailures.inc({ sink: 'file' });
      if (syncOk) log('error', 'audit file fdatasync failed: events written before it may be lost; not ready', err);
      syncOk = false;
      lastSyncFailure = performance.now();
      showReady();
    } else if (!syncOk && performance.now() - lastSyncFailure >= SYNC_FAILURE_HOLD_MS) {
      syncOk = true;
      log('info', 'audit file fdatasync succeeded again');
      showReady();
      // Only now: the gap event itself goes to a file whose syncs work again.
      const gap = unsynced.take();
      if (gap && gapListener) reportGap(gapListener, gap);
    }
  };
  const reportGap = (l: GapListener, gap: AuditGap) => {
    // Outside this call stack: the listener emits into this sink (fsync always writes and syncs at once).
    gapsDue++;
    queueMicrotask(() => {
      gapsDue--;
      l(gap);
      wakeIdle();
    });
  };
  const drop = (ids: (string | undefined)[], seqs: (number | undefined)[], err?: unknown) => {
    if (healthy && err !== undefined) log('error', 'audit file write failed: events dropped; not ready', err);
    healthy = false;
    showReady();
    dropped += ids.length;
    metrics.dropped.inc({ sink: 'file', cause: 'file_io' }, ids.length);
    const at = nowMicros();
    for (let i = 0; i < ids.length; i++) drops.record(ids[i], seqs[i], 'file_io', at);
  };
  const flush = () => {
    // Called early (close, exit, `always`): the scheduled write must not run later as well.
    if (flushTimer !== undefined) {
      if (flushLater) clearTimeout(flushTimer as NodeJS.Timeout);
      else clearImmediate(flushTimer as NodeJS.Immediate);
      flushTimer = undefined;
    }
    if (pending.length === 0) return;
    if (writeIntervalMs > 0) lastWrite = performance.now();
    writes++;
    const texts = pending;
    const ids = pendingIds;
    const seqs = pendingSeqs;
    pending = [];
    pendingIds = [];
    pendingSeqs = [];
    let written = 0;
    let buf: Buffer | undefined;
    try {
      if (lineCut) {
        writeSync(fd, '\n');
        lineCut = false;
      }
      buf = lines.encode(texts);
      // write(2) on a regular file is complete unless the disk fills; loop so a short write is not silently cut.
      while (written < buf.length) written += writeSync(fd, buf, written, buf.length - written);
      wroteWhole(ids, seqs, ids.length);
      if (!healthy) {
        healthy = true;
        showReady();
      }
      if (drops.pending > 0 && gapListener) reportGap(gapListener, drops.take()!);
    } catch (err) {
      // The disk filled part way through: what did write ends in the start of a line whose events are now dropped (and
      // declared as a gap). Left in place, the next event would be appended to it and lost to every reader with it;
      // taking the write back out frees space on a full disk. Where that fails (an append-only file: EPERM), the lines
      // it holds whole stay, counted as written (a gap naming them would claim events lost that every reader has),
      // and the next write starts a new line after the piece.
      let whole = 0;
      if (written > 0 && buf) {
        try {
          ftruncateSync(fd, fstatSync(fd).size - written);
        } catch {
          let end = 0;
          // JSON text holds no raw newline (JSON.stringify escapes it), and UTF-8 has no 0x0a inside a character.
          for (let nl = buf.indexOf(0x0a); nl !== -1 && nl < written; nl = buf.indexOf(0x0a, nl + 1)) {
            whole++;
            end = nl + 1;
          }
          lineCut = end < written;
        }
      }
      if (whole > 0) wroteWhole(ids, seqs, whole);
      if (whole < ids.length) drop(whole > 0 ? ids.slice(whole) : ids, whole > 0 ? seqs.slice(whole) : seqs, err);
    }
    wakeIdle();
  };
  /** The first `n` of a write's events are in the file whole: counted, and synced per the fsync policy. */
  const wroteWhole = (ids: (string | undefined)[], seqs: (number | undefined)[], n: number) => {
    if (fsync !== 'never') for (let i = 0; i < n; i++) unsynced.wrote(ids[i], seqs[i]);
    if (fsync === 'always') {
      // Written (the kernel has them): a failed sync is a sync failure, not a drop.
      syncNow();
    } else if (fsync === 'batch') {
      dirty = true;
      sync();
    }
    published += n;
    metrics.published.inc({ sink: 'file' }, n);
  };
  openFileSinks.add(flush);
  installExitHook();

  const stats = (): AuditSinkStats => ({ kind: 'file', queued: pending.length, published, dropped, syncs, writes });
  const add = (json: string, id: string | undefined, seq: number | undefined) => {
    if (closed) {
      drop([id], [seq]);
      return;
    }
    pending.push(json);
    pendingIds.push(id);
    pendingSeqs.push(seq);
    if (fsync === 'always') flush();
    else if (flushTimer === undefined) {
      const wait = writeIntervalMs > 0 ? lastWrite + writeIntervalMs - performance.now() : 0;
      flushLater = wait > 0;
      flushTimer = flushLater ? setTimeout(flush, wait) : setImmediate(flush);
    }
  };
  return {
    emit(e) {
      const session = e.session as { id?: string; seq?: number } | undefined;
      add(eventJson(e), session?.id, session?.seq);
    },
    emitJson: add,
    ready: isReady,
    notReadyCause: () => (isReady() ? undefined : record?.problem),
    onGap: (l) => {
      gapListener = l;
      // A run before this one left events at risk undeclared (it stopped before its syncs recovered): declare them.
      const gap = carried && syncOk ? unsynced.take() : undefined;
      carried = undefined;
      if (gap) reportGap(l, gap);
    },
    stats,
    whenIdle: () =>
      pending.length === 0 && !dirty && !syncing && gapsDue === 0
        ? Promise.resolve()
        : new Promise((r) => idleWaiters.push(r)),
    async close() {
      if (closed) return;
      flush();
      closed = true;
      clearTimeout(syncTimer);
      syncTimer = undefined;
      openFileSinks.delete(flush);
      if (syncing) await new Promise<void>((r) => syncWaiters.push(r));
      if (fsync !== 'never') {
        // A failure here is reported like any other sync failure; the fd is closed all the same.
        syncNow();
      }
      closeSync(fd);
      await record?.close();
      for (const w of idleWaiters.splice(0)) w();
    },
  };
}

/**
 * A file that does not end with a newline was cut: a kill in the middle of a write, or a node crash after which the
 * blocks of a failed writeback read as zeros. The next event starts a line of its own, or it would be joined to the
 * broken one and lost to every reader with it; the broken line stays as it is (evidence), unparseable.
 */
function endLastLine(path: string, appendFd: number): void {
  const size = fstatSync(appendFd).size;
  if (size === 0) return;
  const last = Buffer.alloc(1);
  const rfd = openSync(path, 'r');
  try {
    readSync(rfd, last, 0, 1, size - 1);
  } finally {
    closeSync(rfd);
  }
  if (last[0] !== 0x0a) writeSync(appendFd, '\n');
}

/** Size of the buffer a file sink encodes each turn's lines into (turns that may need more get their own). */
const LINE_BUFFER_BYTES = 256 * 1024;

/**
 * Encodes a turn's JSON texts as newline-terminated UTF-8 lines into one buffer kept across turns, so a turn
 * allocates no Buffer of its own (its memory would be external to the V8 heap and freed only by a GC).
 */
class LineBuffer {
  private buf: Buffer | undefined;

  /** The bytes to write; valid until the next call. */
  encode(texts: string[]): Buffer {
    let units = 0;
    for (const t of texts) units += t.length + 1;
    // A UTF-16 unit takes at most 3 bytes of UTF-8 (a surrogate pair, 2 units, takes 4).
    if (units * 3 > LINE_BUFFER_BYTES) return Buffer.from(`${texts.join('\n')}\n`);
    this.buf ??= Buffer.allocUnsafeSlow(LINE_BUFFER_BYTES);
    const b = this.buf;
    const end = b.write(texts.length === 1 ? texts[0] : texts.join('\n'), 0);
    b[end] = 0x0a;
    return b.subarray(0, end + 1);
  }
}
