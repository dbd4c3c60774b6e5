import { errorResponse } from '../protocol/backend-messages.js';
import { F, frontendLimit, LARGE_MESSAGE_LIMIT } from '../protocol/codes.js';
import { MalformedBody } from '../protocol/errors.js';
import { DROP, type Framer, type FramerHandler, NEED_MORE, PASS, SCAN, WHOLE } from '../protocol/framer.js';
import {
  BindNameScanner,
  bindMessage,
  closeMessage,
  decodeBindNames,
  decodeBindValues,
  decodeExecute,
  decodeFunctionCall,
  decodeParse,
  decodeQuery,
  decodeTarget,
  describeMessage,
  executeMessage,
  failingLike,
  functionCallMessage,
  nameText,
  parseMessage,
  queryMessage,
  trackedName,
} from '../protocol/frontend-messages.js';
import type { StatementRequest, Verdict } from './hooks.js';
import {
  K_BIND,
  K_CLOSE,
  K_DESCRIBE,
  K_EXECUTE,
  K_FUNCTION,
  K_HIDDEN,
  K_INVALID,
  K_PARSE,
  K_QUERY,
  K_ROWS,
  K_SYNC,
  type PreparedInfo,
  ROWS_CHANGED_NAME,
  ROWS_CHANGED_SQL,
  Stmt,
} from './pipeline.js';
import type { RelayState } from './relay-state.js';
import { paramsCost, type RetainedBudget } from './retained-budget.js';
import { mayResetSession } from './session-reset.js';
import { type StatementBudget, type StatementReader, UNCOUNTED_STATEMENT_BYTES } from './statement-budget.js';

/**
 * Text sent upstream in place of a denied statement. It fails in PostgreSQL's raw parser (42601) without touching
 * any object, so the upstream itself produces the ErrorResponse and ReadyForQuery: outside a transaction block the
 * session stays idle, inside one the transaction is failed until ROLLBACK — on the upstream as for the client. The
 * proxy swaps that error for the verdict's before the client sees it.
 */
export const DENIED_SQL = 'pgwarden denied this statement';
/** Executing a portal that cannot exist fails with 34000 and puts the upstream into skip-until-Sync. */
export const DENIED_PORTAL = '\u0001pgwarden-denied';
/** A Flush message: PostgreSQL sends what it has buffered, the batch (and its transaction) goes on. */
const FLUSH = Buffer.from([0x48, 0, 0, 0, 4]);
const BEGIN_QUERY = queryMessage('BEGIN');
// The counts of changed rows (guardrail maxRowsAffected): the statement prepared once per session (closed first, in
// case a count that failed left it behind), then a named portal of it run and closed. Between simple Queries the
// proxy's BEGIN has opened a transaction block, so their Sync commits nothing.
const ROWS_PREPARE = Buffer.concat([
  closeMessage('S', ROWS_CHANGED_NAME),
  parseMessage(ROWS_CHANGED_NAME, ROWS_CHANGED_SQL),
]);
const ROWS_RUN = Buffer.concat([
  bindMessage(ROWS_CHANGED_NAME, ROWS_CHANGED_NAME),
  executeMessage(ROWS_CHANGED_NAME, 0),
  closeMessage('P', ROWS_CHANGED_NAME),
]);
const SYNC = Buffer.from([0x53, 0, 0, 0, 4]);
/**
 * Largest Bind prefix waited for to read the portal and statement names at once (NAMEDATALEN is 64 bytes). Past it a
 * Bind small enough to be shown to a reviewer (MAX_REVIEWED_BIND_BYTES) is waited for whole, as a reviewed one with
 * short names is; a larger one's names are read as it passes (scan).
 */
const BIND_PEEK = 4096;

export interface ClientRelayIO {
  /** A verdict is pending: stop reading the client. */
  hold(): void;
  /** The verdict arrived and its outcome was written upstream: continue with queued client input. */
  release(): void;
  /** The client sent Terminate. */
  terminate(): void;
  /** Whether the session has stopped reading the client (backpressure, a held verdict): then it is not stalling. */
  readingPaused(): boolean;
  /** Ends the session at once with FATAL `error` (the proxy's own, as ProxySession.kill). */
  kill(error: { code: string; message: string; hint?: string }, reason: string): void;
}

/** Client → upstream: frames the client's messages, gates statements through the session hooks, forwards bytes. */
/**
 * The largest Bind whose values are read for an approver (1 MiB; the request may show 64 Ki characters anyway). A
 * larger one is passed without them, and its approval request says so in place of the values.
 */
const MAX_REVIEWED_BIND_BYTES = 1024 * 1024;

export class ClientRelay implements FramerHandler, StatementReader {
  framer: Framer | undefined;
  private readonly s: RelayState;
  private readonly io: ClientRelayIO;
  private readonly maxStatementBytes: number;
  private readonly budget: StatementBudget;
  /** A Query/Parse/FunctionCall skipped unread (dropped), and whether for the process-wide budget. */
  private oversize = 0;
  private overBudget = false;
  /**
   * Bytes of the budget the statement message being handled holds, until its entry is pushed (attachReserved; the
   * entry gives them back when it is answered) or it turns out to need none (freeReserved).
   */
  private reserved = 0;
  /** When the statement holding `reserved` was announced (its length word read). */
  private reservedAt = 0;
  /** A Bind whose names are read as it passes (SCAN), and its length word. */
  private bindScan: BindNameScanner | undefined = undefined;
  private bindLength = 0;
  /** The Bind being collected has names past BIND_PEEK: it is tracked once whole (decoded), not at its header. */
  private bindWhole = false;
  /** The Bind being collected names a statement a DO or CALL made the proxy forget: it waits for the question. */
  private bindAwaits = false;
  /** Set while a statement is held: a client CancelRequest ends the hold with 57014, as it would end a query. */
  cancelHeld: (() => void) | undefined = undefined;

