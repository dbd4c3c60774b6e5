import type { RowField, RowTransformer, StatementRecord, StatementRequest, StatementResult, Verdict } from './hooks.js';
import { commentEnd } from './sql-statements.js';

/**
 * What the proxy expects back from the upstream, in order. PostgreSQL answers every client message in the order it
 * was sent (Parse → ParseComplete, Bind → BindComplete, Execute → rows + CommandComplete, Sync → ReadyForQuery, ...)
 * and, after an error in the extended protocol, skips every message up to the next Sync
 * (https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-EXT-QUERY). A FIFO of these entries is
 * therefore enough to tie each response to the client message that caused it.
 */
export const K_QUERY = 1;
export const K_PARSE = 2;
export const K_BIND = 3;
export const K_DESCRIBE = 4;
export const K_EXECUTE = 5;
export const K_CLOSE = 6;
export const K_SYNC = 7;
export const K_FUNCTION = 8;
/**
 * A Query the proxy sends itself to make a guarded write undoable (guardrail maxRowsAffected): its `name` says what
 * reaches the client. `begin`: nothing. `commit`: an ErrorResponse (a deferred constraint) and the ReadyForQuery.
 * `quiet`: only the ReadyForQuery (ROLLBACK, or the failing text that fails the client's transaction).
 */
export const K_HIDDEN = 9;
/**
 * The proxy's own count of the rows changed (ROWS_CHANGED_SQL), sent right before and right behind a guarded write
 * (guardrail maxRowsAffected), in its transaction, so that the rows its triggers, foreign-key cascades and
 * functions changed count too. Nothing of it reaches the client. It is a statement prepared once per session, run
 * through a named portal: Bind, Execute, Close (after Close and Parse of the statement when it is prepared anew).
 * `name`: `simple-before` / `simple` (between simple Queries, ended by a Sync: its ReadyForQuery ends the count) or
 * `ext-before` / `ext` (inside the write's batch: its last CloseComplete ends it).
 */
export const K_ROWS = 10;
/**
 * A Bind, Describe, Close or Flush whose body PostgreSQL cannot read (client-relay.ts, malformed): its answer is an
 * ErrorResponse, or nothing when an earlier error has PostgreSQL skipping to Sync. `name` is 'flush' for a Flush,
 * which PostgreSQL ignores unread in COPY IN, as it ignores Sync there.
 */
export const K_INVALID = 11;
/**
 * The proxy's own Parse/Bind/Execute/Close/Sync that runs one statement of the session's setup SQL again after a
 * client's DISCARD ALL (session-reset.ts), answered up to its ReadyForQuery. Everything but its ParameterStatus
 * values (which wait for the client's next ReadyForQuery, RelayState.pendingParams) and an error (which ends the
 * session) is dropped. `name` 'reply': the last one after a simple Query, whose ReadyForQuery is the one the client
 * gets for its DISCARD ALL.
 */
export const K_RESTORE = 12;
/**
 * The proxy's own question, after a DO or CALL, of which named statements and portals still exist (names-check.ts),
 * answered up to its ReadyForQuery: only its rows and an error are read, nothing reaches the client (but a
 * notification, whenever it comes). `name` 'check', or 'undo' for the rollback to its savepoint after it failed.
 */
export const K_NAMES = 13;

/**
 * Rows inserted, updated and deleted in every table, from PostgreSQL's per-transaction statistics, which count what
 * triggers, foreign-key cascades and functions did as well as the statement itself. Only a difference within one
 * transaction means anything: the figure also holds the backend's earlier transactions whose statistics it has not
 * reported yet, which it does only between transactions. Every name is schema-qualified (the operator too) so that
 * nothing an agent creates on its search_path can stand in for them; resetting or turning off these counters needs
 * a superuser. https://www.postgresql.org/docs/current/monitoring-stats.html#MONITORING-PG-STAT-ALL-TABLES-VIEW
 */
