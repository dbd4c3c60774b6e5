import { nameText } from '../protocol/frontend-messages.js';
import type {
  RowField,
  SessionHooks,
  StatementDetail,
  StatementRecord,
  StatementRequest,
  TxStatus,
  Verdict,
} from './hooks.js';
import {
  NAMES_IN_BATCH_CLOSES,
  NamesFound,
  namesCheckInBatch,
  namesCheckMessages,
  namesUndoMessages,
} from './names-check.js';
import {
  type Entry,
  EntryQueue,
  type ForgottenNames,
  K_BIND,
  K_DESCRIBE,
  K_EXECUTE,
  K_FUNCTION,
  K_NAMES,
  K_QUERY,
  K_RESTORE,
  K_ROWS,
  K_SYNC,
  type PreparedInfo,
  ROWS_CHANGED_NAME,
  Stmt,
  type Undo,
} from './pipeline.js';
import {
  fieldsCost,
  PORTAL_ENTRY_COST,
  PREPARED_ENTRY_COST,
  paramsCost,
  RetainedBudget,
  RetainedText,
} from './retained-budget.js';
import { SessionResetError } from './session-reset.js';
import { kindOfKeyword, NAME_KINDS, PROCEDURAL_KINDS, removedBy, SQL_NAMES_HINT, scanSqlNames } from './sql-names.js';
import { splitStatements } from './sql-statements.js';

/** The I/O a relay needs from its session; sockets stay in session.ts. */
export interface RelayIO {
  toClient(buf: Buffer): void;
  toUpstream(buf: Buffer): void;
  cancelUpstream(): void;
  statementDone(record: StatementRecord, stmt: Stmt): void;
}

/**
 * The state both relay directions share: the FIFO of expected responses, prepared statements and portals, the
 * transaction status, and the statement whose rows are streaming. Pure bookkeeping; no sockets.
 */
export class RelayState {
  readonly queue = new EntryQueue();
  /**
   * SQLSTATE of a FATAL or PANIC ErrorResponse PostgreSQL sent (57P01 after pg_terminate_backend, say): the session's
   * end is then recorded by its cause, not as a connection that merely closed. Only the code: a message may hold data.
   */
  upstreamFatal: string | undefined;
  readonly statements: PreparedStatements;
  readonly portals: Portals;
  /** What the two maps keep, counted against the process's budget (retained-budget.ts). */
  readonly retained: RetainedText;
  /**
   * Portals bound to a statement the proxy never saw parsed (SQL PREPARE): they exist upstream, unchecked. The value
   * is the `seq` of their Bind, as PreparedInfo.boundAt is for checked ones (endTransaction).
   */
  readonly uncheckedPortals = new Map<string, number>();
  /** Client messages expected so far (Entry.seq). */
  seq = 0;
  txStatus: TxStatus = 'I';
  /** Statement receiving DataRows (head of the queue when it is a Query or Execute). */
  cur: Stmt | undefined = undefined;
  /** Extended protocol after a denial: client messages are discarded until Sync, as PostgreSQL does after an error. */
  discarding = false;
  /** Drop upstream responses until ReadyForQuery (the client was already told the statement failed). */
  swallow = false;
  /**
   * A row-capped Execute answered the client with 54000 while later messages of its batch were already upstream:
   * PostgreSQL runs them (the cap is the proxy's, not an error there). Their answers are tracked as usual (names,
   * guards, audit) but none reaches the client until ReadyForQuery, as after an error.
   */
  hide = false;
  /**
   * The ErrorResponse of a simple Query or FunctionCall, held back (copied) until its ReadyForQuery: the statement is
   * recorded only then, and clients such as node-postgres report the failure at the ErrorResponse, so a kill of the
   * sidecar in between would leave a failure the client saw out of the trail (server-relay.ts readyForQuery). What
   * PostgreSQL sends between the two (a notification delivered as the session goes idle, a notice) joins it, copied,
   * so that the client gets everything in PostgreSQL's order.
   */
  heldReply: Buffer[] | undefined = undefined;
  /** Called whenever `cur` may have changed (the server relay switches its row fast path). */
  onCurChange: (() => void) | undefined = undefined;
  readonly hooks: SessionHooks;
  readonly scrub: ((text: string, verdict?: Verdict, fields?: ReadonlyMap<string, string>) => string) | undefined;
  /**
   * The upstream backend's process id and the one the client got in the proxy's BackendKeyData: a notification the
   * session sent itself carries the first and must reach the client with the second (server-relay.ts).
   */
  upstreamPid = 0;
  clientPid = 0;
  /** Set while client input waits for a guarded write's outcome (ClientRelay.guard); the server relay calls it. */
  releaseGuard: (() => void) | undefined = undefined;
  /**
   * Called (on a microtask) once every message forwarded so far is answered, or one of them failed and the rest up to
   * the client's Sync are skipped (`discarding`): an Execute waits for it before it may ask a reviewer (client-relay).
   */
  answeredAhead: (() => void) | undefined = undefined;
  /** The K_ROWS count being read: its value (null: SQL NULL, no user table at all), an error, closes seen. */
  rowsValue: number | null | undefined = undefined;
  rowsError: { code: string; message: string } | undefined = undefined;
  rowsCloses = 0;
  /**
   * The proxy's count statement (ROWS_CHANGED_NAME) is prepared upstream, as far as the proxy knows: a count that
   * fails, and the client's DISCARD ALL / DEALLOCATE ALL, make the next count prepare it again.
   */
  rowsPrepared = false;
  /**
   * COPY IN: PostgreSQL ignores Sync and Flush while it reads a COPY's data (copyfromparse.c), from the Query or
   * Execute that starts it until the CopyDone or CopyFail that ends it, so such a Sync gets no ReadyForQuery and must
   * get no entry. `copyEnds` counts the CopyDone/CopyFail messages the client sent; while `copyInEnd` is not 0 the
   * upstream is in COPY IN until the client's copy end number `copyInEnd`.
   */
  copyEnds = 0;
  copyInEnd = 0;
  /**
   * What DO blocks and CALLs that ran made the proxy forget since PostgreSQL was last asked what is left
   * (names-check.ts): asked at the ReadyForQuery of the next Query or Sync (`recheckNames`, an entry named 'recheck'),
   * while the client's later messages wait (`releaseRecheck`), so that they meet the names PostgreSQL has.
   */
  readonly recheck: ForgottenNames[] = [];
  releaseRecheck: (() => void) | undefined = undefined;
  private namesFound: NamesFound | undefined = undefined;
  private namesFailed = false;
  private namesStatus: 'I' | 'T' = 'I';
  /** The question asked inside a batch (askNamesNow): its CloseCompletes so far, and who waits for its end. */
  private namesCloses = 0;
  private namesDone: ((failure: { code: string; message: string } | undefined) => void) | undefined = undefined;
  /** The session's setup SQL as the messages that run it again after a DISCARD ALL (session-reset.ts). */
  restore: Buffer[] | undefined = undefined;
  /**
   * ParameterStatus values as the client was last told them, and those reported while a DISCARD ALL and its restore
   * ran: the client gets only what differs in the end (a SET ROLE undone and redone changes is_superuser twice, or
   * not at all), right before its next ReadyForQuery, where PostgreSQL reports changes.
   */
  readonly clientParams = new Map<string, string>();
  readonly pendingParams = new Map<string, string>();
  private readonly io: RelayIO;