  constructor(state: RelayState, io: ClientRelayIO, maxStatementBytes: number, budget: StatementBudget) {
    this.s = state;
    this.io = io;
    this.maxStatementBytes = maxStatementBytes;
    this.budget = budget;
  }

  /** The statement just expected (s.expect) holds the reserved bytes until its answer. */
  private attachReserved(): void {
    if (this.reserved === 0) return;
    this.s.queue.tail()!.reserved = this.reserved;
    this.reserved = 0;
  }

  /** Gives back what the message being handled reserved and nothing took over (also when the session ends). */
  freeReserved(): void {
    if (this.reserved === 0) return;
    this.budget.arrived(this);
    this.budget.release(this.reserved);
    this.reserved = 0;
  }

  progressAt(): number {
    if (this.io.readingPaused()) return Number.POSITIVE_INFINITY;
    return Math.max(this.reservedAt, this.framer!.collectAt);
  }

  /**
   * The statement being read stopped arriving while another session's did not fit the budget (StatementBudget
   * reclaim). PostgreSQL would wait for the rest for ever, as it holds a backend; here the memory is shared, so the
   * session ends as one that broke the protocol does (08P01), saying why.
   */
  evict(stalledMs: number): void {
    const [got, total] = this.framer!.collecting();
    this.io.kill(
      {
        code: '08P01',
        message: `pgwarden: terminating connection because the client stopped sending a statement: ${got} of its ${total} bytes arrived, then nothing for ${Math.round(stalledMs / 1000)} s while other sessions needed the memory it holds`,
        hint: 'Send statements whole; a client that cannot should raise --statement-stall-timeout or --max-buffered-statement-bytes.',
      },
      'stalled mid-statement while the statement budget was contended',
    );
  }

  limit(type: number): number {
    if (type === F.Password) return -1; // only valid during authentication
    return frontendLimit(type, LARGE_MESSAGE_LIMIT);
  }

  header(type: number, length: number, buf: Buffer, pos: number, avail: number): number {
    const s = this.s;
    // PostgreSQL's skip to Sync ends at a Sync, and a Terminate is obeyed during it (postgres.c, SocketBackend).
    if (s.discarding) return type === F.Sync || type === F.Terminate ? WHOLE : DROP;
    switch (type) {
      case F.Query:
      case F.Parse:
      case F.FunctionCall:
        if (length - 4 > this.maxStatementBytes) {
          this.oversize = type;
          return DROP;
        }
        // Read whole (assembled in a buffer of its size when it spans reads, then decoded): large ones count against
        // the process's budget until PostgreSQL has answered them.
        if (length >= UNCOUNTED_STATEMENT_BYTES) {
          if (!this.budget.reserve(length + 1, this)) {
            this.oversize = type;
            this.overBudget = true;
            return DROP;
          }
          this.reserved = length + 1;
          this.reservedAt = performance.now();
        }
        return WHOLE;
      case F.Bind: {
        const names = decodeBindNames(buf, pos, pos + avail);
        if (names === null) {
          if (avail > length) return WHOLE; // the whole message, and no names in it: whole() answers it
          if (avail < BIND_PEEK) return NEED_MORE;
          // Names this long are PostgreSQL's to take (it keys them on 63 bytes). A Bind that could be shown whole to
          // a reviewer or the audit trail is collected whole (one buffer of its size), and tracked then (decoded).
          if (length - 4 <= MAX_REVIEWED_BIND_BYTES) {
            this.bindWhole = true;
            return WHOLE;
          }
          // Larger: read them as the Bind passes.
          this.bindScan = new BindNameScanner();
          this.bindLength = length;
          return SCAN;
        }
        // Pipelined behind a DO or CALL, with a statement name it made the proxy forget: decided once PostgreSQL said
        // whether it is left (decoded, afterNames). One too large to hold is tracked as it passes: unchecked.
        if (
          s.recheck.length > 0 &&
          length - 4 <= MAX_REVIEWED_BIND_BYTES &&
          !s.statements.has(names.statement) &&
          s.awaitsNames('S', names.statement)
        ) {
          this.bindAwaits = true;
          return WHOLE;
        }
        return this.bind(names, length, false);
      }
      case F.Execute:
      case F.Describe:
      case F.Close:
      case F.Sync:
      case F.Terminate:
        return WHOLE;
      case F.CopyDone:
      case F.CopyFail:
        if (++s.copyEnds >= s.copyInEnd) s.copyInEnd = 0;
        return PASS;
      case F.Flush:
        // A Flush has no body; PostgreSQL refuses one with a body, except in COPY IN, where it ignores Flush unread.
        return length === 4 || s.copyInEnd !== 0 ? PASS : WHOLE;
      default:
        return PASS; // CopyData
    }
  }

