import { closeSync, fdatasync, fdatasyncSync, openSync, writeSync } from 'node:fs';
import type { Registry } from 'prom-client';
import { auditMetrics } from './audit-metrics.js';
import { type AuditSink, type AuditSinkStats, eventJson, type GapListener } from './audit-sink.js';
import { DropTracker, nowMicros } from './drop-tracker.js';
import { AuditError } from './errors.js';

export interface FileSinkOptions {
  path: string;
  /**
   * batch (default): fdatasync off the event loop, at most one starting per BATCH_SYNC_INTERVAL_MS, covering every
   * write before it; always: before emit returns; never.
   */
  fsync?: 'always' | 'batch' | 'never';
  registry?: Registry;
}

/**
 * `batch` mode starts at most one fdatasync per this many milliseconds (docs/audit.md). Back-to-back syncs under load
 * cost a thread-pool round trip and a disk flush for nearly every event-loop turn that wrote (measured: 2–5 µs of
 * system CPU per statement more than with coalescing, docs/benchmarks.md); waiting up to 5 ms lets one flush cover
 * many turns, while a power loss still loses at most the last ~5 ms of events plus the flush in flight.
 */
export const BATCH_SYNC_INTERVAL_MS = 5;

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
  openFileSinks.add(flush);
  installExitHook();
  return {
    emit: (e) => {
      published++;
      if (pending.push(`${eventJson(e)}\n`) === 1) setImmediate(flush);
    },
    ready: () => true,
    close: async () => {
      flush();
      openFileSinks.delete(flush);
    },
    stats: () => ({ kind: 'stdout', queued: pending.length, published, dropped: 0 }),
  };
}

/**
 * Appends JSON lines to a file. Lines are collected for the rest of the current event-loop turn and written in emit
 * order with one write(2) at its end (setImmediate; also at close and at process exit), so an event has reached the
 * kernel (survives a crash of the sidecar) by the end of the turn that recorded it, as in the spool: a write(2) per
 * event cost more than building it. fdatasync follows per the fsync policy (what survives a crash of the machine):
 * `batch` coalesces them (BATCH_SYNC_INTERVAL_MS); `always` writes and fdatasyncs before emit returns.
 */
export function createFileSink(opts: FileSinkOptions): AuditSink {
  const fsync = opts.fsync ?? 'batch';
  const metrics = auditMetrics(opts.registry);
  const drops = new DropTracker();
  let fd: number;
  try {
    fd = openSync(opts.path, 'a', 0o600);
  } catch (err) {
    throw new AuditError('AUDIT_BAD_SPEC', `cannot open audit file ${opts.path}`, { cause: err });
  }
  let healthy = true;
  let published = 0;
  let dropped = 0;
  let syncing = false;
  let dirty = false;
  let syncs = 0;
  let lastSyncStart = Number.NEGATIVE_INFINITY;
  let syncTimer: NodeJS.Timeout | undefined;
  let closed = false;
  let gapListener: GapListener | undefined;
  const idleWaiters: (() => void)[] = [];
  /** Lines of this turn not written yet, and the session/seq of each (for the gap record if the write fails). */
  let pending: string[] = [];
  let pendingSessions: ({ id?: string; seq?: number } | undefined)[] = [];
  let flushScheduled = false;

  const wakeIdle = () => {
    if (pending.length === 0 && !dirty && !syncing) for (const w of idleWaiters.splice(0)) w();
  };
  const sync = () => {
    if (syncing || !dirty || closed || syncTimer) return;
    const wait = lastSyncStart + BATCH_SYNC_INTERVAL_MS - performance.now();
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
    fdatasync(fd, () => {
      syncing = false;
      if (dirty) sync();
      else wakeIdle();
    });
  };
  const drop = (sessions: ({ id?: string; seq?: number } | undefined)[]) => {
    healthy = false;
    dropped += sessions.length;
    metrics.dropped.inc({ sink: 'file', cause: 'file_io' }, sessions.length);
    const at = nowMicros();
    for (const s of sessions) drops.record(s?.id, s?.seq, 'file_io', at);
  };
  const flush = () => {
    flushScheduled = false;
    if (pending.length === 0) return;
    const lines = pending;
    const sessions = pendingSessions;
    pending = [];
    pendingSessions = [];
    try {
      const buf = Buffer.from(lines.length === 1 ? lines[0] : lines.join(''));
      // write(2) on a regular file is complete unless the disk fills; loop so a short write is not silently cut.
      for (let off = 0; off < buf.length; ) off += writeSync(fd, buf, off);
      if (fsync === 'always') fdatasyncSync(fd);
      else if (fsync === 'batch') {
        dirty = true;
        sync();
      }
      healthy = true;
      published += lines.length;
      metrics.published.inc({ sink: 'file' }, lines.length);
      if (drops.pending > 0 && gapListener) {
        const gap = drops.take()!;
        const l = gapListener;
        queueMicrotask(() => l(gap));
      }
    } catch {
      drop(sessions);
    }
    wakeIdle();
  };
  openFileSinks.add(flush);
  installExitHook();

  const stats = (): AuditSinkStats => ({ kind: 'file', queued: pending.length, published, dropped, syncs });
  return {
    emit(e) {
      const session = e.session as { id?: string; seq?: number } | undefined;
      if (closed) {
        drop([session]);
        return;
      }
      pending.push(`${eventJson(e)}\n`);
      pendingSessions.push(session);
      if (fsync === 'always') flush();
      else if (!flushScheduled) {
        flushScheduled = true;
        setImmediate(flush);
      }
    },
    ready: () => healthy && !closed,
    onGap: (l) => {
      gapListener = l;
    },
    stats,
    whenIdle: () =>
      pending.length === 0 && !dirty && !syncing ? Promise.resolve() : new Promise((r) => idleWaiters.push(r)),
    async close() {
      if (closed) return;
      flush();
      closed = true;
      clearTimeout(syncTimer);
      syncTimer = undefined;
      openFileSinks.delete(flush);
      if (fsync !== 'never') fdatasyncSync(fd);
      closeSync(fd);
      for (const w of idleWaiters.splice(0)) w();
    },
  };
}
