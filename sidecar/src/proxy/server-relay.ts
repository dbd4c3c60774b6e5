import {
  decodeCString,
  decodeErrorFields,
  decodeNotification,
  decodeParameterStatus,
  decodeRowDescription,
  encodeErrorFields,
  errorResponse,
  message,
  notificationResponse,
  parameterStatus,
} from '../protocol/backend-messages.js';
import { B, LARGE_MESSAGE_LIMIT } from '../protocol/codes.js';
import { DROP, type Framer, type FramerHandler, NEED_MORE, PASS, WHOLE } from '../protocol/framer.js';
import { copyFailMessage, executeMessage, queryMessage, syncMessage } from '../protocol/frontend-messages.js';
import { DENIED_PORTAL, DENIED_SQL } from './client-relay.js';
import type { StatementResult } from './hooks.js';
import {
  type Entry,
  K_BIND,
  K_CLOSE,
  K_EXECUTE,
  K_FUNCTION,
  K_HIDDEN,
  K_NAMES,
  K_PARSE,
  K_QUERY,
  K_RESTORE,
  K_ROWS,
  K_SYNC,
  type Stmt,
} from './pipeline.js';
import type { RelayState } from './relay-state.js';
import { SessionResetError } from './session-reset.js';
import { notStarted } from './sql-names.js';
import { UnsafeSettingError, unsafeSetting } from './unsafe-settings.js';

/**
 * Upstream → client. Untouched messages leave as the byte spans they arrived in; only the messages the proxy must
 * read (RowDescription, CommandComplete, ErrorResponse, ReadyForQuery, ...) or rewrite (masked DataRows, scrubbed
 * text, replaced errors) are handled whole.
 */
export class ServerRelay implements FramerHandler {
  /** The framer feeding this relay (for counted DataRow runs). */
  framer: Framer | undefined;
  private readonly s: RelayState;
  private countedFor: Stmt | undefined;
  /** header() chose to hold the CopyData it answered WHOLE for (copyRow). */
  private holdCopy = false;

  constructor(state: RelayState) {
    this.s = state;
    state.onCurChange = () => this.updateFast();
  }

  limit(): number {
    return LARGE_MESSAGE_LIMIT;
  }

  header(type: number, length: number, buf: Buffer, pos: number, avail: number): number {
    const d = this.headerOf(type, length, buf, pos, avail);
    // Behind a capped Execute (RelayState.hide) answers are tracked (above) but not passed to the client.
    return d === PASS && this.s.hide && type !== B.ReadyForQuery ? DROP : d;
  }

  private headerOf(type: number, length: number, buf: Buffer, pos: number, avail: number): number {
    const s = this.s;
    // Counted rows belong to the statement they streamed for: settle them before anything can change it.
    if (this.countedFor !== undefined && type !== B.DataRow) this.sync();
    const kind = s.queue.peek()?.kind;
    if (kind === K_RESTORE) return restoreHeader(type);
    if (kind === K_NAMES) {
      if (type === B.CloseComplete && s.queue.peek()!.name === 'batch') s.namesClosed();
      return namesHeader(type);
    }
    if (s.swallow && type !== B.ReadyForQuery) return this.swallowed(type);
    if (kind === K_ROWS) return rowsHeader(type);
    switch (type) {
      case B.DataRow: {
        const st = s.cur;
        if (st === undefined) return PASS;
        if (st.capped) return DROP;
        const max = st.maxRows;
        if (max !== undefined && st.rows + st.rowBase >= max) {
          // Verdict.maxRows: stop here, cancel the rest upstream (when that is safe; otherwise the rest is read and
          // dropped) and answer with an error when the result ends.
          st.capped = true;
          s.cancel(st);
          return DROP;
        }
        st.rows++;
        st.bytes += length + 1;
        return st.transformer === undefined ? PASS : WHOLE;
      }
      case B.CopyData: {
        const st = s.cur;
        if (st !== undefined && st.maxRows !== undefined) {
          const d = this.copyRow(st, st.maxRows, length, buf, pos, avail);
          if (d !== PASS) return d;
        }
        return s.scrub === undefined ? PASS : WHOLE;
      }
      case B.CopyOutResponse: {
        const st = s.cur;
        if (st === undefined || st.maxRows === undefined) return PASS;
        if (avail < 6) return NEED_MORE;
        st.copyFormat = buf[pos + 5];
        return PASS;
      }
      case B.CopyDone:
        if (s.cur?.heldCopy === undefined) return PASS;
        s.cur.copyDoneHeld = true;
        return DROP;
      case B.ParseComplete:
        s.complete(K_PARSE);
        return PASS;
      case B.BindComplete:
        s.complete(K_BIND);
        return PASS;
      case B.CloseComplete:
        s.complete(K_CLOSE);
        return PASS;
      case B.NoData:
        return s.noData() ? PASS : DROP;
      case B.CopyInResponse:
        // Behind a capped Execute the client, told of an error, sends no data: the proxy ends the COPY itself.
        if (s.hide) {
          // PostgreSQL ignores a Sync during COPY IN: one the client already sent was taken by this COPY, and the
          // error after CopyFail waits for another.
          const fail = copyFailMessage('pgwarden: an earlier statement of the batch exceeded its row limit');
          s.toUpstream(s.queue.hasSync() ? Buffer.concat([fail, syncMessage()]) : fail);
          return PASS;
        }
        s.copyIn();
        return PASS;
      case B.ParameterDescription:
      case B.FunctionCallResponse:
      case B.CopyBothResponse:
        return PASS;
      case B.ParameterStatus:
        return WHOLE; // rare (a SET of a reported setting); client_encoding and standard_conforming_strings are checked
      case B.PortalSuspended: {
        const head = s.queue.peek();
        if (head?.kind === K_EXECUTE && head.stmt && !head.stmt.capped) {
          const st = head.stmt;
          st.endResult({ rows: st.rows, bytes: st.bytes });
          // A row-limited Execute of a guarded write: its tag (and the tag's check) comes with the portal's last
          // Execute, but what this one changed is counted now (a DML statement with RETURNING runs whole at its
          // first Execute), and the client goes on once that is settled.
          if (st.countQueued) st.awaitCount = true;
          s.complete(K_EXECUTE);
          if (st.guard !== undefined && !st.awaitCount) s.endGuard();
          return PASS;
        }
        return head?.stmt?.capped ? WHOLE : PASS;
      }
      case B.NoticeResponse:
      case B.NotificationResponse:
        return WHOLE; // rare; its process id may need mapping (handle)
      default:
        return WHOLE;
    }
  }