export const ROWS_CHANGED_SQL =
  // -1 where the server keeps no such statistics (track_counts off): nothing could be counted.
  "SELECT CASE WHEN pg_catalog.current_setting('track_counts')::pg_catalog.bool THEN COALESCE(" +
  'pg_catalog.sum(pg_catalog.pg_stat_get_xact_tuples_inserted(c.oid) OPERATOR(pg_catalog.+) ' +
  'pg_catalog.pg_stat_get_xact_tuples_updated(c.oid) OPERATOR(pg_catalog.+) ' +
  'pg_catalog.pg_stat_get_xact_tuples_deleted(c.oid))::pg_catalog.int8, 0) ELSE -1 END FROM pg_catalog.pg_class c ' +
  // User tables, temporary ones included: the catalogs' OIDs are all below FirstNormalObjectId (16384).
  'WHERE c.oid OPERATOR(pg_catalog.>=) 16384::pg_catalog.oid AND c.relkind OPERATOR(pg_catalog.=) ANY (\'{r,p,m}\'::pg_catalog."char"[])';
/**
 * Name of the prepared statement (parsed once per session, RelayState.rowsPrepared) and portal the counts use: no
 * client names its statements like this.
 */
export const ROWS_CHANGED_NAME = '\u0001pgwarden-rows-changed';

/** A prepared statement or portal as the proxy knows it: what was checked and what it decided. */
export interface PreparedInfo {
  request: StatementRequest;
  verdict: Verdict;
  /** Result columns from a Describe (statement or portal). */
  fields?: RowField[];
  transformer?: RowTransformer;
  /** For a portal: the statement it was bound from (its Describe may answer after the Bind was sent). */
  statement?: PreparedInfo;
  /** A Describe of it was sent upstream: its RowDescription (with the portal's real result formats) will come. */
  described?: boolean;
  /** Rows already delivered from this portal by earlier Executes (row-limited Execute, PortalSuspended). */
  delivered?: number;
  /**
   * A portal that ran (its first Execute was sent): `verdict` is then that execution's, and later Executes of it
   * continue the same execution rather than start one.
   */
  executed?: boolean;
  /** A statement whose SQL creates or removes no statement or portal by name (RelayState.touchesNames). */
  namesFree?: boolean;
  /** For a portal: the `seq` of the Bind that made it (RelayState.endTransaction). */
  boundAt?: number;
  /** Maps and portals holding it, and the bytes it is counted for meanwhile (retained-budget.ts, RetainedText). */
  refs?: number;
  charged?: number;
}

/** One statement-bearing client message in flight (Query, Parse, Execute, FunctionCall). */
export class Stmt {
  readonly request: StatementRequest;
  verdict: Verdict;
  readonly startedAt = new Date();
  readonly t0 = performance.now();
  heldMs = 0;
  /** When the message went upstream (performance.now()). */
  sentAt = 0;
  readonly results: StatementResult[] = [];
  /** Rows and DataRow bytes of the result being streamed. */
  rows = 0;
  bytes = 0;
  transformer: RowTransformer | undefined = undefined;
  /** The prepared statement/portal this Execute runs (for lazy row plans). */
  prepared: PreparedInfo | undefined = undefined;
  /** Rows the portal delivered before this Execute: maxRows counts per portal, not per Execute. */
  rowBase = 0;
  /** Denied: the upstream got a statement that fails instead, whose error the proxy replaces with the verdict's. */
  denied = false;
  /**
   * Denied as an Execute of a portal that does not exist (34000): PostgreSQL's own error for the proxy's stand-in
   * portal is passed on with the client's name in its message, so that every field is the server's (server-relay.ts).
   */
  portalGone = false;
  /** Verdict.maxRows was exceeded: further rows are dropped and the upstream is cancelled. */
  capped = false;
  /** The overall format of the COPY TO STDOUT being read (its CopyOutResponse): 0 text or CSV, 1 binary. */
  copyFormat = 0;
  /**
   * The CopyData of a text or CSV COPY one past maxRows, held back (copied) until the tag says whether the COPY had a
   * HEADER line, which made it a row within the limit; and the CopyDone held behind it.
   */
  heldCopy: Buffer | undefined = undefined;
  copyDoneHeld = false;
  timedOut = false;
  /**
   * guardrail maxRowsAffected: how the proxy undoes this write if it changes too many rows. A simple Query goes after a
   * hidden BEGIN; `wrap`: that BEGIN opened a transaction, ended by COMMIT or ROLLBACK; `block`: the client had one
   * open (25001), which is made to fail; `failed`: the client's transaction had failed, nothing can run. `ext`: an
   * Execute, whose batch is made to fail before its Sync.
   */
  guard: 'wrap' | 'block' | 'failed' | 'ext' | undefined = undefined;
  /** A guarded write changed more rows than allowed: the client got 54000 and the change is being undone. */
  overLimit = false;
  /** K_ROWS counts go before and behind this guarded write upstream. */
  countQueued = false;
  /** The count before the write (undefined: it failed or has not come). */
  rowsBefore: number | undefined = undefined;
  /** The messages of the count before the write (client-relay.ts, rowsCount). */
  countBefore: Buffer | undefined = undefined;
  /** The write completed within its tag's cap: it is recorded once the count behind it has been checked. */
  awaitCount = false;
  /**
   * It may be a DISCARD ALL and the session has setup SQL to restore (session-reset.ts): the client's next messages
   * wait until its outcome is known. `restored`: it succeeded and the restore went upstream behind it.
   */
  resets = false;
  restored = false;
  /**
   * Names a Query or an Execute made the proxy forget, put back if it fails (a Query: those its failed statement and
   * the ones behind it could remove, RelayState.restoreUnrun) or, an Execute, is skipped (RelayState.restoreNames).
   */
  forgotten?: ForgottenNames;
  /**
   * A Query at whose ReadyForQuery the proxy asks PostgreSQL which names a DO or CALL left (RelayState.recheck,
   * names-check.ts); the client's messages behind it wait for the answer.
   */
  recheckNames = false;
  /** The status of the guarded Query's own ReadyForQuery (the count's comes after it). */
  writeStatus: 'I' | 'T' | 'E' = 'I';
  timer: NodeJS.Timeout | undefined = undefined;
  /** Finished or abandoned: its timeout must not fire any more. */
  settled = false;

