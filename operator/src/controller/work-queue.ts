/**
 * A keyed work queue: a key is processed by at most one worker at a time (per-object serialisation), duplicates
 * collapse while queued, a key added while it is being processed runs again afterwards, and failures are retried
 * with per-key exponential backoff (like client-go's rate-limited workqueue).
 */
import type { OperatorEvents } from '../core/operator-events.js';
import { Backoff } from './backoff.js';

export type Reconcile = (key: string) => Promise<void>;

export class WorkQueue {
  private readonly queue: string[] = [];
  private readonly queued = new Set<string>();
  private readonly active = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly retries = new Map<string, { backoff: Backoff; timer?: NodeJS.Timeout }>();
  private running = 0;
  private stopped = false;
  /** While paused, keys collect but nothing runs (until the caches have synced). */
  private paused = true;
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly reconcile: Reconcile,
    private readonly events: OperatorEvents,
    private readonly opts: { concurrency?: number; retry?: { initialMs: number; maxMs: number } } = {},
  ) {}

  add(key: string): void {
    if (this.stopped) return;
    if (this.active.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.queued.has(key)) return;
    this.queued.add(key);
    this.queue.push(key);
    this.events.emit('queue.depth', { depth: this.queue.length });
    this.pump();
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    this.pump();
  }

  get depth(): number {
    return this.queue.length;
  }

  stop(): void {
    this.stopped = true;
    for (const r of this.retries.values()) clearTimeout(r.timer);
    this.retries.clear();
  }

  /** Resolves when nothing is queued, running or waiting for a retry (tests). */
  idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private isIdle(): boolean {
    return (
      (this.paused || this.queue.length === 0) &&
      this.running === 0 &&
      [...this.retries.values()].every((r) => !r.timer)
    );
  }

  private pump(): void {
    const concurrency = this.opts.concurrency ?? 2;
    while (!this.stopped && !this.paused && this.running < concurrency) {
      const idx = this.queue.findIndex((k) => !this.active.has(k));
      if (idx < 0) break;
      const [key] = this.queue.splice(idx, 1);
      this.queued.delete(key);
      this.active.add(key);
      this.running++;
      void this.process(key);
    }
    if (this.isIdle()) for (const w of this.idleWaiters.splice(0)) w();
  }

  private async process(key: string): Promise<void> {
    const started = performance.now();
    try {
      await this.reconcile(key);
      this.retries.delete(key);
      this.events.emit('reconcile.done', { key, durationMs: performance.now() - started });
    } catch (err) {
      let entry = this.retries.get(key);
      if (!entry) {
        entry = { backoff: new Backoff(this.opts.retry ?? { initialMs: 200, maxMs: 60_000 }) };
        this.retries.set(key, entry);
      }
      const retryInMs = entry.backoff.next();
      this.events.emit('reconcile.failed', { key, error: err instanceof Error ? err.message : String(err), retryInMs });
      if (!this.stopped) {
        entry.timer = setTimeout(() => {
          entry.timer = undefined;
          this.add(key);
        }, retryInMs);
      }
    } finally {
      this.active.delete(key);
      this.running--;
      if (this.dirty.delete(key)) this.add(key);
      this.pump();
    }
  }
}
