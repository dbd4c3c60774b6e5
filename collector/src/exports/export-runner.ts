import type { AuditEvent } from '../event.js';
import type { CollectorMetrics } from '../metrics.js';
import type { AuditStore } from '../store/audit-store.js';
import { advanceCursor, eventsAfter, getCursor, lastIngestPosition } from '../store/queries.js';
import { type ExportLease, ExportLockSession, soleLease } from './export-lease.js';

/** A destination events are delivered to. `deliver` resolves only once the destination holds the whole batch. */
export interface Exporter {
  readonly name: string;
  deliver(events: readonly AuditEvent[]): Promise<void>;
  close(): Promise<void>;
}

export interface ExportRunnerOptions {
  batchSize?: number;
  /** Poll interval when idle (new events also wake the runner at once). */
  idleMs?: number;
  maxBackoffMs?: number;
  /** Where a new exporter (no saved cursor) starts: everything stored, or only what arrives from now on. */
  startAt?: 'beginning' | 'now';
  onError?: (exporter: string, err: Error) => void;
  /** How often a standby replica tries to take over the export (default 2 s). */
  standbyRetryMs?: number;
  /**
   * The replica's lock connection, shared by all its exporters (PostgreSQL store). Without it the runner opens one of
   * its own, with the two options below, and closes it when it stops.
   */
  locks?: ExportLockSession;
  /** How often the active replica checks its own lock connection (default 1 s). */
  leaseCheckMs?: number;
  /** A check unanswered this long loses the lease (default 3 s; keep it well under the server's ~11 s). */
  leaseTimeoutMs?: number;
  /** This replica became the active exporter (true) or stopped being it (false; `err`: the lease was lost). */
  onActive?: (exporter: string, active: boolean, err?: Error) => void;
}

/**
 * Feeds one exporter from the store in ingest order with at-least-once delivery: its cursor (the last
 * delivered ingest position) is saved in the store only after `deliver` resolved, so a crash or a failing
 * destination replays from the last saved point. Failures back off exponentially and retry the same batch.
 *
 * Replicas sharing a PostgreSQL store share the cursor, so only the holder of the exporter's lease (an advisory
 * lock, see ExportLockSession) reads and delivers; the others stand by, report no lag, and try to take over every
 * `standbyRetryMs`. A replica that loses the lease starts no further batch; the one in flight then may be delivered
 * again by the next holder, and the cursor saves never move the cursor back.
 */
export class ExportRunner {
  private running = false;
  private loop: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  private readonly cursorName: string;
  /**
   * When (this process's clock, ms) the oldest stored event not yet delivered was stored; null while none is known
   * to wait. The lag-seconds gauge is computed from it at each scrape, so it keeps growing while deliveries fail.
   */
  private pendingSince: number | null = null;
  private readonly lease: ExportLease;
  private readonly ownLocks?: ExportLockSession;
  private isActive = false;
  private lostLease = false;

  constructor(
    private readonly store: AuditStore,
    readonly exporter: Exporter,
    private readonly metrics: CollectorMetrics,
    private readonly opts: ExportRunnerOptions = {},
  ) {
    this.cursorName = `export:${exporter.name}`;
    if (store.db.kind === 'postgres') {
      if (!opts.locks)
        this.ownLocks = new ExportLockSession(store.db, { checkMs: opts.leaseCheckMs, timeoutMs: opts.leaseTimeoutMs });
      this.lease = (opts.locks ?? this.ownLocks)!.lease(this.cursorName, (err) => {
        // Said at once (not when the loop comes round), so a scrape never shows two active replicas for long.
        this.standBy(err);
        this.lostLease = true;
        this.wake?.();
      });
    } else {
      this.lease = soleLease();
    }
    metrics.exportActive.set({ exporter: exporter.name }, 0);
  }

  /** Whether this replica is the one delivering this exporter's events now. */
  get active(): boolean {
    return this.isActive;
  }

  /** Seconds since the oldest undelivered event was stored (0 when caught up), at the time of asking. */
  lagSeconds(now = Date.now()): number {
    return this.pendingSince === null ? 0 : Math.max(0, now - this.pendingSince) / 1000;
  }

  start(): void {
    this.running = true;
    this.loop = this.run();
  }

