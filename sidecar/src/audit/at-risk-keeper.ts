import type { AuditGap } from '@pgwarden/policy';
import { AT_RISK_RETRY_MS, AtRiskRecord, type CarriedRisk, errno } from './at-risk-record.js';
import type { RiskKeeper } from './unsynced-events.js';

export interface AtRiskKeeperEvents {
  /** The record could not be created, or a write of it failed: the first failure of a run of them. */
  onError(err: Error): void;
  /** The record is usable again. `carried`: a record opened late held what a run before this one left at risk. */
  onRecovered(carried?: CarriedRisk): void;
}

/**
 * A sink's at-risk record (at-risk-record.ts), also while there is none to be had. A record that cannot be created
 * when the sink opens (permission denied, a directory in its way, a full or read-only filesystem) is tried again
 * every AT_RISK_RETRY_MS, and a record whose write failed is written again, until it sticks; meanwhile `problem`
 * names why, and the sink is not ready while it would need the record: with failMode closed statements are refused
 * (53000) rather than the sidecar exiting, which only restarted it into the same failure (and, with failMode open,
 * stopped a pod that was to run on regardless).
 */
export class AtRiskKeeper implements RiskKeeper {
  private record: AtRiskRecord | undefined;
  /** What the record is to hold once it opens (undefined: nothing asked for yet). */
  private wanted: AuditGap | null | undefined;
  private openError: string | undefined;
  private retry: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    readonly path: string,
    private readonly events: AtRiskKeeperEvents,
  ) {}

  /** Opens the record now; returns what a run before left at risk when it could. */
  open(): CarriedRisk | undefined {
    try {
      return this.opened(AtRiskRecord.open(this.path, this.events.onError, () => this.events.onRecovered()));
    } catch (err) {
      this.openFailed(err as Error);
      this.events.onError(err as Error);
      return undefined;
    }
  }

  /** Why the record cannot be relied on now (naming the path and errno); undefined while it can. */
  get problem(): string | undefined {
    return this.openError ?? this.record?.problem;
  }

  save(gap: AuditGap | null): void {
    if (this.record) this.record.save(gap);
    else this.wanted = gap;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retry);
    await this.record?.close();
  }

  private opened({ record, carried }: { record: AtRiskRecord; carried?: CarriedRisk }): CarriedRisk | undefined {
    this.record = record;
    this.openError = undefined;
    // What this run put at risk meanwhile joins what the run before left: both stay until declared.
    if (this.wanted) record.save(carried ? withCarried(carried, this.wanted) : this.wanted);
    this.wanted = undefined;
    return carried;
  }

  private openFailed(err: Error): void {
    this.openError = `cannot create the audit at-risk record ${this.path} (${errno(err.cause ?? err)})`;
    if (this.closed) return;
    this.retry = setTimeout(() => {
      if (this.closed) return;
      try {
        const carried = this.opened(AtRiskRecord.open(this.path, this.events.onError, () => this.events.onRecovered()));
        this.events.onRecovered(carried);
      } catch (e) {
        this.openFailed(e as Error);
      }
    }, AT_RISK_RETRY_MS);
    this.retry.unref();
  }
}

/** A record holding both what the run before left (`carried`) and `gap`. */
function withCarried(carried: CarriedRisk, gap: AuditGap): AuditGap {
  // An unreadable record: which events is unknown, so the list is cut.
  if (!('gap' in carried)) return { ...gap, truncated: true };
  const c = carried.gap;
  const merged: AuditGap = {
    ...c,
    dropped: c.dropped + gap.dropped,
    until: gap.until,
    sessions: [...c.sessions, ...gap.sessions],
  };
  if (c.truncated || gap.truncated) merged.truncated = true;
  return merged;
}