  /**
   * A Bind is forwarded: its portal now stands for its statement as the proxy knows it. `streamed`: its bytes are
   * already on their way (names too long to wait for), so it cannot be held whole for a reviewer.
   */
  private bind(names: { portal: string; statement: string }, length: number, streamed: boolean): number {
    const s = this.s;
    // A name the proxy cannot key as PostgreSQL does has no verdict: the portal is unchecked (Execute refuses it).
    const tracked = trackedName(names.portal) && trackedName(names.statement);
    const info = tracked ? s.statements.get(names.statement) : undefined;
    if (s.hooks.clientName !== undefined) {
      s.hooks.clientName(nameText(names.portal));
      s.hooks.clientName(nameText(names.statement));
    }
    const room = s.portalRoom(names.portal);
    // The statement's name: a Bind of one the proxy has no verdict for is recorded by it if it fails (failExtended).
    s.expect(K_BIND, undefined, undefined, names.statement);
    s.willChange('P', names.portal);
    if (!room) {
      // Forwarded, but not tracked: its Execute is refused (54000), as the proxy has no verdict for it.
      s.portals.delete(names.portal);
      s.uncheckedPortals.delete(names.portal);
      return PASS;
    }
    // A statement the proxy never saw parsed (e.g. SQL PREPARE) leaves the portal unknown: Execute refuses it.
    if (info === undefined) {
      s.portals.delete(names.portal);
      s.uncheckedPortals.set(names.portal, s.seq);
    } else {
      s.uncheckedPortals.delete(names.portal);
      s.portals.set(names.portal, {
        request: info.request,
        verdict: info.verdict,
        statement: info,
        described: false,
        boundAt: s.seq,
        // Set by the map (retained-budget.ts); present from the start so that every entry has one shape.
        refs: 0,
        charged: 0,
      });
      // A statement held for review at each execution: the approver is shown the values this Bind gives it. The
      // audit trail records them under `audit.captureParams`. Otherwise the Bind passes unread.
      if (info.verdict.action === 'review' || s.hooks.captureParams?.() === true) {
        // A streamed Bind (names past BIND_PEEK) is one larger than that too (header).
        if (!streamed && length - 4 <= MAX_REVIEWED_BIND_BYTES) return WHOLE;
        const note = `(the values are not shown: the Bind is ${length - 4} bytes)`;
        s.portals.get(names.portal)!.request = { ...info.request, params: [note] };
      }
    }
    return PASS;
  }

  /** The next piece of a Bind whose names pass BIND_PEEK bytes (header answered SCAN). */
  scan(buf: Buffer, start: number, end: number, last: boolean): boolean {
    const names = this.bindScan!.push(buf, start, end);
    if (names === null && !last) return false;
    this.bindScan = undefined;
    // Skipped upstream when an earlier message failed meanwhile (PostgreSQL is on its way to Sync): nothing to track.
    if (this.s.discarding) return true;
    // Names without their NULs: PostgreSQL refuses the Bind itself (08P01) and skips to Sync, as for any failed Bind.
    if (names === null) this.s.expect(K_BIND, this.refusedUnread(new MalformedBody(F.Bind, 'string'), 'extended'));
    else this.bind(names, this.bindLength, true);
    return true;
  }

  whole(type: number, buf: Buffer, start: number, end: number): boolean | Buffer {
    // Arrived whole: from here on it holds its share for PostgreSQL's answer or a verdict, not for the client.
    if (this.reserved !== 0) this.budget.arrived(this);
    try {
      return this.decoded(type, buf, start, end);
    } catch (err) {
      if (err instanceof MalformedBody) return this.malformed(err);
      throw err;
    } finally {
      // Held for a verdict: the message is kept until it settles (hold).
      if (this.cancelHeld === undefined) this.freeReserved();
    }
  }