  constructor(hooks: SessionHooks, io: RelayIO, retained = new RetainedText(new RetainedBudget(Infinity))) {
    this.hooks = hooks;
    this.io = io;
    this.retained = retained;
    this.statements = new PreparedStatements(retained);
    this.portals = new Portals(retained);
    this.scrub = hooks.scrubText
      ? (t: string, v?: Verdict, f?: ReadonlyMap<string, string>) => hooks.scrubText!(t, v, f)
      : undefined;
  }

  toClient(buf: Buffer): void {
    this.io.toClient(buf);
  }

  toUpstream(buf: Buffer): void {
    this.io.toUpstream(buf);
  }

  /**
   * Cancels `st` upstream when that cannot hit anything else (EntryQueue.cancellable: nothing that runs ahead of it,
   * nothing but Syncs behind it). Returns false when a cancel now could land on another statement.
   */
  cancel(st: Stmt): boolean {
    if (!this.queue.cancellable(st)) return false;
    this.io.cancelUpstream();
    return true;
  }

  /** Records that a response is due for a client message just forwarded. */
  expect(kind: number, stmt?: Stmt, target?: 'S' | 'P', name = '', hidden = false, closes = 0): void {
    this.queue.push(kind, stmt, target, name, hidden, closes, this.copyEnds, ++this.seq);
    if (this.queue.length === 1) this.advance();
  }

  /**
   * The transaction that the client message `seq` ended is over (its ReadyForQuery says idle, or its COMMIT /
   * ROLLBACK / PREPARE TRANSACTION completed): PostgreSQL has dropped every portal bound before it
   * (PreCommit_Portals, AtCleanup_Portals), so the proxy forgets them too. Without this a client binding ever-new
   * names, transaction after transaction, would grow the maps without end; and a name left behind could be taken
   * by a cursor PostgreSQL opens later (a function's refcursor) and run under the old portal's verdict.
   */
  endTransaction(seq: number): void {
    // Bound behind that message (pipelined after its Sync): in the next transaction, alive.
    for (const [name, info] of this.portals) if ((info.boundAt ?? 0) < seq) this.portals.delete(name);
    for (const [name, at] of this.uncheckedPortals) if (at < seq) this.uncheckedPortals.delete(name);
  }

