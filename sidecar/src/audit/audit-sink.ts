import type { AuditGap } from '@pgwarden/policy';

/** Called when delivery works again after events were dropped; the recorder turns it into an `audit.gap` event. */
export type GapListener = (gap: AuditGap) => void;

export interface AuditSinkStats {
  kind: 'stdout' | 'file' | 'nats';
  connected?: boolean;
  mode?: 'direct' | 'spool';
  queued: number;
  inflight?: number;
  spoolBytes?: number;
  published: number;
  spooled?: number;
  dropped: number;
  failures?: number;
  /** fdatasync calls started in `batch` mode (file sink): shows the coalescing at work. */
  syncs?: number;
  /** write(2) batches the file sink made: shows its write coalescing at work. */
  writes?: number;
}

/** Where audit events go. `ready()` is false when events cannot currently be made durable (failMode: closed denies). */
export interface AuditSink {
  emit(event: Record<string, unknown>): void;
  /**
   * A recorder event as its JSON text alone (with its session id and seq, for drop accounting). Sinks that need
   * nothing but the text (file, stdout) offer it, and the recorder then builds no event object per statement.
   */
  emitJson?(json: string, session: string, seq: number): void;
  ready(): boolean;
  /** Why the sink is not ready, where it can say more than that (for /readyz); undefined otherwise. */
  notReadyCause?(): string | undefined;
  /**
   * Writes what the sink holds for a write later in this turn now (the spool), so that it survives a kill of the
   * process before the caller lets anyone see the outcome the events record. Never waits for a disk flush.
   */
  flush?(): void;
  close(): Promise<void>;
  /** Registers the listener for dropped-event summaries (one listener; the recorder's). */
  onGap?(listener: GapListener): void;
  stats?(): AuditSinkStats;
  /** Resolves once every event emitted so far is durable where this sink puts it. */
  whenIdle?(timeoutMs?: number): Promise<void>;
}

/**
 * Where the recorder leaves an event's JSON text (non-enumerable: JSON.stringify, Object.keys and equality
 * checks do not see it), so sinks serialise each event once.
 */
export const AUDIT_JSON: unique symbol = Symbol.for('pgwarden.audit.json');

export function eventJson(e: Record<string, unknown>): string {
  return (e as { [AUDIT_JSON]?: string })[AUDIT_JSON] ?? JSON.stringify(e);
}