  private decoded(type: number, buf: Buffer, start: number, end: number): boolean | Buffer {
    const s = this.s;
    switch (type) {
      case F.Query: {
        const req: StatementRequest = { sql: decodeQuery(buf, start, end), protocol: 'simple', txStatus: s.txStatus };
        return this.gate(K_QUERY, new Stmt(req, PENDING), () => s.hooks.checkQuery(req), buf, start, end);
      }
      case F.Parse: {
        const { name, sql } = decodeParse(buf, start, end);
        const req: StatementRequest = {
          sql,
          protocol: 'extended',
          statementName: nameText(name),
          txStatus: s.txStatus,
        };
        const check = trackedName(name) ? () => s.hooks.checkParse(req) : () => UNTRACKED_NAME;
        return this.gate(K_PARSE, new Stmt(req, PENDING), check, buf, start, end, name);
      }
      case F.FunctionCall: {
        const oid = decodeFunctionCall(buf, start, end);
        const req: StatementRequest = { sql: `FunctionCall(${oid})`, protocol: 'simple', txStatus: s.txStatus };
        return this.gate(K_FUNCTION, new Stmt(req, PENDING), () => s.hooks.checkFunctionCall(oid), buf, start, end);
      }
      case F.Bind: {
        if (this.bindAwaits) {
          this.bindAwaits = false;
          return this.afterNames(
            buf,
            start,
            end,
            () => {
              this.bindWhole = true;
              return this.decoded(F.Bind, buf, start, end);
            },
            decodeBindNames(buf, start, end)?.statement,
          );
        }
        const late = this.bindWhole;
        this.bindWhole = false;
        const names = decodeBindNames(buf, start, end);
        if (names === null) throw new MalformedBody(F.Bind, 'string');
        if (late) {
          // Skipped upstream when an earlier message failed while it was collected: nothing to track (as scan).
          if (s.discarding) return true;
          if (this.bind(names, end - start - 1, false) === PASS) return true;
        }
        const info = s.portals.get(names.portal);
        if (info === undefined) return true;
        try {
          const { values, formats } = decodeBindValues(buf, start, end);
          // Kept with the portal until it is gone: counted, and not kept when the process's budget is full.
          const cost = paramsCost(values);
          if (s.retained.budget.fits(cost)) {
            info.request = { ...info.request, params: values, paramFormats: formats };
            s.retained.grow(info, cost);
          } else info.request = { ...info.request, params: [PARAMS_NOT_KEPT] };
        } catch {
          // PostgreSQL reads these fields the same way and refuses the Bind; the approver is not shown a guess.
          info.request = { ...info.request, params: ['(the values cannot be read: the Bind is malformed)'] };
        }
        return true;
      }
      case F.Flush:
        throw new MalformedBody(F.Flush, 'trailing');
      case F.Execute:
        return this.execute(buf, start, end);
      case F.Describe: {
        const t = decodeTarget(buf, start, end);
        s.hooks.clientName?.(nameText(t.name));
        const info = (t.kind === 'S' ? s.statements : s.portals).get(t.name);
        s.expect(K_DESCRIBE, undefined, t.kind, t.name);
        if (info !== undefined && !info.described) {
          info.described = true;
          s.queue.tail()!.undo = { map: 'D', name: t.name, prev: info, unchecked: undefined };
        }
        return true;
      }
      case F.Close: {
        const t = decodeTarget(buf, start, end);
        s.hooks.clientName?.(nameText(t.name));
        s.expect(K_CLOSE);
        s.willChange(t.kind, t.name);
        if (t.kind === 'S') s.statements.delete(t.name);
        else {
          s.portals.delete(t.name);
          s.uncheckedPortals.delete(t.name);
        }
        return true;
      }
      case F.Sync:
        if (s.copyInEnd !== 0) return true; // read and ignored by the COPY (RelayState.copyIn)
        s.discarding = false;
        s.expect(K_SYNC);
        if (s.recheck.length > 0 && s.releaseRecheck === undefined) {
          s.queue.tail()!.name = 'recheck';
          this.heldForNames();
        }
        return true;
      case F.Terminate:
        this.io.terminate();
        return true;
      default:
        return true;
    }
  }

  /**
   * A message whose body PostgreSQL cannot read: it answers ERROR 08P01 and goes on, in the extended protocol by
   * skipping to the next Sync. Upstream gets a message that fails there at the same step (failingLike), so the error
   * and its effects are PostgreSQL's own; nothing of the client's is forwarded, and the proxy's statements and
   * portals stay as they are, as PostgreSQL's do. A Query, Parse, Execute or FunctionCall is recorded as refused.
   */
  private malformed(e: MalformedBody): Buffer {
    const s = this.s;
    const out = failingLike(e);
    // In COPY IN PostgreSQL refuses a message of these types without reading it, failing the COPY's own statement.
    if (s.copyInEnd !== 0) return out;
    const kind = STATEMENT_KINDS.get(e.type);
    if (kind !== undefined) {
      const simple = kind === K_QUERY || kind === K_FUNCTION;
      s.expect(kind, this.refusedUnread(e, simple ? 'simple' : 'extended'));
      this.attachReserved();
      if (simple) return out;
    } else {
      s.expect(K_INVALID, undefined, undefined, e.type === F.Flush ? 'flush' : '');
      // A COPY the client pipelined ahead of this Flush may be about to read it (and ignore it): not skipped here.
      if (e.type === F.Flush) return out;
    }
    s.discarding = true;
    return out;
  }

  /** The record of a message PostgreSQL refuses unread (malformed): its error is PostgreSQL's, its result too. */
  private refusedUnread(e: MalformedBody, protocol: 'simple' | 'extended'): Stmt {
    const req: StatementRequest = { sql: '', protocol, txStatus: this.s.txStatus };
    const st = new Stmt(req, { action: 'deny', code: e.sqlstate, message: e.message, reason: 'malformed message' });
    st.sentAt = performance.now();
    return st;
  }

  pass(buf: Buffer, start: number, end: number): void {
    this.s.toUpstream(start === 0 && end === buf.length ? buf : buf.subarray(start, end));
  }

  /**
   * A Query/Parse/FunctionCall was skipped unread: over --max-statement-bytes, denied like PostgreSQL's 54000; past the
   * process's budget for statement text, like its 53200 (out of memory), which a retry may not meet.
   */
  dropped(): void {
    const type = this.oversize;
    if (type === 0) return;
    this.oversize = 0;
    const overBudget = this.overBudget;
    this.overBudget = false;
    const kind = type === F.Query ? K_QUERY : type === F.Parse ? K_PARSE : K_FUNCTION;
    const req: StatementRequest = {
      sql: '',
      protocol: kind === K_PARSE ? 'extended' : 'simple',
      txStatus: this.s.txStatus,
    };
    const verdict: Verdict = overBudget
      ? {
          action: 'deny',
          code: '53200',
          message: 'out of memory',
          detail: `pgwarden already holds ${this.budget.held} bytes of statement text for its sessions; this statement would pass its limit of ${this.budget.limit} bytes`,
          hint: 'Retry when fewer large statements are in flight; values sent as Bind parameters or COPY data are streamed, not held.',
          reason: 'statement memory budget exhausted',
        }
      : {
          action: 'deny',
          code: '54000',
          message: `statement is larger than the limit of ${this.maxStatementBytes} bytes set by pgwarden`,
          reason: 'statement too large',
        };
    const out = this.apply(kind, new Stmt(req, verdict), verdict, '');
    if (out !== true) this.s.toUpstream(out);
  }

