/**
 * Statement text the sidecar reads whole (Query, Parse, FunctionCall: it must see a statement before it lets it run),
 * counted over every session of the process. Each session's statement is capped by --max-statement-bytes (64 MiB
 * without a policy), but many sessions sending one each at the same time would together hold any amount: past this
 * budget a statement is skipped unread and refused with 53200, as PostgreSQL refuses what it cannot allocate, and
 * the other sessions go on. Everything else is streamed through (Bind values and COPY data of any size, results).
 */
export class StatementBudget {
  readonly limit: number;
  /**
   * A statement whose bytes have not grown for this long, while another one does not fit, loses its share: its
   * session is ended (StatementReader.evict). 0: never.
   */
  readonly stallMs: number;
  /** Bytes reserved now. */
  held = 0;
  /** Sessions ended because they stalled mid-statement while the budget was contended. */
  stallsEnded = 0;
  /** Statements still arriving (reserved, not yet read whole): the only shares a client can hold by doing nothing. */
  private readonly arriving = new Set<StatementReader>();

  constructor(limit: number, stallMs = DEFAULT_STATEMENT_STALL_MS) {
    this.limit = limit;
    this.stallMs = stallMs;
  }

  /**
   * Reserves `n` bytes of message for a statement about to be read whole by `reader`; false when that would pass the
   * limit even after taking the shares of statements that stopped arriving (reclaim).
   */
  reserve(n: number, reader?: StatementReader): boolean {
    if (this.held + n > this.limit && !this.reclaim(n)) return false;
    this.held += n;
    if (reader !== undefined) this.arriving.add(reader);
    return true;
  }

  /** `reader`'s statement has arrived whole (or was given up): it may still hold its share, but not by stalling. */
  arrived(reader: StatementReader): void {
    this.arriving.delete(reader);
  }

  release(n: number): void {
    this.held -= n;
  }

  /**
   * The budget is contended: statements that have not grown for stallMs are the ones holding memory for nothing, and
   * their sessions are ended, longest-stalled first, until `n` fits. A statement that keeps arriving, however slowly,
   * keeps its share; so does one whose session the proxy itself stopped reading (backpressure, a held verdict).
   */
  private reclaim(n: number): boolean {
    if (this.stallMs <= 0 || this.arriving.size === 0) return false;
    const now = performance.now();
    const stalled: StatementReader[] = [];
    for (const r of this.arriving) if (now - r.progressAt() >= this.stallMs) stalled.push(r);
    stalled.sort((a, b) => a.progressAt() - b.progressAt());
    for (const r of stalled) {
      if (this.held + n <= this.limit) break;
      this.stallsEnded++;
      // Ends the session at once; its close gives the share back (ClientRelay.freeReserved) and calls arrived().
      r.evict(now - r.progressAt());
      this.arriving.delete(r);
    }
    return this.held + n <= this.limit;
  }
}

/** A session reading a statement that holds a share of the budget. */
export interface StatementReader {
  /** When its bytes last grew (performance.now()); Infinity while the proxy is not reading the client. */
  progressAt(): number;
  /** Ends the session (FATAL 08P01), giving back its share before returning. */
  evict(stalledMs: number): void;
}

/** Default --statement-stall-timeout: a client that sends nothing for 10 s is not merely slow. */
export const DEFAULT_STATEMENT_STALL_MS = 10_000;

/**
 * Statements up to this size are not counted: every session already holds two read buffers of 64 KiB, so such a
 * statement adds no more than its connection costs, and a budget taken by large statements must not stop the small
 * ones that make up nearly all traffic.
 */
export const UNCOUNTED_STATEMENT_BYTES = 64 * 1024;

/**
 * Default budget: 128 MiB, two statements of the default --max-statement-bytes at once (or, when that is raised,
 * two of its size). Reading one costs about twice its size while it is decoded (the bytes and their text).
 */
export function defaultStatementBudget(maxStatementBytes: number): number {
  return Math.max(128 * 1024 * 1024, 2 * (maxStatementBytes + 5));
}
