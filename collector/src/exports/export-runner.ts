import type { AuditEvent } from '../event.js';
import type { CollectorMetrics } from '../metrics.js';
import type { AuditStore } from '../store/audit-store.js';
import { eventsAfter, getCursor, lastIngestPosition, setCursor } from '../store/queries.js';

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
}

/**
 * Feeds one exporter from the store in ingest order with at-least-once delivery: its cursor (the last
 * delivered ingest position) is saved in the store only after `deliver` resolved, so a crash or a failing
 * destination replays from the last saved point. Failures back off exponentially and retry the same batch.
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

  constructor(
    private readonly store: AuditStore,
    readonly exporter: Exporter,
    private readonly metrics: CollectorMetrics,
    private readonly opts: ExportRunnerOptions = {},
  ) {
    this.cursorName = `export:${exporter.name}`;
    metrics.exportLagSources.set(exporter.name, () => this.lagSeconds());
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
    // Stored just now and not read yet: if reading them fails, the lag still counts from here.
    this.pendingSince ??= Date.now();
    this.wake?.();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.wake?.();
    await this.loop;
    await this.exporter.close();
    this.metrics.exportLagSources.delete(this.exporter.name);
    this.metrics.exportLagSeconds.remove({ exporter: this.exporter.name });
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
      try {
        if (position === null) {
          position = await getCursor(this.store.db, this.cursorName);
          if (position === null) {
            position = this.opts.startAt === 'now' ? await lastIngestPosition(this.store.db) : 0;
            await setCursor(this.store.db, this.cursorName, position);
          }
        }
        const rows = await eventsAfter(this.store.db, position, this.opts.batchSize ?? 500);
        if (rows.length === 0) {
          this.pendingSince = null;
          this.metrics.exportLag.set({ exporter: name }, 0);
          await this.sleep(this.opts.idleMs ?? 1000);
          continue;
        }
        this.pendingSince = Date.now() - rows[0].ageMs;
        await this.exporter.deliver(rows.map((r) => r.event));
        const next = rows[rows.length - 1].position;
        await setCursor(this.store.db, this.cursorName, next);
        position = next;
        this.metrics.exported.inc({ exporter: name }, rows.length);
        this.metrics.exportLag.set({ exporter: name }, Math.max(0, (await lastIngestPosition(this.store.db)) - next));
        backoff = 100;
      } catch (err) {
        this.metrics.exportFailures.inc({ exporter: name });
        this.opts.onError?.(name, err as Error);
        if (!this.running) break;
        // What waits keeps growing while the destination refuses: the events gauge follows the store, not the last
        // success (a store that fails too leaves it as it was).
        if (position !== null) {
          const from = position;
          await lastIngestPosition(this.store.db).then(
            (last) => this.metrics.exportLag.set({ exporter: name }, Math.max(0, last - from)),
            () => {},
          );
        }
        await this.sleep(backoff);
        backoff = Math.min(backoff * 2, this.opts.maxBackoffMs ?? 30_000);
      }
    }
  }
}