  /**
   * Why an Execute of portal `name`, which the proxy has no verdict for, is refused. A portal bound to a statement
   * made with SQL PREPARE exists upstream but was never checked: refused as such. Otherwise it usually does not exist
   * at all (closed, its transaction over, never bound) and PostgreSQL would say exactly this; it may also be an SQL
   * cursor (DECLARE), which the proxy will not run through Execute, as it cannot plan masking for rows it never saw
   * described (clients read those with FETCH).
   */
  unknownPortal(name: string): Verdict {
    if (this.uncheckedPortals.has(name))
      return {
        action: 'deny',
        code: '42501',
        message: `portal "${nameText(name)}" was bound to a statement pgwarden did not check (e.g. one made with SQL PREPARE)`,
        hint: 'Prepare statements with the protocol (Parse) or run them with SQL EXECUTE.',
        reason: 'unchecked portal',
      };
    if (!this.portalRoom(name))
      return {
        action: 'deny',
        code: '54000',
        message: `portal "${nameText(name)}" is not known to pgwarden, which tracks at most ${MAX_PORTALS} portals per session`,
        hint: 'Close portals that are no longer needed, or end the transaction (it drops them).',
        reason: 'too many portals',
      };
    // Answered with PostgreSQL's own ErrorResponse for a missing portal (server-relay.ts, portalGone): no hint.
    return {
      action: 'deny',
      code: '34000',
      message: `portal "${nameText(name)}" does not exist`,
      reason: 'unknown portal',
    };
  }

  /**
   * Whether a Bind of portal `name` may be tracked: the unnamed portal and a name already held replace themselves; a
   * new name only while the session holds fewer than MAX_PORTALS (PostgreSQL keeps them for the transaction, the
   * proxy too; one that binds ever more names in one transaction is refused at their Execute, client-relay.ts).
   */
  portalRoom(name: string): boolean {
    if (name === '' || this.portals.has(name) || this.uncheckedPortals.has(name)) return true;
    return this.portals.size + this.uncheckedPortals.size < MAX_PORTALS;
  }

  /**
   * CopyInResponse: the head's COPY reads every client message sent after it up to the next copy end (messages the
   * client pipelined before it saw this, like libpq's Sync behind an Execute, included): Syncs among them are no
   * requests, already forwarded or still to come.
   */
  copyIn(): void {
    const head = this.queue.peek();
    if (head === undefined || (head.kind !== K_QUERY && head.kind !== K_EXECUTE)) return;
    const end = head.copyEnds + ++head.copies;
    if (this.copyEnds < end) this.copyInEnd = end;
    this.queue.dropCopySyncs(end);
  }

  /** Removes the head entry when it is of `kind` (the response for it arrived) and moves to the next. */
  complete(kind: number): void {
    const head = this.queue.peek();
    if (head?.kind !== kind) return;
    this.queue.shift();
    if (head.stmt && !head.stmt.awaitCount && (kind === K_EXECUTE || kind === K_QUERY || kind === K_FUNCTION))
      this.finish(head.stmt);
    this.advance();
  }

  /** Called after the head changed: find the statement whose rows come next and plan its row transformer. */
  advance(): void {
    const head = this.queue.peek();
    if (this.answeredAhead !== undefined && head === undefined) {
      // On a microtask: a failure's skip to Sync (discarding) is set right after the entries are taken off.
      queueMicrotask(this.answeredAhead);
      this.answeredAhead = undefined;
    }
    if (head === undefined || (head.kind !== K_QUERY && head.kind !== K_EXECUTE)) {
      this.cur = undefined;
      this.onCurChange?.();
      return;
    }
    const st = head.stmt!;
    this.cur = st;
    const p = st.prepared;
    // Pipelined Executes of one portal: only now are the rows of the earlier ones known.
    if (p !== undefined) st.rowBase = p.delivered ?? 0;
    if (head.kind === K_EXECUTE && p !== undefined && st.transformer === undefined) {
      // Execute without a Describe of its portal (JDBC, pgbench -M prepared): plan from what is known.
      const fields = p.fields ?? p.statement?.fields;
      if (p.transformer !== undefined) st.transformer = p.transformer;
      else if (fields !== undefined) st.transformer = p.transformer = this.hooks.planRows(fields, st.verdict);
    }
    this.onCurChange?.();
  }

  /** Plans rows from a RowDescription; returns false when it answers the proxy's own Describe (not forwarded). */
  rowDescription(fields: RowField[]): boolean {
    const head = this.queue.peek();
    if (head === undefined) return true;
    if (head.kind === K_QUERY) {
      head.stmt!.transformer = this.hooks.planRows(fields, head.stmt!.verdict);
      return true;
    }
    if (head.kind !== K_DESCRIBE) return true;
    const hidden = head.hidden;
    if (head.target === 'S') {
      const info = this.statements.get(head.name);
      if (info) this.keepFields(info, fields, false);
    } else {
      const info = this.portals.get(head.name);
      if (info) {
        this.keepFields(info, fields, true);
        info.transformer = this.hooks.planRows(fields, info.verdict);
      }
    }
    this.complete(K_DESCRIBE);
    return !hidden;
  }