  /** Called when new events are stored, so delivery does not wait for the idle poll. */
  notify(): void {
    if (!this.isActive) return;
    // Stored just now and not read yet: if reading them fails, the lag still counts from here.
    this.pendingSince ??= Date.now();
    this.wake?.();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.wake?.();
    await this.loop;
    this.standBy();
    await this.lease.release();
    await this.ownLocks?.close();
    await this.exporter.close();
    this.metrics.exportActive.remove({ exporter: this.exporter.name });
  }

  /**
   * Lag is reported by the active replica only: a standby's view of the shared cursor says nothing about its own
   * work, and a standby reporting it too would double every alert (or hide a stuck holder behind its zeros).
   */
  private activate(): void {
    const exporter = this.exporter.name;
    this.isActive = true;
    this.pendingSince = null;
    this.metrics.exportActive.set({ exporter }, 1);
    this.metrics.exportLagSources.set(exporter, () => this.lagSeconds());
    this.opts.onActive?.(exporter, true);
  }

  private standBy(err?: Error): void {
    if (!this.isActive) return;
    const exporter = this.exporter.name;
    this.isActive = false;
    this.metrics.exportActive.set({ exporter }, 0);
    this.metrics.exportLagSources.delete(exporter);
    this.metrics.exportLagSeconds.remove({ exporter });
    this.metrics.exportLag.remove({ exporter });
    this.opts.onActive?.(exporter, false, err);
  }

  /** Only while active: the lease may be lost while the store is asked, and a standby reports no lag. */
  private setLagEvents(n: number): void {
    if (this.isActive) this.metrics.exportLag.set({ exporter: this.exporter.name }, Math.max(0, n));
  }

  /** One attempt to become the active exporter; failures to ask the store are reported and count as "not now". */
  private async takeLease(): Promise<boolean> {
    try {
      return await this.lease.acquire();
    } catch (err) {
      this.opts.onError?.(this.exporter.name, new Error(`export lock: ${(err as Error).message}`, { cause: err }));
      return false;
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.wake = done;
    });
  }

  private async run(): Promise<void> {
    const name = this.exporter.name;
    let position: number | null = null;
    let backoff = 100;
    while (this.running) {
      if (!this.lease.held) {
        this.standBy();
        // Whoever held the lease meanwhile moved the shared cursor: read it again once this replica takes over.
        position = null;
        // A replica that just lost its lock (its connection was cut, or went silent) leaves a standby the first try.
        if (this.lostLease) {
          this.lostLease = false;
          await this.sleep(this.opts.standbyRetryMs ?? 2000);
          continue;
        }
        if (!(await this.takeLease())) {
          await this.sleep(this.opts.standbyRetryMs ?? 2000);
          continue;
        }
        if (!this.running) break;
        this.activate();
      }
      try {
        if (position === null) {
          position = await getCursor(this.store.db, this.cursorName);
          if (position === null) {
            const start = this.opts.startAt === 'now' ? await lastIngestPosition(this.store.db) : 0;
            position = await advanceCursor(this.store.db, this.cursorName, start);
          }
        }
        const rows = await eventsAfter(this.store.db, position, this.opts.batchSize ?? 500);
        if (!this.lease.held) continue;
        if (rows.length === 0) {
          this.pendingSince = null;
          this.setLagEvents(0);
          await this.sleep(this.opts.idleMs ?? 1000);
          continue;
        }
        this.pendingSince = Date.now() - rows[0].ageMs;
        await this.exporter.deliver(rows.map((r) => r.event));
        // Saved even if the lease was lost meanwhile: these events were delivered, and the save cannot move back.
        position = await advanceCursor(this.store.db, this.cursorName, rows[rows.length - 1].position);
        this.metrics.exported.inc({ exporter: name }, rows.length);
        this.setLagEvents((await lastIngestPosition(this.store.db)) - position);
        backoff = 100;
      } catch (err) {
        this.metrics.exportFailures.inc({ exporter: name });
        this.opts.onError?.(name, err as Error);
        if (!this.running) break;
        if (!this.lease.held) continue;
        // What waits keeps growing while the destination refuses: the events gauge follows the store, not the last
        // success (a store that fails too leaves it as it was).
        if (position !== null) {
          const from = position;
          await lastIngestPosition(this.store.db).then(
            (last) => this.setLagEvents(last - from),
            () => {},
          );
        }
        await this.sleep(backoff);
        backoff = Math.min(backoff * 2, this.opts.maxBackoffMs ?? 30_000);
      }
    }
  }
}