  constructor(request: StatementRequest, verdict: Verdict) {
    this.request = request;
    this.verdict = verdict;
  }

  get maxAffected(): number | undefined {
    return this.verdict.action === 'deny' ? undefined : this.verdict.maxAffected;
  }

  get maxRows(): number | undefined {
    return this.verdict.action === 'deny' ? undefined : this.verdict.maxRows;
  }

  /** Ends the current result (CommandComplete, EmptyQueryResponse, ErrorResponse, PortalSuspended). */
  endResult(result: StatementResult): void {
    if (this.prepared !== undefined) this.prepared.delivered = this.rowBase + this.rows;
    this.results.push(result);
    this.rows = 0;
    this.bytes = 0;
    this.transformer = undefined;
    this.capped = false;
    this.heldCopy = undefined;
    this.copyDoneHeld = false;
  }

  settle(): void {
    this.settled = true;
    if (this.timer) clearTimeout(this.timer);
  }

  record(): StatementRecord {
    this.settle();
    const now = performance.now();
    return {
      request: this.request,
      verdict: this.verdict,
      results: this.results,
      startedAt: this.startedAt,
      durationMs: now - this.t0,
      upstreamMs: this.sentAt > 0 ? now - this.sentAt : 0,
      heldMs: this.heldMs,
    };
  }
}

export interface Entry {
  kind: number;
  stmt: Stmt | undefined;
  /**
   * Describe/Close target: 'S' statement or 'P' portal, and its name. A Bind has the name of its statement, an Execute
   * the proxy refused for want of a verdict target 'P' and its portal's (RelayState.failExtended records a failed Bind
   * by them); other entries use `name` as their kind says.
   */
  target: 'S' | 'P' | undefined;
  name: string;
  /** A Describe the proxy added itself: its answer is used, not forwarded. */
  hidden: boolean;
  /** K_ROWS: the CloseCompletes its answer has (2 when it prepares the statement first). */
  closes: number;
  /** CopyDone/CopyFail messages the client had sent before this one (RelayState.copyIn). */
  copyEnds: number;
  /** Query/Execute: COPY FROM STDIN it started so far (a multi-statement Query may run several). */
  copies: number;
  /** Parse, Bind, Close, Describe: how to take back what forwarding it did to the proxy's maps (RelayState.undo). */
  undo: Undo | undefined;
  /** Order of the client message among those expected (RelayState.expect): what was bound before it. */
  seq: number;
  /** Bytes of the process-wide StatementBudget its statement text holds until this entry is answered. */
  reserved: number;
}