  /**
   * A Describe's columns are kept with the statement or portal and counted with it, when they fit the process's
   * budget (retained-budget.ts); the bound is checked before they are kept, so it holds. Columns that do not fit are
   * not kept (nor older ones, which are the same), and nothing needs them but a plan of rows made again later: a
   * portal's rows are planned from them as they arrive (rowDescription), and when the first Execute brings another
   * verdict (checkExecute), a portal that has not run yet is described again by the proxy ahead of it (runPortal),
   * so its rows are planned from that answer. A statement's columns are only a fallback for a portal never described,
   * and every portal is described before its first Execute that may return rows.
   */
  private keepFields(info: PreparedInfo, fields: RowField[], portal: boolean): void {
    const before = info.fields === undefined ? 0 : fieldsCost(info.fields);
    const cost = fieldsCost(fields);
    if (cost <= before || this.retained.budget.fits(cost - before)) {
      this.retained.grow(info, cost - before);
      info.fields = fields;
      return;
    }
    this.retained.grow(info, -before);
    info.fields = undefined;
    if (portal && info.executed !== true) info.described = false;
  }

  /** NoData answers a Describe; false when it was the proxy's own. */
  noData(): boolean {
    const hidden = this.queue.peek()?.hidden === true;
    this.complete(K_DESCRIBE);
    return !hidden;
  }

  readyForQuery(status: TxStatus): void {
    this.txStatus = status;
    this.swallow = false;
    // Normally the head is the Query, Sync or FunctionCall this answers; anything before it got no answer.
    let ask = false;
    for (let head = this.queue.peek(); head !== undefined; head = this.queue.peek()) {
      this.queue.shift();
      const k = head.kind;
      if (head.stmt?.recheckNames || (k === K_SYNC && head.name === 'recheck')) ask = true;
      if (k === K_QUERY || k === K_FUNCTION || k === K_SYNC) {
        if (head.stmt && k !== K_SYNC && !head.stmt.awaitCount) this.finish(head.stmt);
        if (status === 'I') this.endTransaction(head.seq);
        break;
      }
    }
    if (ask) this.askNames(status);
    this.advance();
  }

  /**
   * Whether a Query or an Execute of `sql` may run procedural code (DO, CALL), or cannot be told apart from one: what
   * it made the proxy forget is then asked of PostgreSQL once it ran (recheck). Read only for statements that made the
   * proxy forget names.
   */
  mayBeProcedural(sql: string, verdict: Verdict): boolean {
    const statements = statementsOf(sql, verdict.statements);
    return statements === undefined || statements.some((d) => d.kind === undefined || PROCEDURAL_KINDS.has(d.kind));
  }

  /**
   * The ReadyForQuery of a Query or Sync behind a DO or CALL came: asks PostgreSQL what is left (names-check.ts).
   * Not in a failed transaction, where any query fails too: what was forgotten stays forgotten (fails closed) until
   * the ReadyForQuery of a later Query or Sync finds the transaction over (ROLLBACK), and the question is asked then.
   */
  private askNames(status: TxStatus): void {
    if (status === 'E' || this.recheck.length === 0) {
      this.endRecheck(status !== 'E');
      return;
    }
    this.namesFound = new NamesFound();
    this.namesFailed = false;
    this.namesStatus = status;
    this.expect(K_NAMES, undefined, undefined, 'check', true);
    this.io.toUpstream(namesCheckMessages(status));
  }

  /**
   * Whether a Bind of the statement `name` (`map` 'S') or an Execute of the portal `name` ('P'), which the proxy does
   * not know, meets a name a DO or CALL made it forget and PostgreSQL was not asked about yet: the message then waits
   * for the question (client-relay.ts, afterNames) rather than be refused for a name PostgreSQL may still have. Read
   * only for a name the proxy does not know.
   */
  awaitsNames(map: 'S' | 'P', name: string): boolean {
    // In a failed transaction, with nothing ahead that could have ended it, the question would fail (25P02) as the
    // message itself will: it goes as it is, and PostgreSQL refuses it in its own words.
    if (this.txStatus === 'E' && this.queue.length === 0) return false;
    for (const f of this.recheck) {
      if (map === 'S' ? f.statements.some(([k]) => k === name) : f.portals.some(([k]) => k === name)) return true;
      if (map === 'P' && f.unchecked.some(([k]) => k === name)) return true;
    }
    return false;
  }

  /**
   * Asks PostgreSQL what is left inside the client's batch, with nothing of the client's in flight
   * (names-check.ts, namesCheckInBatch); `done` gets PostgreSQL's error when the question failed, which leaves
   * PostgreSQL skipping to the client's Sync and what was forgotten still forgotten (asked again after that Sync).
   */
  askNamesNow(done: (failure: { code: string; message: string } | undefined) => void): void {
    this.namesFound = new NamesFound();
    this.namesFailed = false;
    this.namesCloses = 0;
    this.namesDone = done;
    this.expect(K_NAMES, undefined, undefined, 'batch', true);
    this.io.toUpstream(namesCheckInBatch());
  }

  /** A CloseComplete answering the question asked in a batch: the last one ends it. */
  namesClosed(): void {
    if (++this.namesCloses === NAMES_IN_BATCH_CLOSES) this.endNamesInBatch(undefined);
  }