  /**
   * guardrails.maxRowsReturned for COPY … TO STDOUT, counted as PostgreSQL's `COPY n` tag counts rows (copyto.c):
   * one CopyData per row, but a binary COPY's signature comes with its first row (or with the trailer when there is
   * none) and its trailer (int16 -1) is no row; a text or CSV COPY's HEADER line is a CopyData of its own that nothing
   * marks, so the one CopyData past the limit is held until the tag says whether it was a row (releaseCopy). Returns
   * PASS (counted), DROP (over the limit: the statement is capped), WHOLE (hold it) or NEED_MORE.
   */
  private copyRow(st: Stmt, max: number, length: number, buf: Buffer, pos: number, avail: number): number {
    if (st.capped) return DROP;
    if (st.copyFormat === 1 && (length === 6 || length === 25)) {
      if (avail <= length) return NEED_MORE;
      if (isBinaryCopyTrailer(buf, pos, length)) return PASS;
    }
    const seen = st.rows + st.rowBase;
    if (seen < max || (seen === max && st.copyFormat === 0 && st.heldCopy === undefined)) {
      st.rows++;
      st.bytes += length + 1;
      if (seen < max) return PASS;
      this.holdCopy = true;
      return WHOLE;
    }
    // Over the limit whether or not there was a header: the held CopyData may be a row past it, so it goes too.
    st.capped = true;
    st.heldCopy = undefined;
    this.s.cancel(st);
    return DROP;
  }

  /**
   * The tag of a COPY with a CopyData held (copyRow): `rows` within the limit means a HEADER line took a place, and
   * the held CopyData (and CopyDone) go on; over it, the statement is capped (the CopyDone goes on, as when capped
   * at once).
   */
  private releaseCopy(st: Stmt, rows: number): void {
    const held = st.heldCopy!;
    st.heldCopy = undefined;
    if (rows + st.rowBase <= st.maxRows!) this.toClient(held);
    else st.capped = true;
    if (st.copyDoneHeld) {
      st.copyDoneHeld = false;
      this.toClient(COPY_DONE);
    }
  }

  whole(type: number, buf: Buffer, start: number, end: number): boolean | Buffer {
    const hidden = this.s.hide && type !== B.ReadyForQuery;
    const out = this.handle(type, buf, start, end);
    if (
      type === B.RowDescription ||
      type === B.CommandComplete ||
      type === B.EmptyQueryResponse ||
      type === B.PortalSuspended
    ) {
      this.updateFast();
    }
    return hidden ? false : out;
  }

  /**
   * Rows of a result nobody inspects (no row plan, no maxRows) are passed by the framer without a call per row and
   * only counted; any other result gets the per-row header() above.
   */
  updateFast(): void {
    this.sync();
    const st = this.s.cur;
    const f = this.framer;
    if (f === undefined) return;
    // Behind a capped Execute (hide) rows must reach header() to be dropped: a counted pass goes to the client.
    const hidden = this.s.swallow || this.s.hide;
    if (st !== undefined && !hidden && !st.capped && st.transformer === undefined && st.maxRows === undefined) {
      f.countType = B.DataRow;
      this.countedFor = st;
    } else {
      f.countType = -1;
      this.countedFor = undefined;
    }
  }

  private sync(): void {
    const f = this.framer;
    const st = this.countedFor;
    if (f === undefined || st === undefined) return;
    const [rows, bytes] = f.takeCounted();
    st.rows += rows;
    st.bytes += bytes;
  }

  /**
   * What PostgreSQL sends after an error the client already got from the proxy (a capped or guarded statement) up to
   * ReadyForQuery is dropped. A Query that made the proxy forget names is still followed: the statements behind the
   * capped one ran upstream, and their tags, or the error that stopped them, say which names are gone (ranBehind).
   */
  private swallowed(type: number): number {
    if (type !== B.CommandComplete && type !== B.ErrorResponse) return DROP;
    const head = this.s.queue.peek();
    return head?.kind === K_QUERY && head.stmt?.forgotten !== undefined ? WHOLE : DROP;
  }

  private ranBehind(type: number, buf: Buffer, start: number, end: number): false {
    const st = this.s.queue.peek()!.stmt!;
    const f = st.forgotten!;
    if (type === B.CommandComplete) f.ran.push(decodeCString(buf, start, end));
    else {
      this.s.restoreUnrun(f, st.request.sql, st.verdict.statements);
      st.forgotten = undefined;
    }
    return false;
  }

