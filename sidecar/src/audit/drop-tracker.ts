import type { AuditGap } from '@pgwarden/policy';
import { formatAuditTime } from '@pgwarden/policy';

const MAX_SESSIONS = 1000;

/**
 * Remembers what a sink had to drop until delivery works again, then hands the summary to whoever builds the
 * `audit.gap` event. Per-session seq ranges let the collector tell a declared gap from an unexplained one.
 */
export class DropTracker {
  private dropped = 0;
  private since = 0;
  private until = 0;
  private cause = '';
  private readonly sessions = new Map<string, { fromSeq: number; toSeq: number }>();
  private truncated = false;

  record(session: string | undefined, seq: number | undefined, cause: string, nowMicros: number): void {
    if (this.dropped === 0) {
      this.since = nowMicros;
      this.cause = cause;
    }
    this.dropped++;
    this.until = nowMicros;
    if (session === undefined || seq === undefined) return;
    const r = this.sessions.get(session);
    if (r) {
      r.fromSeq = Math.min(r.fromSeq, seq);
      r.toSeq = Math.max(r.toSeq, seq);
    } else if (this.sessions.size < MAX_SESSIONS) {
      this.sessions.set(session, { fromSeq: seq, toSeq: seq });
    } else {
      this.truncated = true;
    }
  }

  get pending(): number {
    return this.dropped;
  }

  /** The gap so far (if any), and a fresh start. */
  take(): AuditGap | undefined {
    if (this.dropped === 0) return undefined;
    const gap: AuditGap = {
      dropped: this.dropped,
      since: formatAuditTime(this.since),
      until: formatAuditTime(this.until),
      cause: this.cause,
      sessions: [...this.sessions].map(([id, r]) => ({ id, ...r })),
    };
    if (this.truncated) gap.truncated = true;
    this.dropped = 0;
    this.sessions.clear();
    this.truncated = false;
    return gap;
  }
}

/** Wall-clock microseconds with sub-millisecond resolution (performance.now is monotonic, timeOrigin anchors it). */
export function nowMicros(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}