  private gate(
    kind: number,
    st: Stmt,
    check: () => Verdict | Promise<Verdict>,
    buf: Buffer,
    start: number,
    end: number,
    name = '',
  ): boolean | Buffer {
    let v: Verdict | Promise<Verdict>;
    try {
      v = check();
    } catch (err) {
      v = failClosed(err);
    }
    // Only a Parse can wait for review later (at each Execute): anything else held must be held by the hook.
    if (kind !== K_PARSE && !(v instanceof Promise) && v.action === 'review') v = notHeld(v);
    if (!(v instanceof Promise)) return this.guarded(st, this.apply(kind, st, v, name), buf, start, end);
    return this.hold(v, buf, start, end, (verdict) => {
      if (kind !== K_PARSE && verdict.action === 'review') verdict = notHeld(verdict);
      st.heldMs = verdict.heldMs ?? performance.now() - st.t0;
      return this.guarded(st, this.apply(kind, st, verdict, name), buf, start, end);
    });
  }

  /**
   * Held (a review, a rate limit's wait): nothing more from this client is read until the verdict is in, or the
   * client cancels (57014); then `send` says what goes upstream in place of the message in `buf[start, end)`.
   */
  private hold(
    v: Promise<Verdict>,
    buf: Buffer,
    start: number,
    end: number,
    send: (verdict: Verdict) => true | Buffer,
  ): false {
    this.framer!.suspend();
    this.io.hold();
    const cancelled = new Promise<Verdict>((resolve) => {
      this.cancelHeld = () => resolve(CANCELLED);
    });
    Promise.race([v.catch(failClosed), cancelled]).then((verdict) => {
      this.cancelHeld = undefined;
      // A message ahead of this one failed upstream while it waited: PostgreSQL skips it on its way to the client's
      // Sync, so it must not reach the proxy's maps or queue either (server-relay.ts, error).
      if (this.s.discarding) {
        this.freeReserved();
        this.io.release();
        return;
      }
      const out = send(verdict);
      this.s.toUpstream(out === true ? buf.subarray(start, end) : out);
      this.freeReserved();
      this.io.release();
    });
    return false;
  }

  private apply(kind: number, st: Stmt, v: Verdict, name: string): true | Buffer {
    const s = this.s;
    // The unnamed statement replaces itself; named ones accumulate until the client closes them.
    // Every statement's text is kept until it is replaced or closed, counted over the process too (retained-budget.ts).
    if (kind === K_PARSE && v.action !== 'deny') {
      const adds = s.statements.addsWith(name, st.request.sql);
      if (name !== '' && s.retained.held + adds > MAX_PREPARED_BYTES) v = TOO_MANY_PREPARED;
      else if (!s.retained.budget.fits(adds)) v = retainedFull(s.retained.budget, adds);
    }
    st.verdict = v;
    st.sentAt = performance.now();
    // guardrail maxRowsAffected: a simple Query commits before its CommandComplete, too late to undo, so a BEGIN of
    // the proxy's own goes ahead of it. Whether that BEGIN opens a transaction (wrap), finds the client's open one
    // (its 25001 warning: block) or a failed one (its error: failed) says how to undo the write; the transaction
    // status seen so far cannot, with the client's own BEGIN or COMMIT possibly still in the pipeline ahead of it.
    if (kind === K_QUERY && v.action !== 'deny' && v.maxAffected !== undefined) {
      st.guard = 'wrap';
      s.expect(K_HIDDEN, st, undefined, 'begin', true);
      this.rowsCount(st, 'simple-before');
    }
    s.expect(kind, st);
    this.attachReserved();
    if (v.action === 'deny') {
      st.denied = true;
      if (kind === K_QUERY) return queryMessage(DENIED_SQL);
      if (kind === K_FUNCTION) return functionCallMessage(0); // OID 0 names no function: 42883
      // A failed Parse leaves no statement behind, and PostgreSQL then ignores everything up to Sync.
      s.willChange('S', name);
      s.statements.delete(name);
      s.discarding = true;
      return parseMessage(name, DENIED_SQL);
    }
    if (kind === K_PARSE) {
      s.willChange('S', name);
      s.statements.set(name, {
        request: st.request,
        verdict: v,
        namesFree: !s.touchesNames(st.request.sql, v),
        refs: 0,
        charged: 0,
      });
    } else {
      if (kind === K_QUERY) {
        st.forgotten = s.forgetSqlNames(st.request.sql, v);
        if (st.forgotten !== undefined && s.mayBeProcedural(st.request.sql, v)) s.recheck.push(st.forgotten);
        st.resets = s.restore !== undefined && st.guard === undefined && mayResetSession(st.request.sql, v);
        // What a DO or CALL (this one, or an Execute's since) left is asked at this Query's ReadyForQuery.
        st.recheckNames = s.recheck.length > 0 && st.guard === undefined && !st.resets;
      }
      armTimeout(s, st);
    }
    return true;
  }