  private handle(type: number, buf: Buffer, start: number, end: number): boolean | Buffer {
    const s = this.s;
    const head = s.queue.peek();
    if (s.swallow && type !== B.ReadyForQuery && this.swallowed(type) === WHOLE)
      return this.ranBehind(type, buf, start, end);
    if (head?.kind === K_ROWS && type !== B.ReadyForQuery && type !== B.ParameterStatus)
      return this.rows(head, type, buf, start, end);
    if (head?.kind === K_RESTORE && type === B.ErrorResponse) throw restoreFailed(buf, start, end);
    if (head?.kind === K_NAMES && (type === B.DataRow || type === B.ErrorResponse)) {
      // PostgreSQL ends the session after a FATAL (pg_terminate_backend while the question waits on a lock): the
      // client is told as it would be without the question, by PostgreSQL's own words, before the connection closes.
      if (type === B.DataRow) {
        s.namesAnswer(buf.subarray(start + 5, end));
        return false;
      }
      const f = decodeErrorFields(buf, start, end);
      if (isSessionEnding(f)) {
        s.upstreamFatal = f.get('C') ?? '';
        return true;
      }
      s.namesAnswer(undefined, { code: f.get('C') ?? 'XX000', message: f.get('M') ?? 'unknown error' });
      return false;
    }
    switch (type) {
      case B.DataRow: {
        const t = s.cur!.transformer!;
        if (t.span !== undefined) return t.span(buf, start, end) ?? true;
        const body = buf.subarray(start + 5, end);
        const out = t(body);
        return out === body ? true : message(B.DataRow, out);
      }
      case B.ReadyForQuery:
        return this.readyForQuery(String.fromCharCode(buf[start + 5]) as 'I' | 'T' | 'E');
      case B.RowDescription:
        return s.rowDescription(decodeRowDescription(buf, start, end));
      case B.CommandComplete:
      case B.EmptyQueryResponse:
        return this.commandComplete(type === B.CommandComplete ? decodeCString(buf, start, end) : undefined);
      case B.PortalSuspended:
        return this.commandComplete(undefined);
      case B.ErrorResponse:
        return this.error(buf, start, end);
      case B.ParameterStatus: {
        const [name, value] = decodeParameterStatus(buf, start, end);
        const unsafe = unsafeSetting(name, value);
        if (unsafe !== undefined) throw new UnsafeSettingError(unsafe);
        // From a DISCARD ALL and its restore: what the client gets is the difference they make (flushParams).
        if (head?.kind === K_RESTORE || head?.stmt?.restored) {
          s.pendingParams.set(name, value);
          return false;
        }
        s.pendingParams.delete(name);
        s.clientParams.set(name, value);
        return true;
      }
      case B.NoticeResponse: {
        const head = s.queue.peek();
        if (head?.kind === K_HIDDEN && head.name === 'begin') {
          // WARNING 25001 "there is already a transaction in progress": the client's own, to be failed if need be.
          if (decodeErrorFields(buf, start, end).get('C') === '25001' && head.stmt) head.stmt.guard = 'block';
          return false;
        }
        return this.scrubFields(buf, start, end);
      }
      case B.NotificationResponse: {
        const n = decodeNotification(buf, start, end);
        const payload = s.scrub === undefined ? n.payload : s.scrub(n.payload);
        // Self-notifications carry the upstream pid; clients compare it with the BackendKeyData they got (ours).
        const pid = n.pid === s.upstreamPid && s.upstreamPid !== 0 ? s.clientPid : n.pid;
        if (payload !== n.payload) return notificationResponse(pid, n.channel, payload);
        if (pid === n.pid) return true;
        // Only the pid changes: the channel and payload keep their bytes (they are in client_encoding, maybe not UTF-8).
        const out = Buffer.from(buf.subarray(start, end));
        out.writeInt32BE(pid, 5);
        return out;
      }
      case B.CopyData: {
        let out: boolean | Buffer = true;
        if (s.scrub !== undefined) {
          const text = buf.toString('utf8', start + 5, end);
          const scrubbed = s.scrub(text);
          if (scrubbed !== text) out = message(B.CopyData, Buffer.from(scrubbed, 'utf8'));
        }
        if (!this.holdCopy) return out;
        this.holdCopy = false;
        s.cur!.heldCopy = out === true ? Buffer.from(buf.subarray(start, end)) : out;
        return false;
      }
      default:
        return true;
    }
  }

  pass(buf: Buffer, start: number, end: number): void {
    const held = this.s.heldReply;
    // Behind a held error the bytes wait too; the read buffer they are in is reused, so they are copied.
    if (held !== undefined) held.push(Buffer.from(buf.subarray(start, end)));
    else this.s.toClient(start === 0 && end === buf.length ? buf : buf.subarray(start, end));
  }

