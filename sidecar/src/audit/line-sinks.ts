import { closeSync, fdatasync, fdatasyncSync, openSync, writeSync } from 'node:fs';
import type { Registry } from 'prom-client';
import { auditMetrics } from './audit-metrics.js';
import { type AuditSink, type AuditSinkStats, eventJson, type GapListener } from './audit-sink.js';
import { DropTracker, nowMicros } from './drop-tracker.js';
import { AuditError } from './errors.js';

export interface FileSinkOptions {
  path: string;
  /** batch (default): fdatasync once per event-loop turn that wrote, off the event loop; always: before emit returns; never. */
  fsync?: 'always' | 'batch' | 'never';
  registry?: Registry;
}

/** One JSON object per line on standard output (for `kubectl logs` and local runs): no durability of its own. */
export function createStdoutSink(): AuditSink {
  let published = 0;
  return {
    emit: (e) => {
      published++;
      process.stdout.write(`${eventJson(e)}\n`);
    },
    ready: () => true,
    close: async () => {},
    stats: () => ({ kind: 'stdout', queued: 0, published, dropped: 0 }),
  };
}

/**
 * Appends JSON lines to a file. Each event is written with write(2) before emit returns (it survives a crash of
 * the sidecar); fdatasync follows per the fsync policy (what survives a crash of the machine).
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
  let closed = false;
  let gapListener: GapListener | undefined;
  const idleWaiters: (() => void)[] = [];

  const sync = () => {
    if (syncing || !dirty || closed) return;
    syncing = true;
    dirty = false;
    fdatasync(fd, () => {
      syncing = false;
      if (dirty) setImmediate(sync);
      else for (const w of idleWaiters.splice(0)) w();
    });
  };

  const stats = (): AuditSinkStats => ({ kind: 'file', queued: 0, published, dropped });
  return {
    emit(e) {
      const session = e.session as { id?: string; seq?: number } | undefined;
      const line = `${eventJson(e)}\n`;
      try {
        if (closed) throw new AuditError('AUDIT_CLOSED', 'audit file sink is closed');
        writeSync(fd, line);
        if (fsync === 'always') fdatasyncSync(fd);
        else if (fsync === 'batch' && !dirty) {
          dirty = true;
          setImmediate(sync);
        }
        healthy = true;
        published++;
        metrics.published.inc({ sink: 'file' });
        if (drops.pending > 0 && gapListener) {
          const gap = drops.take()!;
          const l = gapListener;
          queueMicrotask(() => l(gap));
        }
      } catch {
        healthy = false;
        dropped++;
        metrics.dropped.inc({ sink: 'file', cause: 'file_io' });
        drops.record(session?.id, session?.seq, 'file_io', nowMicros());
      }
    },
    ready: () => healthy && !closed,
    onGap: (l) => {
      gapListener = l;
    },
    stats,
    whenIdle: () => (!dirty && !syncing ? Promise.resolve() : new Promise((r) => idleWaiters.push(r))),
    async close() {
      if (closed) return;
      closed = true;
      if (fsync !== 'never') fdatasyncSync(fd);
      closeSync(fd);
      for (const w of idleWaiters.splice(0)) w();
    },
  };
}
