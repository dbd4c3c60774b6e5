/**
 * Statement text the sidecar reads whole (Query, Parse, FunctionCall: it must see a statement before it lets it run),
 * counted over every session of the process. Each session's statement is capped by --max-statement-bytes (64 MiB
 * without a policy), but many sessions sending one each at the same time would together hold any amount: past this
 * budget a statement is skipped unread and refused with 53200, as PostgreSQL refuses what it cannot allocate, and
 * the other sessions go on. Everything else is streamed through (Bind values and COPY data of any size, results).
 */
export class StatementBudget {
  readonly limit: number;
  /** Bytes reserved now. */
  held = 0;

  constructor(limit: number) {
    this.limit = limit;
  }

  /** Reserves `n` bytes of message for a statement about to be read whole; false when that would pass the limit. */
  reserve(n: number): boolean {
    if (this.held + n > this.limit) return false;
    this.held += n;
    return true;
  }

  release(n: number): void {
    this.held -= n;
  }
}

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