  private commandComplete(tag: string | undefined): boolean | Buffer {
    const s = this.s;
    const head = s.queue.peek();
    if (head?.kind === K_HIDDEN) return false; // the proxy's own BEGIN / COMMIT / ROLLBACK
    if (head?.kind === K_QUERY) head.stmt?.forgotten?.ran.push(tag);
    if (tag === 'DISCARD ALL' && s.restore !== undefined) {
      // Not held for (ClientRelay.heldForReset): the client's next messages may already run as the login role.
      if (head?.stmt?.resets !== true)
        throw new SessionResetError('XX000', 'pgwarden did not expect this DISCARD ALL and cannot restore the session');
      head.stmt.restored = true;
      s.restoreSession(head.kind === K_QUERY);
    }
    // The client dropped every prepared statement, the proxy's count among them (guardrail maxRowsAffected).
    if (tag !== undefined && tag.charCodeAt(0) === 68 && (tag === 'DISCARD ALL' || tag === 'DEALLOCATE ALL'))
      s.rowsPrepared = false;
    // A transaction ended inside a Query or batch: the portals bound before it are gone. ROLLBACK TO SAVEPOINT has
    // the same tag and keeps those made before the savepoint: with a TO anywhere in the text, nothing is forgotten
    // here (the idle ReadyForQuery at the end forgets them in any case).
    if (
      tag !== undefined &&
      head !== undefined &&
      (head.kind === K_QUERY || head.kind === K_EXECUTE) &&
      (tag === 'COMMIT' ||
        tag === 'PREPARE TRANSACTION' ||
        (tag === 'ROLLBACK' && !ROLLBACK_TO.test(head.stmt?.request.sql ?? '')))
    )
      s.endTransaction(head.seq);
    const st = head?.stmt;
    if (!head || !st || (head.kind !== K_QUERY && head.kind !== K_EXECUTE)) return true;
    let out: boolean | Buffer = true;
    let result: StatementResult;
    const rows = rowsOf(tag, st.rows);
    if (st.heldCopy !== undefined) this.releaseCopy(st, rows);
    // Only the writes' tags count (a multi-statement Query may also read).
    const max = st.guard === undefined || !isWriteTag(tag) ? undefined : st.maxAffected;
    const capped = st.capped; // endResult starts the next result afresh
    if (capped) {
      // The statement finished before the cancel landed: the client still gets the limit error, not the tag.
      out = capError(st);
      result = { rows: st.rows, bytes: st.bytes, error: { code: '54000', message: limitMessage(st) } };
    } else if (max !== undefined && rows > max && !st.overLimit) {
      // guardrail maxRowsAffected: the change is not committed yet (ClientRelay.guarded): the client gets 54000 and
      // the proxy undoes it (below for an Execute, at ReadyForQuery for a Query).
      st.overLimit = true;
      const message = affectedMessage(tag!, rows, max);
      out = errorResponse({
        severity: 'ERROR',
        code: '54000',
        message,
        hint: `Narrow the WHERE clause, or change at most ${max} rows per statement.`,
      });
      result = { tag, rows, bytes: st.bytes, error: { code: '54000', message } };
    } else {
      result = { tag, rows, bytes: st.bytes };
    }
    st.endResult(result);
    if (out !== true && capped && head.kind === K_EXECUTE) {
      // The Execute ended without an error upstream: no cancel was sent (later messages of the batch are upstream), or
      // it came too late (the backend was idle by then and ignored it). The cap is the proxy's: PostgreSQL goes on
      // with the batch. What of it is upstream is tracked, not skipped (a Bind that happened upstream, a write that
      // is counted and audited), and hidden from the client, which saw an error; what it sends before its Sync is
      // skipped, as PostgreSQL would after one (taken as skipped, a statement sent after the error ran unaudited).
      s.complete(K_EXECUTE);
      s.hide = true;
      if (!s.queue.hasSync()) s.discarding = true;
    } else if (out !== true) {
      // Like PostgreSQL after an error: nothing more reaches the client until ReadyForQuery.
      if (head.kind === K_EXECUTE) s.failExtended();
      s.swallow = true;
      if (st.overLimit && head.kind === K_EXECUTE) {
        // An Execute of a portal that cannot exist fails the batch before the client's Sync (held until now), so the
        // batch's transaction rolls back; the client's messages up to that Sync are skipped, as after any error.
        s.toUpstream(executeMessage(DENIED_PORTAL, 0));
        s.discarding = true;
        s.endGuard();
      }
    } else if (head.kind === K_EXECUTE) {
      // Within its tag's cap (or a write its tag does not count: a data-modifying CTE, EXPLAIN ANALYZE): the count
      // behind it (K_ROWS) settles it, and only then may the client go on.
      if (st.countQueued) st.awaitCount = true;
      s.complete(K_EXECUTE);
      if (st.guard !== undefined && !st.awaitCount) s.endGuard();
    }
    return out;
  }

  /**
   * Writes a message of the proxy's own to the client, behind the responses passed before it. Behind a capped Execute
   * (hide) the client hears nothing of the statements that still run: a COPY's held CopyData, a count's error.
   */
  private toClient(b: Buffer): void {
    if (this.s.hide) return;
    this.framer?.flush();
    const held = this.s.heldReply;
    if (held !== undefined) held.push(b);
    else this.s.toClient(b);
  }

  /** The count just read (value, or the upstream's error), made ready for the next one. */
  private takeCount(): { value: number | null | undefined; error: { code: string; message: string } | undefined } {
    const s = this.s;
    const out = { value: s.rowsValue, error: s.rowsError };
    s.rowsValue = undefined;
    s.rowsError = undefined;
    s.rowsCloses = 0;
    return out;
  }

