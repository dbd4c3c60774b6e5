import type { AuditGap } from '@pgwarden/policy';
import { formatAuditTime } from '@pgwarden/policy';
import type { CarriedRisk } from './at-risk-record.js';
import { nowMicros } from './drop-tracker.js';

/** Ranges named in one gap at most (as DropTracker's sessions); past it the gap says `truncated`. */
const MAX_RANGES = 1000;

/** The `cause` of the `audit.gap` that names events a failed fdatasync may have lost. */
export const FSYNC_FAILED_CAUSE = 'fsync_failed';

type Range = { fromSeq: number; toSeq: number };

/** Per-session first and last seq of the events in one stretch of writes, and how many there were. */
class WrittenRanges {
  readonly sessions = new Map<string, Range>();
  count = 0;
  truncated = false;

  add(session: string | undefined, seq: number | undefined): void {
    this.count++;
    if (session === undefined || seq === undefined) return;
    const r = this.sessions.get(session);
    if (r) {
      // A session's events are written in seq order: only its last seq moves.
      if (seq > r.toSeq) r.toSeq = seq;
      else if (seq < r.fromSeq) r.fromSeq = seq;
    } else if (this.sessions.size < MAX_RANGES) {
      this.sessions.set(session, { fromSeq: seq, toSeq: seq });
    } else {
      this.truncated = true;
    }
  }

  /** Takes `o`'s events in (written after this one's), leaving `o` empty. */
  absorb(o: WrittenRanges): void {
    for (const [id, r] of o.sessions) {
      const mine = this.sessions.get(id);
      if (mine) mine.toSeq = Math.max(mine.toSeq, r.toSeq);
      else if (this.sessions.size < MAX_RANGES) this.sessions.set(id, { ...r });
      else this.truncated = true;
    }
    this.count += o.count;
    this.truncated ||= o.truncated;
    o.clear();
  }

  clear(): void {
    if (this.count === 0) return;
    this.sessions.clear();
    this.count = 0;
    this.truncated = false;
  }
}

/** Where the ranges at risk are kept across restarts (at-risk-record.ts): null once nothing is at risk. */
export interface RiskKeeper {
  save(gap: AuditGap | null): void;
}

/**
 * Which events a failed fdatasync may have lost, for the `audit.gap` that names them (cause `fsync_failed`).
 * Linux reports a failed writeback once and marks the pages clean (PostgreSQL's "fsyncgate", after which it PANICs
 * instead of retrying): the events written before the failure may be gone from the disk although reads of the page
 * cache still show them, and no later sync brings them back. So the sink records what each write put in the file,
 * per session its first and last seq (a Map lookup per event, no allocation but one per session and sync), hands
 * that to the sync that starts next, and on a failure keeps it as possibly lost until the sink can declare it.
 */
export class UnsyncedEvents {
  /**
   * The gap taken for declaration is kept (by `keeper`) until a sync that started after its event was written
   * succeeds: 1 taken, 2 its event written, 3 a sync covering it started (token `declaredAt`).
   */
  private declaring = 0;
  private declaredAt = 0;
  private taken: AuditGap | undefined;
  /** Written since the last sync started. */
  private written = new WrittenRanges();
  /** Written before the newest sync in flight started: what its success shows to be on disk. */
  private covered = new WrittenRanges();
  private starts = 0;
  /** Possibly lost, in the order the failures came; not declared yet. */
  private readonly lost: { id: string; fromSeq: number; toSeq: number }[] = [];
  private lostCount = 0;
  private lostTruncated = false;
  private since = 0;
  private until = 0;

  constructor(private readonly keeper?: RiskKeeper) {}

  /** What a run before this one left at risk and did not declare durably (at-risk-record.ts): declared by this one. */
  restore(carried: CarriedRisk): void {
    if (this.lostCount === 0 && !this.lostTruncated) this.since = nowMicros();
    if ('unreadable' in carried) {
      // Which events is unknown: a gap that names none and says its list is cut.
      this.lostTruncated = true;
    } else {
      const g = carried.gap;
      if (this.lostCount === 0) this.since = micros(g.since) ?? this.since;
      this.lostCount += Number.isSafeInteger(g.dropped) ? g.dropped : 0;
      this.lostTruncated ||= g.truncated === true;
      for (const r of g.sessions)
        if (typeof r?.id === 'string' && Number.isSafeInteger(r.fromSeq) && Number.isSafeInteger(r.toSeq))
          this.keepLost(r.id, { fromSeq: r.fromSeq, toSeq: r.toSeq });
    }
    this.until = Math.max(this.until, this.since);
  }