/**
 * The proxy applies a Parse, Bind or Close to its maps when it forwards it, so that the messages pipelined behind it
 * are judged by the state they will meet upstream; PostgreSQL may still reject it, or skip it after an earlier error
 * of its batch. This is the slot as it was before, to put back then.
 */
export interface Undo {
  /** 'S': RelayState.statements, 'P': portals (and uncheckedPortals), 'D': a Describe that set `info.described`. */
  map: 'S' | 'P' | 'D';
  name: string;
  prev: PreparedInfo | undefined;
  /** 'P': the name was in uncheckedPortals, bound then (its value there). */
  unchecked: number | undefined;
}

/** A FIFO without Array.shift's O(n) cost. */
export class EntryQueue {
  private items: Entry[] = [];
  private head = 0;
  /** Gives an entry's `reserved` bytes back once it leaves the queue (answered, skipped, or the session ended). */
  release: ((bytes: number) => void) | undefined = undefined;

  push(
    kind: number,
    stmt?: Stmt,
    target?: 'S' | 'P',
    name = '',
    hidden = false,
    closes = 0,
    copyEnds = 0,
    seq = 0,
  ): void {
    this.items.push({
      kind,
      stmt,
      target,
      name,
      hidden,
      closes,
      copyEnds,
      copies: 0,
      undo: undefined,
      seq,
      reserved: 0,
    });
  }

  /** The entry pushed last. */
  tail(): Entry | undefined {
    return this.items.length > this.head ? this.items[this.items.length - 1] : undefined;
  }

  /**
   * Removes the Sync entries (and those of malformed Flushes) sent before the client's copy end number `end`:
   * PostgreSQL read them in COPY IN.
   */
  dropCopySyncs(end: number): void {
    const kept = this.items.slice(0, this.head);
    for (let i = this.head; i < this.items.length; i++) {
      const e = this.items[i];
      const readByCopy = e.kind === K_SYNC || (e.kind === K_INVALID && e.name === 'flush');
      if (i === this.head || !readByCopy || e.copyEnds >= end) kept.push(e);
    }
    this.items = kept;
  }

  peek(): Entry | undefined {
    return this.items[this.head];
  }