  /** A response to the proxy's count of changed rows (K_ROWS): read, never forwarded. */
  private rows(head: Entry, type: number, buf: Buffer, start: number, end: number): false {
    const s = this.s;
    if (type === B.DataRow) {
      // One column: int16 count, int32 length (-1: NULL), the text of an int8.
      const len = buf.readInt32BE(start + 7);
      s.rowsValue = len < 0 ? null : Number(buf.toString('latin1', start + 11, start + 11 + len));
    } else if (type === B.ErrorResponse) {
      const f = decodeErrorFields(buf, start, end);
      s.rowsError = { code: f.get('C') ?? 'XX000', message: f.get('M') ?? '' };
      s.rowsPrepared = false; // whatever failed, the next count prepares the statement anew
      // An error ends an `ext` count: the upstream skips the rest of the batch (its Closes too) up to the Sync.
      if (head.name === 'ext') this.rowsEnd(head);
      else if (head.name === 'ext-before') this.rowsBeforeFailed(head);
    } else if (type === B.CloseComplete && ++s.rowsCloses === head.closes) {
      // A simple count ends at its Sync's ReadyForQuery instead.
      if (head.name === 'ext') this.rowsEnd(head);
      else if (head.name === 'ext-before') this.rowsBefore(head);
    }
    return false;
  }

  /** The count before a guarded write came (`ext-before` complete, `simple-before` at its ReadyForQuery). */
  private rowsBefore(head: Entry): void {
    const s = this.s;
    s.queue.shift();
    const { value, error } = this.takeCount();
    head.stmt!.rowsBefore = error !== undefined || value === undefined ? undefined : (value ?? 0);
    s.advance();
  }

  /**
   * The count before a guarded Execute failed, and with it the batch: the write and the count behind it are skipped
   * upstream. The client learns why from an error of the write's own; nothing of the batch commits.
   */
  private rowsBeforeFailed(head: Entry): void {
    const s = this.s;
    const st = head.stmt!;
    const f = this.takeCount().error!;
    s.queue.shift();
    this.toClient(countError(f));
    st.endResult({ rows: 0, bytes: 0, error: { code: f.code, message: countErrorMessage(f) } });
    s.failExtended();
    if (s.queue.peek()?.kind !== K_SYNC) s.discarding = true;
    s.endGuard();
  }

  /**
   * The `ext` count is complete (its last CloseComplete) or failed: the write it follows is settled and the client's
   * held messages go on. Over the cap, the batch is made to fail before the client's Sync, as for a tag over it.
   */
  private rowsEnd(head: Entry): void {
    const s = this.s;
    s.queue.shift();
    const failed = s.rowsError !== undefined;
    this.rowsChecked(head.stmt!);
    if (failed || head.stmt!.overLimit) {
      // The batch fails upstream (by the count's error, or by an Execute of a portal that cannot exist): the proxy's
      // expectations and the client's messages up to its Sync are skipped as the upstream skips them. The client's
      // Sync may be on its way already only after a row-limited Execute (PortalSuspended released it).
      s.failExtended();
      if (!failed) {
        s.swallow = true;
        s.toUpstream(executeMessage(DENIED_PORTAL, 0));
      }
      if (s.queue.peek()?.kind !== K_SYNC) s.discarding = true;
    } else {
      s.advance();
    }
    s.endGuard();
  }

  /**
   * guardrail maxRowsAffected, second check: the rows changed between the counts before and behind the write, less
   * what the Query's other writes reported, are what this write changed,
   * counting its triggers, cascades and functions. Over the cap, or when the count failed, the client gets an
   * ErrorResponse after the write's CommandComplete, as PostgreSQL sends a deferred constraint's error at commit,
   * and the caller undoes the change. Records the write.
   */
  private rowsChecked(st: Stmt): void {
    const s = this.s;
    const { value, error: failed } = this.takeCount();
    // The write failed, or its tag was already over the cap: nothing to check. A failed count after a successful
    // write still fails it (below); after a failed one it failed for the same reason.
    if (!st.awaitCount) {
      if (failed !== undefined && st.guard === 'ext') this.toClient(countError(failed));
      return;
    }
    st.awaitCount = false;
    let error: { code: string; message: string } | undefined;
    let out: Buffer | undefined;
    const unusable = countFailure(st, value, failed);
    if (unusable !== undefined) {
      out = countError(unusable);
      error = { code: unusable.code, message: countErrorMessage(unusable) };
    } else {
      const delta = (value ?? 0) - st.rowsBefore!;
      let sum = 0;
      let top = 0;
      let verb = '';
      for (const r of st.results) {
        if (!isWriteTag(r.tag)) continue;
        sum += r.rows;
        if (r.rows >= top) {
          top = r.rows;
          verb = r.tag!.split(' ')[0];
        }
      }
      const counted = Math.max(0, delta - (sum - top));
      // The count covers the whole Query: the audit event of its last result says what it changed.
      const last = st.results.at(-1);
      if (last !== undefined) last.changed = Math.max(0, delta);
      const max = st.maxAffected!;
      if (counted > max) {
        const message = indirectMessage(verb, counted, top, max);
        out = errorResponse({
          severity: 'ERROR',
          code: '54000',
          message,
          hint: `Change at most ${max} rows per statement, counting what its triggers and foreign-key cascades change.`,
        });
        error = { code: '54000', message };
      }
    }
    if (out !== undefined) {
      st.overLimit = true;
      this.toClient(out);
      const last = st.results.at(-1);
      if (last !== undefined && last.error === undefined) last.error = error;
      else st.results.push({ rows: 0, bytes: 0, error });
    }
    s.finish(st);
  }