  /**
   * A guarded write is on its way (apply set `st.guard`): the client's next messages wait until the server relay has
   * seen its outcome and sent whatever undoes it (RelayState.endGuard), so nothing of the client's can commit it
   * first. Returns what to send upstream: the hidden BEGIN ahead of a `wrap` Query.
   */
  private guarded(st: Stmt, out: true | Buffer, buf: Buffer, start: number, end: number): true | Buffer {
    if (st.resets) return this.heldForReset(st, out, buf, start, end);
    if (st.guard === undefined) {
      if (st.recheckNames) this.heldForNames();
      return out;
    }
    this.io.hold();
    this.s.releaseGuard = () => this.io.release();
    const sent = out === true ? buf.subarray(start, end) : out;
    // Counts of the rows changed go right before and behind the write, in its transaction (no round trip of their
    // own), so that what its triggers, cascades and functions changed is checked too (server-relay.ts, rowsChecked).
    st.countQueued = true;
    const before = st.countBefore!;
    st.countBefore = undefined;
    if (st.guard === 'wrap') return Buffer.concat([BEGIN_QUERY, before, sent, this.rowsCount(st, 'simple')]);
    // PostgreSQL sends an Execute's results only at the next Sync or Flush, and the client's Sync now waits. A simple
    // Query here would commit the batch's implicit transaction, so the counts are a named statement and portal of
    // the proxy's own, closed again at once (execute() expected the one before).
    return Buffer.concat([before, sent, this.rowsCount(st, 'ext'), FLUSH]);
  }

  /**
   * A DISCARD ALL is on its way (session-reset.ts): the client's next messages wait until the server relay has seen
   * it fail, or succeed and sent the restore upstream (RelayState.restoreSession), so that none of them runs as the
   * login role. An Execute's CommandComplete would wait for the client's Sync, which now waits: a Flush asks for it.
   */
  private heldForReset(st: Stmt, out: true | Buffer, buf: Buffer, start: number, end: number): true | Buffer {
    this.io.hold();
    this.s.releaseGuard = () => this.io.release();
    if (st.prepared === undefined) return out;
    return Buffer.concat([out === true ? buf.subarray(start, end) : out, FLUSH]);
  }

  /**
   * The Query or Sync just forwarded is answered with a question of the proxy's own behind it (names-check.ts): the
   * client's next messages wait for its answer, so that they meet the names PostgreSQL has (RelayState.namesReady).
   */
  private heldForNames(): void {
    this.io.hold();
    this.s.releaseRecheck = () => this.io.release();
  }

  /** Expects a count of changed rows for `st` and returns its messages (the `-before` ones go to st.countBefore). */
  private rowsCount(st: Stmt, name: 'simple-before' | 'simple' | 'ext-before' | 'ext'): Buffer {
    const s = this.s;
    const prepare = !s.rowsPrepared;
    s.rowsPrepared = true;
    s.expect(K_ROWS, st, undefined, name, true, prepare ? 2 : 1);
    const run = prepare ? Buffer.concat([ROWS_PREPARE, ROWS_RUN]) : ROWS_RUN;
    const out = name.startsWith('simple') ? Buffer.concat([run, SYNC]) : run;
    if (name.endsWith('-before')) st.countBefore = out;
    return out;
  }

  private execute(buf: Buffer, start: number, end: number): boolean | Buffer {
    const { portal } = decodeExecute(buf, start, end);
    this.s.hooks.clientName?.(nameText(portal));
    return this.executePortal(portal, buf, start, end);
  }

  private executePortal(portal: string, buf: Buffer, start: number, end: number): boolean | Buffer {
    const s = this.s;
    const info = s.portals.get(portal);
    // The proxy describes a portal the client did not (runPortal), and PostgreSQL answers that Describe in place of the
    // Execute when the portal cannot run: gone with its transaction (34000), or in a failed one (25P02). The error is
    // then located in exec_describe_portal_message, not exec_execute_message as the client's own Execute's would be.
    // With a Query, FunctionCall or Sync (or a transaction's end) in flight since the Bind, that may have happened
    // by the time this Execute runs, so it waits for their answers and is then decided with what they left.
    if (info !== undefined && !info.described && s.queue.endsTransactionAfter(info.boundAt ?? 0))
      return this.afterAnswers(buf, start, end, () => this.executePortal(portal, buf, start, end));
    if (info === undefined && s.recheck.length > 0 && s.awaitsNames('P', portal))
      return this.afterNames(buf, start, end, () => this.executePortal(portal, buf, start, end));
    if (info === undefined) {
      const req: StatementRequest = { sql: '', protocol: 'extended', txStatus: s.txStatus };
      const st = new Stmt(req, s.unknownPortal(portal));
      st.denied = true;
      st.portalGone = st.verdict.action === 'deny' && st.verdict.code === '34000';
      st.sentAt = performance.now();
      // The portal's name goes with it: a failed Bind of that portal ahead of it is recorded on it (failExtended).
      s.expect(K_EXECUTE, st, 'P', portal);
      s.discarding = true;
      return executeMessage(DENIED_PORTAL, 0);
    }
    const st = new Stmt(info.request, info.verdict);
    st.prepared = info;
    const check = s.hooks.checkExecute;
    if (check === undefined) return this.runPortal(st, portal, buf, start, end);
    // A statement held for review at each execution asks a reviewer only for an Execute PostgreSQL will run: behind a
    // Bind (or anything) that fails, it skips the Execute on its way to Sync. So the messages ahead are answered first.
    if (info.verdict.action === 'review' && info.executed !== true && s.queue.length > 0)
      return this.afterAnswers(buf, start, end, () => this.checkedExecute(st, info, portal, buf, start, end));
    return this.checkedExecute(st, info, portal, buf, start, end);
  }