  private endNamesInBatch(failure: { code: string; message: string } | undefined): void {
    this.queue.shift();
    const found = this.namesFound!;
    this.namesFound = undefined;
    if (failure === undefined) {
      this.keepFound(found);
      this.recheck.length = 0;
    }
    const done = this.namesDone!;
    this.namesDone = undefined;
    this.advance();
    // Not from inside the server relay's handling of a message: the held client message is decided and sent now.
    queueMicrotask(() => done(failure));
  }

  /** What `f` holds is not to be asked about: its statement never started (server-relay.ts, notStarted). */
  unnoteRecheck(f: ForgottenNames): void {
    const i = this.recheck.indexOf(f);
    if (i >= 0) this.recheck.splice(i, 1);
  }

  /** A row, or an error (`row` undefined), answering the proxy's question (K_NAMES). */
  namesAnswer(row: Buffer | undefined, error?: { code: string; message: string }): void {
    if (row !== undefined) {
      this.namesFound?.row(row);
      return;
    }
    this.namesFailed = true;
    // In a batch nothing more answers it: PostgreSQL skips to the client's Sync.
    if (this.queue.peek()?.name === 'batch') this.endNamesInBatch(error ?? { code: 'XX000', message: 'unknown error' });
  }

  /** The ReadyForQuery of the proxy's question (K_NAMES): what still exists comes back, and the client goes on. */
  namesReady(status: TxStatus): void {
    const head = this.queue.shift()!;
    this.advance();
    if (head.name === 'undo') {
      // The client was told its transaction is open; if it cannot be again, the session cannot go on truthfully.
      if (status !== this.namesStatus)
        throw new SessionResetError(
          'XX000',
          'pgwarden could not undo its own check of prepared statements and portals',
        );
      this.endRecheck();
      return;
    }
    const found = this.namesFound!;
    this.namesFound = undefined;
    if (!this.namesFailed && status === this.namesStatus) this.keepFound(found);
    else if (this.namesStatus === 'T' && status === 'E') {
      // Failed after its savepoint (a statement_timeout): back to it, so that the client's transaction is as it was.
      this.expect(K_NAMES, undefined, undefined, 'undo', true);
      this.io.toUpstream(namesUndoMessages());
      return;
    }
    this.endRecheck();
  }

  /** Takes back, of what the DOs and CALLs made the proxy forget, what PostgreSQL says is left. */
  private keepFound(found: NamesFound): void {
    for (const f of this.recheck) {
      const kept = found.kept(f);
      // PL/pgSQL may have moved the portal (FETCH) or opened it anew with the same text: its rows are described
      // again before its next Execute, and planned from that.
      for (const [, info] of kept.portals) {
        info.described = false;
        info.transformer = undefined;
      }
      this.restoreNames(kept);
    }
    this.rowsPrepared = found.statements.has(ROWS_CHANGED_NAME);
  }

  /** The question is settled, or not asked (`settled`: nor to be asked later): the client's held messages go on. */
  private endRecheck(settled = true): void {
    if (settled) this.recheck.length = 0;
    const r = this.releaseRecheck;
    if (r === undefined) return;
    this.releaseRecheck = undefined;
    queueMicrotask(r);
  }