  /**
   * ReadyForQuery ends a Query or a batch. After a guarded write (guardrail maxRowsAffected) the proxy ends what it
   * opened: COMMIT, or ROLLBACK when the write went over the cap or failed (`wrap`), or fails the client's own
   * transaction (`block`), and the client sees the ReadyForQuery of that instead.
   */
  private readyForQuery(status: 'I' | 'T' | 'E'): boolean {
    const hid = this.s.hide;
    const forward = this.readyForQueryOf(status);
    // The batch behind a capped Execute ended: the client, told of an error, gets this ReadyForQuery.
    if (hid && forward) this.s.hide = false;
    if (forward && this.s.heldReply !== undefined) {
      // The failed statement is recorded by now; the session settles it before the client gets these bytes. The
      // messages passed since the error join the held reply first (flush), in their order.
      this.framer?.flush();
      const held = this.s.heldReply;
      this.s.heldReply = undefined;
      this.toClient(held.length === 1 ? held[0] : Buffer.concat(held));
    }
    if (forward && this.s.pendingParams.size > 0) this.flushParams();
    return forward;
  }

  /** ParameterStatus values a DISCARD ALL and its restore left changed, as PostgreSQL reports them: before ReadyForQuery. */
  private flushParams(): void {
    const s = this.s;
    for (const [name, value] of s.pendingParams) {
      if (s.clientParams.get(name) === value) continue;
      s.clientParams.set(name, value);
      this.toClient(parameterStatus(name, value));
    }
    s.pendingParams.clear();
  }

  private readyForQueryOf(status: 'I' | 'T' | 'E'): boolean {
    const s = this.s;
    const head = s.queue.peek();
    if (head?.kind === K_RESTORE) {
      s.queue.shift();
      s.advance();
      if (head.name === '') return false;
      s.endGuard();
      if (head.name !== 'reply') return false;
      s.txStatus = status;
      return true;
    }
    if (head?.kind === K_NAMES) {
      s.namesReady(status);
      return false;
    }
    if (head?.kind === K_ROWS && head.name === 'simple-before') {
      this.rowsBefore(head);
      return false;
    }
    if (head?.kind === K_ROWS) {
      // The ReadyForQuery of the count behind a guarded Query: now the write is settled, as below for one without.
      s.queue.shift();
      const st = head.stmt!;
      this.rowsChecked(st);
      s.txStatus = status;
      s.swallow = false;
      s.advance();
      return this.endGuarded(st, st.writeStatus);
    }
    if (head?.kind === K_HIDDEN) {
      s.queue.shift();
      if (head.name !== 'begin') {
        s.txStatus = status;
        s.swallow = false;
      }
      s.advance();
      return head.name !== 'begin';
    }
    const st = head?.kind === K_QUERY ? head.stmt : undefined;
    if (st?.resets) {
      s.readyForQuery(status);
      // Succeeded: the client's ReadyForQuery is the restore's last (K_RESTORE 'reply'), which releases it.
      if (st.restored) return false;
      s.endGuard();
      return true;
    }
    if (st?.countQueued) {
      // The count (K_ROWS) comes next: its ReadyForQuery, not this one, reaches the client.
      st.writeStatus = status;
      if (status === 'T' && !st.overLimit) st.awaitCount = true;
      s.readyForQuery(status);
      return false;
    }
    s.readyForQuery(status);
    return this.endGuarded(st, status);
  }

  /** What ends a guarded Query (`st.guard`), given the status its own ReadyForQuery had; true: forward this one. */
  private endGuarded(st: Stmt | undefined, status: 'I' | 'T' | 'E'): boolean {
    const s = this.s;
    if (st?.guard === 'wrap') {
      const undo = status !== 'T' || st.overLimit;
      s.expect(K_HIDDEN, undefined, undefined, undo ? 'quiet' : 'commit', true);
      s.toUpstream(queryMessage(undo ? 'ROLLBACK' : 'COMMIT'));
      s.txStatus = 'I'; // what the client will see: the next statement runs outside a transaction
      s.endGuard();
      return false;
    }
    if (st?.guard === 'failed') s.endGuard();
    if (st?.guard === 'block') {
      if (st.overLimit) {
        // The client got an error inside its transaction: fail that transaction upstream too, so that its changes,
        // this write's included, can only be rolled back.
        s.expect(K_HIDDEN, undefined, undefined, 'quiet', true);
        s.toUpstream(queryMessage(DENIED_SQL));
        s.txStatus = 'E';
        s.endGuard();
        return false;
      }
      s.endGuard();
    }
    return true;
  }