  /**
   * Holds the client's input (the message in `buf[start, end)` included) until every message forwarded so far is
   * answered, asking for the answers with a Flush (PostgreSQL keeps ParseComplete, BindComplete and an error in its
   * output buffer until a Flush or Sync: https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-EXT-QUERY).
   * Then `next` decides the message, unless one of them failed: then it is skipped, as PostgreSQL skips it.
   */
  private afterAnswers(buf: Buffer, start: number, end: number, next: () => boolean | Buffer): false {
    const s = this.s;
    this.framer!.suspend();
    this.io.hold();
    s.answeredAhead = () => {
      if (!s.discarding) {
        const out = next();
        if (out !== false) s.toUpstream(out === true ? buf.subarray(start, end) : out);
      }
      this.io.release();
    };
    // Behind the messages passed so far in this read, which the framer still collects into one write.
    this.framer!.flush();
    s.toUpstream(FLUSH);
    return false;
  }

  /**
   * A Bind or Execute the client pipelined behind a DO or CALL, before its Sync, names a statement or portal the DO or
   * CALL made the proxy forget (RelayState.awaitsNames). PostgreSQL would run it if the name is left, so it is decided
   * only after the proxy asked, in the same batch: once everything ahead is answered (the DO or CALL ran), the
   * question goes upstream (RelayState.askNamesNow), then `next` decides the message with the names PostgreSQL has.
   * Should anything ahead fail, PostgreSQL skips the message, and so does the proxy. Should the question itself fail,
   * the message fails with its error (failedForNames).
   */
  private afterNames(
    buf: Buffer,
    start: number,
    end: number,
    next: () => boolean | Buffer,
    statementName?: string,
  ): false {
    const s = this.s;
    this.framer!.suspend();
    this.io.hold();
    const ask = () => {
      if (s.discarding) {
        this.io.release();
        return;
      }
      s.askNamesNow((failure) => {
        if (failure !== undefined) this.failedForNames(failure, statementName);
        else {
          const out = next();
          if (out !== false) s.toUpstream(out === true ? buf.subarray(start, end) : out);
        }
        this.io.release();
      });
    };
    // Behind the messages passed so far in this read, which the framer still collects into one write.
    this.framer!.flush();
    if (s.queue.length === 0) queueMicrotask(ask);
    else {
      s.answeredAhead = ask;
      s.toUpstream(FLUSH);
    }
    return false;
  }

  /**
   * The question asked in the batch failed (a lock_timeout or statement_timeout of the client's, a cancel): PostgreSQL
   * now skips to the client's Sync, so the message waiting for it fails with PostgreSQL's error, as if it had met it,
   * and the rest of the batch is skipped. Nothing is sent to PostgreSQL for it; nothing is in flight ahead of it.
   */
  private failedForNames(error: { code: string; message: string }, statementName: string | undefined): void {
    const s = this.s;
    const req: StatementRequest = { sql: '', protocol: 'extended', txStatus: s.txStatus };
    if (statementName !== undefined) req.statementName = nameText(statementName);
    const st = new Stmt(req, { action: 'deny', ...error, reason: 'names check failed' });
    st.endResult({ rows: 0, bytes: 0, error });
    s.finish(st);
    s.discarding = true;
    s.toClient(errorResponse({ severity: 'ERROR', code: error.code, message: error.message }));
  }

  private checkedExecute(
    st: Stmt,
    info: PreparedInfo,
    portal: string,
    buf: Buffer,
    start: number,
    end: number,
  ): boolean | Buffer {
    const s = this.s;
    const check = s.hooks.checkExecute!;
    // Each Execute is checked again (the audit trail's durability, a rate limit, a reloaded policy, a review per
    // execution): the statement's verdict from its Parse says what it may do, not whether it may run now.
    let v: Verdict | Promise<Verdict>;
    try {
      v = check.call(s.hooks, info.verdict, info.request, info.executed === true);
    } catch (err) {
      v = failClosed(err);
    }
    if (!(v instanceof Promise)) {
      st.verdict = v;
      return this.runPortal(st, portal, buf, start, end);
    }
    return this.hold(v, buf, start, end, (verdict) => {
      st.verdict = verdict;
      st.heldMs = performance.now() - st.t0;
      return this.runPortal(st, portal, buf, start, end);
    });
  }