  /**
   * After an error in the extended protocol the server skips to the next Sync: so do the expectations, and what the
   * skipped Parse, Bind, Close and Describe messages did to the proxy's maps is taken back, last first. `failed`: the
   * head is the message that failed (rather than one that completed, or none), and `error` what it failed with.
   */
  failExtended(failed = false, error?: { code: string; message: string }, started = true): void {
    let guarded = false;
    let undone: Entry[] | undefined;
    let first: Entry | undefined;
    // A failed Bind: the statement its portal stands for was attempted (one event, DESIGN §5), though no Execute of
    // it runs upstream. `unchecked`: the Bind of a statement the proxy has no verdict for (made with SQL PREPARE, or
    // none at all), and the verdict an Execute of its portal gets (unknownPortal), taken before the undo below.
    let bound: PreparedInfo | undefined;
    let unchecked: { bind: Entry; verdict: Verdict } | undefined;
    for (let head = this.queue.peek(); head !== undefined && head.kind !== K_SYNC; head = this.queue.peek()) {
      this.queue.shift();
      if (first === undefined) {
        first = head;
        if (failed && error !== undefined && head.kind === K_BIND && head.undo?.map === 'P') {
          bound = this.portals.get(head.undo.name);
          if (bound === undefined) unchecked = { bind: head, verdict: this.unknownPortal(head.undo.name) };
        }
      }
      // An Execute that was skipped, or failed (but for procedural code, which may have removed names before it
      // failed), removed no name upstream: the names it made the proxy forget go back.
      const gaveBack =
        head.kind === K_EXECUTE &&
        head.stmt?.forgotten !== undefined &&
        (head.stmt.results.length === 0 || (failed && head === first && (!started || !procedural(head.stmt))));
      if (head.undo !== undefined || gaveBack) {
        if (undone === undefined) undone = [];
        undone.push(head);
      }
      if (head.stmt?.guard !== undefined || head.stmt?.resets) guarded = true;
      // A count behind a write (K_ROWS) is not a statement of the client's; a write waiting for it is recorded as it
      // stands (the batch failed: nothing of it commits).
      if (head.kind === K_ROWS) {
        if (head.stmt?.awaitCount) {
          head.stmt.awaitCount = false;
          this.finish(head.stmt);
        }
        continue;
      }
      if (head.stmt && head.stmt.results.length > 0) this.finish(head.stmt);
      else if (bound !== undefined && head.kind === K_EXECUTE && head.stmt?.prepared === bound) {
        // The Execute the client pipelined behind the failed Bind carries its error, under its own verdict.
        head.stmt.endResult({ rows: 0, bytes: 0, error: error! });
        this.finish(head.stmt);
        bound = undefined;
      } else if (
        unchecked !== undefined &&
        head.kind === K_EXECUTE &&
        head.target === 'P' &&
        head.name === unchecked.bind.undo!.name
      ) {
        // The Execute the proxy refused behind it (unknownPortal): the client got the Bind's error, recorded on it.
        head.stmt!.endResult({ rows: 0, bytes: 0, error: error! });
        this.finish(head.stmt!);
        unchecked = undefined;
      } else head.stmt?.settle(); // skipped by the server: it never ran
    }
    // No Execute of it was sent yet (the client flushed the Bind and waits): the statement is recorded under its
    // Parse's verdict. The Execute that may follow is skipped unread, as upstream (discarding), and records nothing.
    if (bound !== undefined) {
      const st = new Stmt(bound.request, bound.verdict);
      st.endResult({ rows: 0, bytes: 0, error: error! });
      this.finish(st);
    }
    if (unchecked !== undefined) {
      // Nothing decided the statement: the record is the one its portal's Execute would have made, refused as such.
      const req: StatementRequest = {
        sql: '',
        protocol: 'extended',
        statementName: nameText(unchecked.bind.name),
        txStatus: this.txStatus,
      };
      const st = new Stmt(req, unchecked.verdict);
      st.endResult({ rows: 0, bytes: 0, error: error! });
      this.finish(st);
    }
    if (undone !== undefined)
      for (let i = undone.length - 1; i >= 0; i--) {
        const e = undone[i];
        if (e.undo !== undefined) this.undo(e.undo, failed && e === first);
        else {
          this.restoreNames(e.stmt!.forgotten!);
          e.stmt!.forgotten = undefined;
        }
      }
    // A guarded Execute (or a DISCARD ALL) skipped (an earlier message of its batch failed) settles nothing: the
    // client's held input, its Sync among it, may go on (the upstream skips the rest up to that Sync too).
    if (guarded) this.endGuard();
    this.advance();
  }

  /** Notes on the entry just pushed how to take back its effect on the maps (the slot `name` of `map` as it is now). */
  willChange(map: 'S' | 'P', name: string): void {
    const prev = (map === 'S' ? this.statements : this.portals).get(name);
    this.queue.tail()!.undo = { map, name, prev, unchecked: map === 'P' ? this.uncheckedPortals.get(name) : undefined };
  }

  /**
   * Takes back a skipped message's effect. One that failed itself (`failed`) may have had part of its effect in
   * PostgreSQL: the unnamed statement is dropped before a Parse is parsed, the unnamed portal replaced midway through
   * a Bind. So those are forgotten instead (a later Bind or Execute of them is refused); a named statement or portal
   * stays as it was (a duplicate name, a Parse that does not parse).
   */
  private undo(u: Undo, failed: boolean): void {
    if (u.map === 'D') {
      if (u.prev !== undefined) u.prev.described = false;
      return;
    }
    const map = u.map === 'S' ? this.statements : this.portals;
    if (u.prev === undefined || (failed && u.name === '')) map.delete(u.name);
    else map.set(u.name, u.prev);
    if (u.map === 'P') {
      if (u.unchecked !== undefined && !(failed && u.name === '')) this.uncheckedPortals.set(u.name, u.unchecked);
      else this.uncheckedPortals.delete(u.name);
    }
  }

  /**
   * SQL DEALLOCATE, DECLARE, CLOSE and DISCARD share the namespaces of protocol statements and portals: the proxy
   * forgets what it knows of the names they may touch, so that a Bind or Execute of such a name is refused as
   * unchecked rather than run under the verdict of what used to have that name. Called when the statement is
   * forwarded (a Bind pipelined behind it must not find the old verdict). (SQL PREPARE needs nothing: NAME_KINDS.)
   * Returns what it removed, so that a failure gives back the names PostgreSQL kept: a Query's that its statements
   * that did not run could remove (restoreUnrun), an Execute's when it was skipped, or failed and is no procedural
   * code (failExtended). Anything else stays forgotten, which fails closed.
   */
  forgetSqlNames(sql: string, verdict: Verdict | undefined): ForgottenNames | undefined {
    if (!this.touchesNames(sql, verdict)) return undefined;
    // What is removed is noted as it goes (a copy of the maps would cost the session's every statement each time).
    const out: ForgottenNames = { statements: [], portals: [], unchecked: [], ran: [] };
    this.forget(sql, verdict, out);
    return out.statements.length + out.portals.length + out.unchecked.length > 0 ? out : undefined;
  }