  private error(buf: Buffer, start: number, end: number): boolean | Buffer {
    const s = this.s;
    // An error ends a COPY IN at once: PostgreSQL reads the client's next Syncs as Syncs again. Those sent among the
    // data before the failure are taken as read by the COPY (docs/protocol.md, Known limits).
    s.copyInEnd = 0;
    const head = s.queue.peek();
    if (head?.kind === K_ROWS) return this.rows(head, B.ErrorResponse, buf, start, end);
    // The proxy's own statements: only a COMMIT's error (a deferred constraint) is the client's to see. A BEGIN that
    // fails met the client's failed transaction (25P02): the write will fail the same way, nothing to undo.
    if (head?.kind === K_HIDDEN) {
      if (head.name === 'begin' && head.stmt) head.stmt.guard = 'failed';
      return head.name === 'commit' ? this.scrubFields(buf, start, end) : false;
    }
    const st = head?.stmt;
    let out: boolean | Buffer = true;
    let code = '';
    let msg = '';
    // PostgreSQL's error for the stand-in portal (DENIED_PORTAL) is the one it would give for the client's: the same
    // fields from the same code (postgres.c exec_execute_message), but for the name in its message.
    const gone = st?.portalGone ? decodeErrorFields(buf, start, end) : undefined;
    if (gone?.get('C') === '34000' && st!.verdict.action === 'deny') {
      const f = gone;
      f.set('M', st!.verdict.message);
      out = encodeErrorFields(B.ErrorResponse, f);
      code = '34000';
      msg = f.get('M')!;
    } else if (st?.denied && st.verdict.action === 'deny') {
      const v = st.verdict;
      out = errorResponse({
        severity: 'ERROR',
        code: v.code,
        message: v.message,
        detail: v.detail,
        hint: v.hint,
        position: v.position,
      });
      code = v.code;
      msg = v.message;
    } else if (st?.capped) {
      out = capError(st);
      code = '54000';
      msg = limitMessage(st);
    } else {
      const f = decodeErrorFields(buf, start, end);
      code = f.get('C') ?? '';
      msg = f.get('M') ?? '';
      if (isSessionEnding(f)) s.upstreamFatal = code;
      if (st?.timedOut && code === '57014') {
        msg = `canceling statement due to statement timeout of ${timeoutOf(st)} ms set by pgwarden`;
        f.set('M', msg);
        out = encodeErrorFields(B.ErrorResponse, f);
      } else if (s.scrub !== undefined) {
        out = this.scrubFields(buf, start, end);
      }
    }
    if (!head) return out;
    // Refused by PostgreSQL before it started (in a failed transaction): procedural code too removed nothing.
    const started = code !== '25P02' || st?.forgotten === undefined || !notStarted(decodeErrorFields(buf, start, end));
    // Nor is there anything to ask PostgreSQL about it (each DO sent into a failed transaction would add a list).
    if (!started) s.unnoteRecheck(st!.forgotten!);
    // The statement of a Query that failed, and those behind it, left PostgreSQL's names as they were (a DEALLOCATE
    // of a name that does not exist, or in a failed transaction): so are the proxy's. Its results so far are the
    // CommandCompletes of the statements ahead of it.
    if (head.kind === K_QUERY && st?.forgotten !== undefined) {
      s.restoreUnrun(st.forgotten, st.request.sql, st.verdict.statements, started);
      st.forgotten = undefined;
    }
    // (A Bind carries a statement only when it is malformed: RelayState.failExtended records it.)
    if (
      st &&
      (head.kind === K_QUERY ||
        head.kind === K_FUNCTION ||
        head.kind === K_EXECUTE ||
        head.kind === K_PARSE ||
        head.kind === K_BIND)
    ) {
      st.endResult({ rows: st.rows, bytes: st.bytes, error: { code, message: msg } });
    }
    if (head.kind !== K_QUERY && head.kind !== K_FUNCTION && head.kind !== K_SYNC) {
      s.failExtended(true, head.kind === K_BIND ? { code, message: msg } : undefined, started);
      // PostgreSQL skips everything up to the client's next Sync, which the client may not have sent yet: the
      // client's messages until then are skipped here too, or the proxy would apply a Parse, Bind or Close that
      // never happened upstream (and judge the next Execute by a statement PostgreSQL does not run).
      if (s.queue.peek()?.kind !== K_SYNC) s.discarding = true;
    }
    // A guarded Execute that failed by itself: the batch is failed already, the client's Sync may follow.
    if (head.kind === K_EXECUTE && (st?.guard !== undefined || st?.resets)) s.endGuard();
    // A failed Execute was recorded above (failExtended); a Query or FunctionCall is recorded at its ReadyForQuery,
    // which PostgreSQL sends without waiting for the client: its error waits for it (RelayState.heldReply).
    if (st && out !== false && (head.kind === K_QUERY || head.kind === K_FUNCTION)) {
      // What was passed before the error goes out now; what follows it waits with it (pass, toClient).
      this.framer?.flush();
      s.heldReply = [out === true ? Buffer.from(buf.subarray(start, end)) : out];
      return false;
    }
    return out;
  }

  /**
   * Applies scrubText to the fields of an error or notice that can carry values: message, detail, hint, context
   * (W) and internal query (q: the SQL a function ran, e.g. dynamic SQL built from a masked value). The others
   * name objects, codes and source locations.
   * https://www.postgresql.org/docs/current/protocol-error-fields.html
   */
  private scrubFields(buf: Buffer, start: number, end: number): boolean | Buffer {
    const scrub = this.s.scrub;
    if (scrub === undefined) return true;
    // The statement the message answers: masking trusts fewer echoed fragments in what a masked read raised.
    const verdict = this.s.queue.peek()?.stmt?.verdict;
    const f = decodeErrorFields(buf, start, end);
    let changed = false;
    for (const k of SCRUBBED_FIELDS) {
      const v = f.get(k);
      if (v === undefined) continue;
      const x = scrub(v, verdict, f);
      if (x !== v) {
        f.set(k, x);
        changed = true;
      }
    }
    return changed ? encodeErrorFields(buf[start], f) : true;
  }
}

const SCRUBBED_FIELDS = ['M', 'D', 'H', 'W', 'q'] as const;
/** A text that may hold a ROLLBACK TO SAVEPOINT (also ROLLBACK TRANSACTION TO …). */
const ROLLBACK_TO = /\bto\b/i;

const COPY_DONE = Buffer.from([B.CopyDone, 0, 0, 0, 4]);
/** The binary COPY signature (https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4.5). */
const BINARY_COPY_SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');

/**
 * A binary COPY's CopyData of `length` at `pos` is its trailer, int16 -1, alone or behind the 19-byte header (a COPY
 * of no rows). A row starts with its int16 field count, never -1, nor the 0x5047 ('PG') of the signature.
 */