  shift(): Entry | undefined {
    const e = this.items[this.head];
    if (e === undefined) return undefined;
    if (e.reserved !== 0) this.release?.(e.reserved);
    this.items[this.head++] = undefined as unknown as Entry;
    if (this.head > 256 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return e;
  }

  /**
   * Whether something pushed after client message `seq` may end or fail the transaction and let a message pushed now
   * run all the same, so that the transaction status at that message is not known yet: a Query, FunctionCall or Sync
   * (a failed Query does not make PostgreSQL skip what follows it, and each of them ends the batch), the proxy's own
   * Queries and Syncs, or an Execute of a statement that may end the transaction (TRANSACTION_END). Anything else
   * that fails makes PostgreSQL skip the later messages up to a Sync. Looks back only to `seq`: nothing per
   * message of a pipeline whose Executes follow their own Binds.
   */
  endsTransactionAfter(seq: number): boolean {
    for (let i = this.items.length - 1; i >= this.head; i--) {
      const e = this.items[i];
      // K_RESTORE entries carry no seq; they are the proxy's own Syncs.
      if (e.seq !== 0 && e.seq <= seq) return false;
      switch (e.kind) {
        case K_QUERY:
        case K_FUNCTION:
        case K_SYNC:
        case K_HIDDEN:
        case K_RESTORE:
          return true;
        case K_ROWS:
          if (e.name.startsWith('simple')) return true;
          break;
        case K_EXECUTE:
          if (e.stmt !== undefined && mayEndTransaction(e.stmt.request.sql)) return true;
          break;
      }
    }
    return false;
  }

  /** Whether a Sync is pending (its ReadyForQuery has not come). */
  hasSync(): boolean {
    for (let i = this.head; i < this.items.length; i++) if (this.items[i].kind === K_SYNC) return true;
    return false;
  }

  /**
   * True when a cancel now can only stop `st`: nothing that runs is ahead of its Query or Execute, and only Syncs and
   * its own counts of changed rows (K_ROWS) are behind it. Ahead of it there may still be entries whose answers the
   * upstream has not sent yet although it is past them: Parse, Bind, Describe and Close answer at once but wait in
   * the backend's output buffer for the next Flush or Sync, so an Execute pipelined with its Parse and Bind runs with
   * their entries still at the head. A cancel landing on one of them fails the batch, which `st` is part of.
   */
  cancellable(st: Stmt): boolean {
    let i = this.head;
    for (; i < this.items.length; i++) {
      const e = this.items[i];
      if (e.stmt === st && (e.kind === K_QUERY || e.kind === K_EXECUTE)) break;
      const own = e.stmt === st && (e.kind === K_HIDDEN || e.kind === K_ROWS);
      if (!own && e.kind !== K_PARSE && e.kind !== K_BIND && e.kind !== K_DESCRIBE && e.kind !== K_CLOSE) return false;
    }
    if (i === this.items.length) return false;
    for (i++; i < this.items.length; i++) {
      const e = this.items[i];
      if (e.kind !== K_SYNC && !(e.kind === K_ROWS && e.stmt === st)) return false;
    }
    return true;
  }

  get length(): number {
    return this.items.length - this.head;
  }

  /** Every pending entry, oldest first (for failing them when the session ends). */
  drain(): Entry[] {
    const rest = this.items.slice(this.head);
    for (const e of rest) if (e.reserved !== 0) this.release?.(e.reserved);
    this.items = [];
    this.head = 0;
    return rest;
  }
}

/**
 * Whether `sql` starts a statement that may end its transaction when run through Execute (COMMIT, END, ROLLBACK, ABORT,
 * PREPARE TRANSACTION), or procedural code that may commit (CALL, DO): PostgreSQL then drops the portals bound before
 * it. Its keywords are read as PostgreSQL's lexer reads them (scan.l): whitespace and comments (`--` to the end of
 * the line, `/* … *\/` nested) separate tokens, letters in any case. A miss costs fidelity, not safety: the proxy's
 * Describe ahead of a later Execute would take that Execute's error, with the Describe code's location.
 * Read only for an Execute pipelined behind a portal's Bind that was not described yet (client-relay.ts).
 */
export function mayEndTransaction(sql: string): boolean {
  let at = skipBlank(sql, 0);
  const first = wordAt(sql, at);
  switch (first) {
    case 'commit':
    case 'end':
    case 'rollback':
    case 'abort':
    case 'call':
    case 'do':
      return true;
    case 'prepare':
      at = skipBlank(sql, at + first.length);
      return wordAt(sql, at) === 'transaction';
    default:
      return false;
  }
}

/** Index of the first character at or after `at` that is not whitespace or inside a comment (scan.l). */
function skipBlank(sql: string, at: number): number {
  const n = sql.length;
  let i = at;
  while (i < n) {
    const c = sql.charCodeAt(i);
    if (c === 32 || (c >= 9 && c <= 13)) {
      i++;
      continue;
    }
    const after = commentEnd(sql, i);
    if (after === i) break;
    // An unclosed block comment runs to the end (the statement then fails in PostgreSQL's lexer).
    i = after < 0 ? n : after;
  }
  return i;
}

/** The keyword-shaped word (ASCII letters, then identifier characters) at `at`, lower case; '' if none. */
function wordAt(sql: string, at: number): string {
  const m = WORD.exec(sql.slice(at, at + 16));
  return m === null ? '' : m[0].toLowerCase();
}
const WORD = /^[A-Za-z_][A-Za-z0-9_$\u0080-\uffff]*/;

/** Statement and portal entries a statement removed from the proxy's maps, as they were. */
export interface ForgottenNames {
  statements: [string, PreparedInfo][];
  portals: [string, PreparedInfo][];
  unchecked: [string, number][];
  /**
   * A Query's: the CommandComplete tags PostgreSQL sent for it so far, one per statement that completed, also those
   * the client does not see (behind a capped or guarded statement: server-relay.ts), so that a failure gives back
   * what did not run.
   */
  ran: (string | undefined)[];
}