  /**
   * A Query failed after the statements whose tags `f.ran` holds completed upstream: gives back what `f`
   * (forgetSqlNames) holds that none of those, nor the failed one, may have removed (sql-names.ts, removedBy); the
   * statements behind it never ran. Each statement's kind is the parser's (a policy's verdict) or, without it, its
   * first keyword, the Query split as PostgreSQL splits it (sql-statements.ts). When the proxy cannot tell which ran,
   * nothing comes back.
   */
  restoreUnrun(
    f: ForgottenNames,
    sql: string,
    details: readonly StatementDetail[] | undefined,
    failedRan = true,
  ): void {
    const statements = statementsOf(sql, details);
    if (statements === undefined) return;
    const done = removedBy(statements, f.ran, failedRan);
    if (done === undefined) return;
    this.restoreNames({
      statements: f.statements.filter(([k]) => !done.statement(k)),
      portals: f.portals.filter(([k]) => !done.portal(k)),
      unchecked: f.unchecked.filter(([k]) => !done.portal(k)),
      ran: [],
    });
  }

  /** Puts back what a failed statement made the proxy forget, where nothing took the name since. */
  restoreNames(f: ForgottenNames): void {
    for (const [k, v] of f.statements) if (!this.statements.has(k)) this.statements.set(k, v);
    for (const [k, v] of f.portals) if (!this.portals.has(k) && !this.uncheckedPortals.has(k)) this.portals.set(k, v);
    for (const [k, at] of f.unchecked) if (!this.portals.has(k)) this.uncheckedPortals.set(k, at);
  }

  /**
   * Whether running `sql` may create or remove a statement or portal by name. With the parser's kinds for every
   * statement (a policy's verdict) only those kinds can: a literal 'prepare dinner' in an INSERT must not cost the
   * session its prepared statements. A property of the statement: the relay asks once per Parse, not per Execute.
   */
  touchesNames(sql: string, verdict?: Verdict): boolean {
    const details = verdict?.statements;
    if (details?.some((d) => d.kind !== undefined && PROCEDURAL_KINDS.has(d.kind))) return true;
    if (
      details !== undefined &&
      details.length > 0 &&
      details.every((d) => d.kind !== undefined && !NAME_KINDS.has(d.kind))
    )
      return false;
    return SQL_NAMES_HINT.test(sql);
  }

  /** Forgets the names `sql` may remove; `out` (when given) gets each entry removed, as it was. */
  private forget(sql: string, verdict?: Verdict, out?: ForgottenNames): void {
    if (!this.touchesNames(sql, verdict)) return;
    if (verdict?.statements?.some((d) => d.kind !== undefined && PROCEDURAL_KINDS.has(d.kind))) {
      // A refcursor's name is a value (`c refcursor := 'p1'`): any portal may have been replaced. A DEALLOCATE that
      // PL/pgSQL runs as written is in the text (the scan below reads it); one that EXECUTE runs may be computed
      // (`'DEALL' || 'OCATE …'`): with an EXECUTE, every named statement too (a DEALLOCATE and a PREPARE of the same
      // name replace it).
      this.dropPortals(out);
      if (/\bexecute\b/i.test(sql)) this.dropStatements(out);
    }
    scanSqlNames(sql, (statements, portals, name) => {
      if (name === undefined) {
        // ALL, or a name the proxy cannot read for certain: every one of them.
        if (statements) this.dropStatements(out);
        if (portals) this.dropPortals(out);
        return;
      }
      if (statements) {
        const prev = this.statements.get(name);
        if (prev !== undefined) {
          out?.statements.push([name, prev]);
          this.statements.delete(name);
        }
      }
      if (portals) {
        const prev = this.portals.get(name);
        if (prev !== undefined) {
          out?.portals.push([name, prev]);
          this.portals.delete(name);
        }
        const at = this.uncheckedPortals.get(name);
        if (at !== undefined) {
          out?.unchecked.push([name, at]);
          this.uncheckedPortals.delete(name);
        }
      }
    });
  }

  /** Every named statement (PreparedStatements.clearNamed), noted in `out`. */
  private dropStatements(out: ForgottenNames | undefined): void {
    if (out !== undefined) for (const e of this.statements) if (e[0] !== '') out.statements.push(e);
    this.statements.clearNamed();
  }

  /** Every portal, checked or not, noted in `out`. */
  private dropPortals(out: ForgottenNames | undefined): void {
    if (out !== undefined) {
      for (const e of this.portals) out.portals.push(e);
      for (const e of this.uncheckedPortals) out.unchecked.push(e);
    }
    this.portals.clear();
    this.uncheckedPortals.clear();
  }

  /**
   * A DISCARD ALL succeeded (its CommandComplete is in): the setup SQL goes upstream right behind it. The client's
   * next messages wait until all of it has succeeded (the last restore's ReadyForQuery): PostgreSQL would run a Query
   * that follows a failed one, as the login role. `reply`: a simple Query's, whose ReadyForQuery the client gets only
   * then too.
   */
  restoreSession(reply: boolean): void {
    const msgs = this.restore!;
    const last = reply ? 'reply' : 'last';
    for (let i = 0; i < msgs.length; i++)
      this.queue.push(K_RESTORE, undefined, undefined, i === msgs.length - 1 ? last : '', true);
    this.io.toUpstream(msgs.length === 1 ? msgs[0] : Buffer.concat(msgs));
  }