function isBinaryCopyTrailer(buf: Buffer, pos: number, length: number): boolean {
  if (buf[pos + length - 1] !== 0xff || buf[pos + length] !== 0xff) return false;
  return length === 6 || buf.compare(BINARY_COPY_SIGNATURE, 0, 11, pos + 5, pos + 16) === 0;
}

/** Rows of a result: the count in the tag ("INSERT 0 5", "UPDATE 3") when it has one, else the DataRows seen. */
function rowsOf(tag: string | undefined, seen: number): number {
  if (tag === undefined) return seen;
  const sp = tag.lastIndexOf(' ');
  if (sp < 0) return seen;
  const n = Number(tag.slice(sp + 1));
  return Number.isInteger(n) ? n : seen;
}

const WRITE_TAGS = ['INSERT ', 'UPDATE ', 'DELETE ', 'MERGE '];

function isWriteTag(tag: string | undefined): boolean {
  return tag !== undefined && WRITE_TAGS.some((w) => tag.startsWith(w));
}

/** Which responses to a K_ROWS count the relay reads (handle → rows); the rest are dropped. */
function rowsHeader(type: number): number {
  switch (type) {
    case B.DataRow:
    case B.ErrorResponse:
    case B.CloseComplete:
    case B.ReadyForQuery:
    case B.ParameterStatus: // the guarded statement's, reported at the count's ReadyForQuery: checked and passed
      return WHOLE;
    default:
      return DROP; // RowDescription, ParseComplete, BindComplete, CommandComplete
  }
}

/** Which answers to the proxy's question of names (K_NAMES) the relay reads; the rest are dropped. */
function namesHeader(type: number): number {
  switch (type) {
    case B.DataRow:
    case B.ErrorResponse:
    case B.ReadyForQuery:
    case B.NotificationResponse: // the client's, whenever it comes
      return WHOLE;
    default:
      return DROP;
  }
}

/** Which responses to a restore (K_RESTORE) the relay reads; the rest (ParseComplete … CloseComplete) are dropped. */
function restoreHeader(type: number): number {
  switch (type) {
    case B.ErrorResponse:
    case B.ParameterStatus:
    case B.ReadyForQuery:
    case B.NotificationResponse: // the client's, whenever it comes
      return WHOLE;
    default:
      return DROP;
  }
}

/** Whether an ErrorResponse's fields are one after which PostgreSQL closes the connection (FATAL, PANIC). */
function isSessionEnding(f: Map<string, string>): boolean {
  // V: the severity never localized (PostgreSQL 9.6 and later); S as well before it.
  const severity = f.get('V') ?? f.get('S');
  return severity === 'FATAL' || severity === 'PANIC';
}

function restoreFailed(buf: Buffer, start: number, end: number): SessionResetError {
  const f = decodeErrorFields(buf, start, end);
  return new SessionResetError(
    f.get('C') ?? 'XX000',
    `pgwarden could not restore the session's role and settings after DISCARD ALL: ${f.get('M') ?? 'unknown error'}`,
  );
}

function indirectMessage(verb: string, counted: number, own: number, max: number): string {
  const what = verb === '' ? 'The statement' : verb;
  return `${what} would change ${counted} rows counting those its triggers, foreign-key cascades and functions change (${own} by the statement itself), more than the limit of ${max} set by pgwarden (guardrails.maxRowsAffected); the change was rolled back`;
}

/**
 * Why the counts around `st` cannot tell what it changed (undefined: they can): the count behind it failed or did not
 * come, the server keeps no figures (track_counts off: -1, not an error upstream, so the caller still undoes the
 * write), or the count before it failed.
 */
function countFailure(
  st: Stmt,
  value: number | null | undefined,
  failed: { code: string; message: string } | undefined,
): { code: string; message: string } | undefined {
  if (failed !== undefined || value === undefined) {
    const f = failed ?? { code: '08P01', message: 'no count came back' };
    // The proxy's timeout cancelled the statement just as the write finished: the cancel met the count.
    if (st.timedOut && f.code === '57014')
      return {
        code: f.code,
        message: `canceling statement due to statement timeout of ${timeoutOf(st)} ms set by pgwarden`,
      };
    return f;
  }
  if (value === -1 || (st.rowsBefore ?? 0) < 0)
    return {
      code: '55000',
      message: 'track_counts is off in PostgreSQL, so the rows triggers, cascades and functions change go uncounted',
    };
  if (st.rowsBefore === undefined) return { code: '08P01', message: 'no count came back from before the write' };
  return undefined;
}

function countErrorMessage(f: { code: string; message: string }): string {
  return `pgwarden could not count the rows this write changed (guardrails.maxRowsAffected): ${f.message}; the change was rolled back`;
}

function countError(f: { code: string; message: string }): Buffer {
  return errorResponse({ severity: 'ERROR', code: f.code, message: countErrorMessage(f) });
}

function affectedMessage(tag: string, rows: number, max: number): string {
  const verb = tag.split(' ')[0];
  return `${verb} would change ${rows} rows, more than the limit of ${max} set by pgwarden (guardrails.maxRowsAffected); the change was rolled back`;
}

function limitMessage(st: Stmt): string {
  return `result exceeds the limit of ${st.maxRows} rows set by pgwarden`;
}

function capError(st: Stmt): Buffer {
  return errorResponse({
    severity: 'ERROR',
    code: '54000',
    message: limitMessage(st),
    hint: 'Add a LIMIT clause or a narrower WHERE clause.',
  });
}

function timeoutOf(st: Stmt): number | undefined {
  return st.verdict.action === 'deny' ? undefined : st.verdict.timeoutMs;
}