  /** An event reached the file (write(2) returned). */
  wrote(session: string | undefined, seq: number | undefined): void {
    this.written.add(session, seq);
    // The first write after take() carries the gap event (it is emitted before the sink writes again).
    if (this.declaring === 1) this.declaring = 2;
  }

  /** A sync starts; the token goes to synced(). */
  syncStarting(): number {
    if (this.written.count > 0) {
      if (this.covered.count === 0) {
        const c = this.covered;
        this.covered = this.written;
        this.written = c;
      } else {
        // An earlier sync is still in flight (close or rotation syncs at once): this one covers both stretches.
        this.covered.absorb(this.written);
      }
    }
    const token = ++this.starts;
    if (this.declaring === 2) {
      this.declaring = 3;
      this.declaredAt = token;
    }
    return token;
  }

  /**
   * The sync with this token ended. A success shows what it covered is on disk, unless a later sync has started
   * since (that one answers for it). A failure leaves everything written so far possibly lost: pages written while
   * the failed sync ran may have been in its writeback, and their error is not reported again.
   */
  synced(token: number, ok: boolean): void {
    if (ok) {
      if (token === this.starts) this.covered.clear();
      if (this.declaring === 3 && token >= this.declaredAt) {
        // The gap event is on disk: the record keeps only what failed since (nothing, usually).
        this.declaring = 0;
        this.taken = undefined;
        this.keeper?.save(this.peek() ?? null);
      }
      return;
    }
    if (this.declaring !== 0) {
      // The gap event may be lost with the rest: its ranges are at risk of going undeclared again.
      this.declaring = 0;
      const t = this.taken!;
      this.taken = undefined;
      this.restore({ gap: t });
    }
    const at = nowMicros();
    for (const w of [this.covered, this.written]) {
      if (w.count === 0) continue;
      if (this.lostCount === 0) this.since = at;
      this.lostCount += w.count;
      this.lostTruncated ||= w.truncated;
      for (const [id, r] of w.sessions) this.keepLost(id, r);
      w.clear();
    }
    this.until = at;
    this.keeper?.save(this.peek() ?? null);
  }

  private keepLost(id: string, r: Range): void {
    // Adjacent or overlapping with what an earlier failure left for the session: one range.
    for (const l of this.lost) {
      if (l.id === id && r.fromSeq <= l.toSeq + 1 && r.toSeq >= l.fromSeq - 1) {
        l.fromSeq = Math.min(l.fromSeq, r.fromSeq);
        l.toSeq = Math.max(l.toSeq, r.toSeq);
        return;
      }
    }
    if (this.lost.length < MAX_RANGES) this.lost.push({ id, ...r });
    else this.lostTruncated = true;
  }

  /** The gap for what failed syncs may have lost (if anything), and a fresh start. */
  take(): AuditGap | undefined {
    if (this.lostCount === 0 && !this.lostTruncated) return undefined;
    if (this.taken) {
      // The last declaration is not known to be on disk yet: this one repeats it (a duplicate, never a loss).
      const t = this.taken;
      this.taken = undefined;
      this.restore({ gap: t });
    }
    const gap = this.peek()!;
    this.lost.length = 0;
    this.lostCount = 0;
    this.lostTruncated = false;
    if (this.keeper) {
      // Until its event is on disk the record keeps it (a failed sync puts it back: see synced).
      this.taken = gap;
      this.declaring = 1;
    }
    return gap;
  }

  /** What take() would return, without taking it. */
  private peek(): AuditGap | undefined {
    if (this.lostCount === 0 && !this.lostTruncated) return undefined;
    const gap: AuditGap = {
      dropped: this.lostCount,
      since: formatAuditTime(this.since),
      until: formatAuditTime(this.until),
      cause: FSYNC_FAILED_CAUSE,
      sessions: this.lost.map((r) => ({ ...r })),
    };
    if (this.lostTruncated) gap.truncated = true;
    return gap;
  }
}

function micros(rfc3339: string | undefined): number | undefined {
  const ms = rfc3339 === undefined ? Number.NaN : Date.parse(rfc3339);
  return Number.isFinite(ms) ? ms * 1000 : undefined;
}