  /** Lets the client's held input go on (after any undo was sent upstream, so it stays ahead of that input). */
  endGuard(): void {
    const r = this.releaseGuard;
    if (r === undefined) return;
    this.releaseGuard = undefined;
    // Not from inside the server relay's handling of a message: resuming the client's input forwards it at once.
    queueMicrotask(r);
  }

  finish(stmt: Stmt): void {
    this.io.statementDone(stmt.record(), stmt);
  }
}

/**
 * The statements of `sql` with their kinds: the parser's (a policy's verdict), or without them the proxy's own split
 * with each statement's first keyword (sql-statements.ts); undefined when it cannot split.
 */
function statementsOf(
  sql: string,
  details: readonly StatementDetail[] | undefined,
): readonly { text: string; kind?: string }[] | undefined {
  if (details?.every((d) => d.kind !== undefined)) return details;
  return splitStatements(sql)?.map((x) => ({ text: x.text, kind: kindOfKeyword(x.first) }));
}

/** Whether the statement an Execute ran may be procedural code (DO, CALL), or cannot be told apart from it. */
function procedural(st: Stmt): boolean {
  const statements = statementsOf(st.request.sql, st.verdict.statements);
  return statements === undefined || statements.some((d) => d.kind === undefined || PROCEDURAL_KINDS.has(d.kind));
}

/** A map of statements or portals whose entries are counted in the retained budget while they are in it. */
abstract class CountedEntries extends Map<string, PreparedInfo> {
  readonly retained: RetainedText;

  constructor(retained: RetainedText) {
    super();
    this.retained = retained;
  }

  protected abstract hold(info: PreparedInfo): void;
  protected abstract free(info: PreparedInfo): void;

  override set(name: string, info: PreparedInfo): this {
    const prev = super.get(name);
    if (prev === info) return this;
    this.hold(info);
    if (prev !== undefined) this.free(prev);
    return super.set(name, info);
  }

  override delete(name: string): boolean {
    const prev = super.get(name);
    if (prev === undefined) return false;
    this.free(prev);
    return super.delete(name);
  }

  override clear(): void {
    for (const info of super.values()) this.free(info);
    super.clear();
  }
}

/**
 * Prepared statements, counted as they come and go (retained-budget.ts): their SQL text stays in the sidecar for as
 * long as the statement exists upstream, so a client that parses named statements without closing them grows the
 * one process every session shares (PostgreSQL keeps them in the client's own backend).
 */
export class PreparedStatements extends CountedEntries {
  protected hold(info: PreparedInfo): void {
    this.retained.ref(info, statementCost(info));
  }

  protected free(info: PreparedInfo): void {
    this.retained.unref(info);
  }

  /**
   * What keeping `name` parsed as `sql` would add to what the session and the process hold (replacing a statement of
   * that name frees it, unless a portal still keeps it).
   */
  addsWith(name: string, sql: string): number {
    const prev = super.get(name);
    const freed = prev !== undefined && prev.refs === 1 ? (prev.charged ?? 0) : 0;
    return PREPARED_ENTRY_COST + sql.length - freed;
  }

  /**
   * Every named statement: what DEALLOCATE ALL and DISCARD ALL drop (DropAllPreparedStatements walks the hash of
   * named ones). The unnamed statement lives apart in PostgreSQL and no SQL names it.
   */
  clearNamed(): void {
    const unnamed = super.get('');
    // An extra reference holds it across the clear: nothing is freed and counted again.
    if (unnamed !== undefined) this.hold(unnamed);
    this.clear();
    if (unnamed !== undefined) super.set('', unnamed);
  }
}

/** Portals, counted as PreparedStatements are; a portal keeps the statement it was bound from alive. */
export class Portals extends CountedEntries {
  protected hold(info: PreparedInfo): void {
    this.retained.ref(info, portalCost(info));
    if (info.statement !== undefined) this.retained.ref(info.statement, statementCost(info.statement));
  }

  protected free(info: PreparedInfo): void {
    this.retained.unref(info);
    if (info.statement !== undefined) this.retained.unref(info.statement);
  }
}

const statementCost = (info: PreparedInfo): number =>
  PREPARED_ENTRY_COST + info.request.sql.length + (info.fields === undefined ? 0 : fieldsCost(info.fields));
const portalCost = (info: PreparedInfo): number =>
  PORTAL_ENTRY_COST +
  (info.fields === undefined ? 0 : fieldsCost(info.fields)) +
  (info.request.params === undefined ? 0 : paramsCost(info.request.params));

/**
 * Portals one session may have tracked at once. PostgreSQL drops them when their transaction ends (so does the
 * proxy), so only a transaction that binds this many names without closing them reaches it; drivers keep a few
 * open (a JDBC result set read with a fetch size holds one).
 */
export const MAX_PORTALS = 10_000;