  /** Sends an Execute of a known portal upstream under `st.verdict`: as it came, or as a denied run. */
  private runPortal(st: Stmt, portal: string, buf: Buffer, start: number, end: number): true | Buffer {
    const s = this.s;
    const info = st.prepared!;
    if (st.verdict.action === 'review') st.verdict = notHeld(st.verdict);
    if (st.verdict.action === 'deny') {
      st.denied = true;
      st.sentAt = performance.now();
      s.expect(K_EXECUTE, st);
      s.discarding = true;
      return executeMessage(DENIED_PORTAL, 0);
    }
    // Rows are planned from the portal's RowDescription: only it has the result formats Bind chose (a statement's
    // Describe says text for all). A client that did not describe the portal would get rows planned from the wrong
    // formats, or not at all, so the proxy asks itself and keeps the answer to itself.
    if (info.executed !== true) {
      info.executed = true;
      // This execution's verdict (an approval, a reloaded policy's) is the portal's from now on: its later Executes
      // go on under it, and rows are planned for it (a plan made for the Parse's verdict is made again).
      if (info.verdict !== st.verdict) {
        info.verdict = st.verdict;
        info.transformer = undefined;
      }
    }
    let out: true | Buffer = true;
    // guardrail maxRowsAffected: the batch's implicit transaction commits only at Sync, which waits (guarded); a count
    // of the rows changed goes ahead of the Execute (guarded() sends it).
    if (st.maxAffected !== undefined) {
      st.guard = 'ext';
      this.rowsCount(st, 'ext-before');
    }
    if (info.statement?.namesFree !== true) st.forgotten = s.forgetSqlNames(info.request.sql, info.verdict);
    if (st.forgotten !== undefined && s.mayBeProcedural(info.request.sql, info.verdict)) s.recheck.push(st.forgotten);
    st.resets = s.restore !== undefined && st.guard === undefined && mayResetSession(info.request.sql, st.verdict);
    // In a transaction already failed, with nothing ahead of it in flight, the Execute can only fail (25P02) or end the
    // transaction (a bound ROLLBACK or COMMIT): no rows to plan for, and the proxy's Describe would take the error
    // from it, with the location of PostgreSQL's Describe code instead of its Execute code.
    if (!info.described && !(s.txStatus === 'E' && s.queue.length === 0)) {
      info.described = true;
      s.expect(K_DESCRIBE, undefined, 'P', portal, true);
      s.queue.tail()!.undo = { map: 'D', name: portal, prev: info, unchecked: undefined };
      out = Buffer.concat([describeMessage('P', portal), buf.subarray(start, end)]);
    }
    st.sentAt = performance.now();
    s.expect(K_EXECUTE, st);
    armTimeout(s, st);
    return this.guarded(st, out, buf, start, end);
  }
}

/**
 * Messages that carry, bind or run a statement, and the entry each gets: one of them malformed is recorded (a Bind is
 * recorded when it fails, as any failed Bind: RelayState.failExtended).
 */
const STATEMENT_KINDS = new Map<number, number>([
  [F.Query, K_QUERY],
  [F.Parse, K_PARSE],
  [F.Bind, K_BIND],
  [F.Execute, K_EXECUTE],
  [F.FunctionCall, K_FUNCTION],
]);

/**
 * What one session's prepared statements and portals may hold in the sidecar (their text, and PREPARED_ENTRY_COST each:
 * at most ~65 000 small ones; retained-budget.ts). Drivers' statement caches hold a few hundred.
 */
export const MAX_PREPARED_BYTES = 32 * 1024 * 1024;
const TOO_MANY_PREPARED: Verdict = {
  action: 'deny',
  code: '54000',
  message: `pgwarden holds at most ${MAX_PREPARED_BYTES} bytes of prepared statements per session`,
  hint: 'Close prepared statements that are no longer needed (Close, DEALLOCATE).',
  reason: 'too many prepared statements',
};
/**
 * The process's budget for kept statements is full: 53200, the class PostgreSQL gives what it cannot allocate (a
 * retry may succeed once other sessions close statements), rather than 54000, a limit of the statement itself.
 */
function retainedFull(budget: RetainedBudget, adds: number): Verdict {
  return {
    action: 'deny',
    code: '53200',
    message: 'out of memory',
    detail: `pgwarden keeps ${budget.held} bytes of prepared statements for its sessions; this one (${adds} bytes) would pass its limit of ${budget.limit} bytes`,
    hint: 'Close prepared statements that are no longer needed (Close, DEALLOCATE), or raise --max-retained-statement-bytes.',
    reason: 'retained statement budget exhausted',
  };
}
const PARAMS_NOT_KEPT = "(the values are not shown: pgwarden's budget for kept statements is full)";
const PENDING: Verdict = { action: 'deny', code: '42501', message: 'pending' };
const UNTRACKED_NAME: Verdict = {
  action: 'deny',
  code: '42602',
  message:
    'pgwarden: statement name not allowed: pgwarden tracks only ASCII statement names (PostgreSQL converts other names to the server encoding, where two can become one)',
  hint: 'Name the statement in ASCII.',
  reason: 'untracked statement name',
};
const CANCELLED: Verdict = {
  action: 'deny',
  code: '57014',
  message: 'canceling statement due to user request',
  reason: 'cancelled by the client while held',
};

/** A `review` verdict where nothing holds it (anything but a Parse, or no checkExecute): it must not run. */
function notHeld(v: Verdict): Verdict {
  return {
    action: 'deny',
    code: '42501',
    message: 'pgwarden: statement denied: it needs review, and nothing could hold it for approval',
    reason: 'review not held',
    rule: v.rule,
    policy: v.policy,
    statements: v.statements,
  };
}

/** A hook that throws or rejects denies: security decisions fail closed. */
function failClosed(err: unknown): Verdict {
  return {
    action: 'deny',
    code: '42501',
    message: 'statement denied by pgwarden: the policy check failed',
    reason: `check failed: ${err instanceof Error ? err.message : String(err)}`,
  };
}

function armTimeout(s: RelayState, st: Stmt): void {
  const ms = st.verdict.action === 'deny' ? undefined : st.verdict.timeoutMs;
  if (ms === undefined || ms <= 0) return;
  const fire = () => {
    if (st.settled) return;
    st.timedOut = true;
    // Not yet running, or other work forwarded behind it: retry shortly rather than cancel something else. After
    // a cancel, repeat it while the statement lives: one that reached the backend before the query did is ignored.
    st.timer = setTimeout(fire, s.cancel(st) ? 1000 : 50);
    st.timer.unref();
  };
  st.timer = setTimeout(fire, ms);
  st.timer.unref();
}
