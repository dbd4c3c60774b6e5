import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import {
  authenticationCleartextPassword,
  authenticationOk,
  backendKeyData,
  errorResponse,
  parameterStatus,
  readyForQuery,
} from '../protocol/backend-messages.js';
import { ProtocolError } from '../protocol/errors.js';
import { Framer } from '../protocol/framer.js';
import { terminateMessage } from '../protocol/frontend-messages.js';
import { sendCancel } from '../upstream/cancel.js';
import type { UpstreamSession } from '../upstream/connect.js';
import { UpstreamError } from '../upstream/errors.js';
import { authenticateClient, StartupRefused } from './client-auth.js';
import { ClientRelay } from './client-relay.js';
import { ClientStartup, type StartupEvent } from './client-startup.js';
import type { SessionHooks, SessionInfo, StartupRefusal, StatementRecord } from './hooks.js';
import { openUpstreamSession } from './open-session.js';
import { K_ROWS, type Stmt } from './pipeline.js';
import { RelayState } from './relay-state.js';
import { RetainedText } from './retained-budget.js';
import { ServerRelay } from './server-relay.js';
import type { SessionContext } from './session-context.js';
import { restoreMessages, SessionResetError } from './session-reset.js';
import { type ReadResult, readChunks } from './socket-reader.js';
import { UNSAFE_SETTING_SQLSTATE, UnsafeSettingError, unsafeSetting } from './unsafe-settings.js';

export type { SessionContext, SessionObserver } from './session-context.js';

const HOLD = 1;
const UPSTREAM_FULL = 2;
/** The session's token expired: nothing more is read from the client; it ends when its last statement completes. */
const EXPIRED = 4;
/** setTimeout's largest delay (about 24.8 days); a later deadline is re-armed when this one fires. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** One client connection: startup, authentication, upstream connect, then the relay in both directions. */
export class ProxySession {
  readonly id = randomUUID();
  info: SessionInfo | undefined;
  private readonly client: Socket;
  private readonly ctx: SessionContext;
  private readonly framer: Framer;
  private upstream: UpstreamSession | undefined;
  private upFramer: Framer | undefined;
  private state: RelayState | undefined;
  private relay: ClientRelay | undefined;
  private sessionHooks: SessionHooks | undefined;
  private key: { processId: number; secretKey: number } | undefined;
  private clientPause = 0;
  /** Startup holds the framer suspended until the relay starts. */
  private holds = 1;
  private seq = 0;
  /** A statement was done and its record not yet settled (SessionHooks.settle) before a reply to the client. */
  private unsettled = false;
  /** Inside fromUpstream: the client is corked, so settling can wait for the uncork and cover the whole chunk. */
  private inUpstreamChunk = false;
  private closed = false;
  private draining = false;
  private expiry: NodeJS.Timeout | undefined;
  private expired = false;
  private startupTimer: NodeJS.Timeout | undefined;
  private startupSeen = false;
  private readonly onClientData = (chunk: Buffer) => this.fromClient(chunk);
  /** How each socket is read once the relay runs (socket-reader.ts), with its counters. */
  reads: { client: ReadResult; upstream: ReadResult } | undefined;
  private passwordWaiter: ((password: string) => void) | undefined;

  constructor(client: Socket, ctx: SessionContext) {
    this.client = client;
    this.ctx = ctx;
    client.setNoDelay(true);
    const starter = new ClientStartup(
      () => this.framer,
      (b) => client.write(b),
      (e) => this.onStartupEvent(e),
    );
    this.framer = new Framer(starter, { startup: true });
    this.starter = starter;
    // A client that never finishes logging in (no StartupMessage, no password) would hold its socket, and a slot of
    // the connection cap, for ever: ended like PostgreSQL's authentication_timeout.
    this.startupTimer = setTimeout(() => this.startupTimedOut(), ctx.authenticationTimeoutMs);
    this.startupTimer.unref();
    // The startup exchange reads through 'data' events; the relay moves both sockets to reused buffers (startRelay).
    client.on('data', this.onClientData);
    client.on('error', (err) => this.close({ error: err.message }));
    client.on('close', () => this.close({}));
    client.on('drain', () => this.upstream?.socket.resume());
  }

  private readonly starter: ClientStartup;

  /** True when no statement is in flight and no transaction is open (safe to end during a drain). */
  get idle(): boolean {
    const s = this.state;
    return s === undefined
      ? this.upstream === undefined
      : s.queue.length === 0 && s.txStatus === 'I' && !this.framer.isSuspended;
  }

  /** Graceful shutdown: end now if idle, else as soon as the work in flight is done. */
  drain(): void {
    this.draining = true;
    if (this.idle) this.terminate();
  }

  /**
   * Ends the session now, as pg_terminate_backend does: the client gets FATAL `error`, a statement running upstream is
   * cancelled first (PostgreSQL does not notice a closed connection while it executes), and the upstream rolls back
   * an open transaction as the connection closes. `reason` is what the audit trail's session.end says.
   */
  kill(error: { code: string; message: string; hint?: string }, reason: string): void {
    if (this.closed) return;
    const up = this.upstream;
    if (up && (this.state?.queue.length ?? 0) > 0) {
      sendCancel(this.ctx.upstream, up.processId, up.secretKey).catch((err) => {
        if (err instanceof UpstreamError) this.ctx.observer.upstreamError(this, err);
      });
    }
    this.close({ error: reason }, errorResponse({ severity: 'FATAL', ...error }));
  }

  /** Ends the session with FATAL 57P01, as PostgreSQL does on a smart/fast shutdown. */
  terminate(): void {
    if (this.closed) return;
    this.close(
      { error: 'shutdown' },
      errorResponse({
        severity: 'FATAL',
        code: '57P01',
        message: 'terminating connection due to administrator command',
      }),
    );
  }

  private fromClient(chunk: Buffer): void {
    // Ended (killed mid-statement, say): nothing more of the client's is read, nor reserves a share again.
    if (this.closed) return;
    const up = this.upstream?.socket;
    up?.cork();
    try {
      this.framer.push(chunk);
    } catch (err) {
      this.protocolError(err);
    } finally {
      up?.uncork();
    }
    this.ctx.observer.bytes(chunk.length, 0);
  }

  private fromUpstream(chunk: Buffer): void {
    this.client.cork();
    this.inUpstreamChunk = true;
    try {
      this.upFramer!.push(chunk);
    } catch (err) {
      this.protocolError(err, true);
    } finally {
      this.inUpstreamChunk = false;
      if (this.unsettled) this.settle();
      this.client.uncork();
    }
    this.ctx.observer.bytes(0, chunk.length);
    if (this.draining && this.idle) this.terminate();
    if (this.expired) this.endIfExpired();
  }

  /**
   * A malformed message ends the session (08P01), as in PostgreSQL. Anything else thrown on the relay path comes
   * from a hook (planRows, a row transformer, scrubText): the session ends rather than let rows pass unmasked.
   */
  private protocolError(err: unknown, upstream = false): void {
    if (err instanceof UnsafeSettingError || err instanceof SessionResetError) {
      this.kill({ code: err.sqlstate, message: `${err.message}; the session was ended` }, err.message);
      return;
    }
    if (!(err instanceof ProtocolError)) {
      this.ctx.observer.hookError(this, err);
      this.fatal('XX000', 'pgwarden could not process the result safely; the session was ended');
      return;
    }
    // Before a session opened there is no session chain to record it in: a probe with garbage, an oversized or
    // nameless startup packet goes into the sidecar's own chain, as refused logins do.
    if (!upstream && !this.info && !this.closed)
      this.reportRefusal({ reason: 'protocol_violation', code: err.sqlstate, message: err.message });
    this.fatal(err.sqlstate, upstream ? `upstream protocol error: ${err.message}` : err.message);
  }

  /** Tells the hooks (the audit trail) of a connection refused before a session opened. */
  private reportRefusal(r: Omit<StartupRefusal, 'client'>, params?: Record<string, string>): void {
    try {
      this.ctx.hooks.startupRefused?.({
        ...r,
        client: { address: this.client.remoteAddress ?? '', port: this.client.remotePort ?? 0 },
        ...(params
          ? { user: params.user, database: params.database ?? params.user, applicationName: params.application_name }
          : {}),
      });
    } catch {
      // The refusal stands whatever the audit trail does with it.
    }
  }

  private fatal(code: string, message: string): void {
    if (this.closed) return;
    this.close({ error: message }, errorResponse({ severity: 'FATAL', code, message }));
  }

  private onStartupEvent(e: StartupEvent): void {
    if (e.kind === 'cancel') {
      // As the postmaster does, the client's cancel connection closes only once the request was passed on: libpq's
      // PQcancel waits for that close so that its next statement cannot be the one a late cancel hits.
      void this.ctx.cancels.cancel(e.processId, e.secretKey).finally(() => this.client.end());
      return;
    }
    if (e.kind === 'password') {
      this.passwordWaiter?.(e.password);
      return;
    }
    this.client.pause();
    this.startupSeen = true;
    if (!this.ctx.admit(this)) {
      // PostgreSQL's own words and code for a full server, so clients and poolers treat it as they already do.
      const message = 'sorry, too many clients already';
      this.reportRefusal({ reason: 'connection_limit', code: '53300', message }, e.packet.params);
      this.fatal('53300', message);
      return;
    }
    this.establish(e.packet).catch((err) => {
      if (err instanceof StartupRefused) this.fatal(err.sqlstate, err.message);
      else if (err instanceof UpstreamError) {
        this.ctx.observer.upstreamError(this, err);
        // Where the sidecar keeps its credentials is none of the client's business; the log names the file.
        const message =
          err.code === 'PGW_UPSTREAM_CREDENTIALS'
            ? 'pgwarden cannot read its database credentials; see the sidecar log'
            : err.message;
        this.fatal(err.sqlstate, message);
      } else if (err instanceof ProtocolError) this.fatal(err.sqlstate, err.message);
      else this.fatal('XX000', `pgwarden internal error: ${err instanceof Error ? err.message : String(err)}`);
    });
  }

  private async establish(packet: { params: Record<string, string>; minor: number }): Promise<void> {
    const auth = await authenticateClient(this.client, this.ctx.hooks, packet, () => this.askPassword());
    const { up, setup } = await openUpstreamSession(this.ctx, this.id, auth, (info, hooks) => {
      this.info = info;
      this.sessionHooks = hooks;
      this.ctx.observer.opened(this);
    });
    if (this.closed) {
      up.socket.destroy();
      return;
    }
    this.upstream = up;
    up.socket.on('error', (err) => this.close({ error: `upstream: ${err.message}` }));
    up.socket.on('close', () => this.close({ error: 'upstream closed the connection' }));
    this.startRelay(up, this.sessionHooks!, setup);
  }

  private askPassword(): Promise<string> {
    return new Promise((resolve) => {
      this.passwordWaiter = resolve;
      this.starter.expectPassword = true;
      this.client.write(authenticationCleartextPassword());
      this.client.resume();
      this.framer.resume();
    });
  }

  private startupTimedOut(): void {
    if (this.closed || this.state) return;
    const message = 'canceling authentication due to timeout';
    // Only a client that got as far as a StartupMessage is a refused login worth an audit event; a connection that
    // never spoke stays as silent as PostgreSQL leaves it.
    if (this.startupSeen) this.reportRefusal({ reason: 'authentication_timeout', code: '57014', message });
    this.fatal('57014', message);
  }

  private startRelay(up: UpstreamSession, hooks: SessionHooks, setup: string[]): void {
    clearTimeout(this.startupTimer);
    // A startup parameter, or a role or database default, the policy engine cannot read statements under.
    for (const [k, v] of up.parameters) {
      const unsafe = unsafeSetting(k, v);
      if (unsafe !== undefined) {
        this.fatal(UNSAFE_SETTING_SQLSTATE, unsafe);
        return;
      }
    }
    const key = this.ctx.cancels.register(() => this.cancelUpstream());
    this.key = key;
    const parts = [authenticationOk()];
    for (const [k, v] of up.parameters) parts.push(parameterStatus(k, v));
    parts.push(backendKeyData(key.processId, key.secretKey), readyForQuery(up.txStatus));
    this.client.write(Buffer.concat(parts));
    const state = new RelayState(
      hooks,
      {
        toClient: (b) => {
          if (this.unsettled && !this.inUpstreamChunk) this.settle();
          if (!this.client.write(b)) up.socket.pause();
        },
        toUpstream: (b) => {
          if (this.closed) return; // e.g. a held verdict that arrived after the client left
          if (!up.socket.write(b)) this.setPause(UPSTREAM_FULL, true);
        },
        cancelUpstream: () => this.proxyCancel(),
        statementDone: (record, stmt) => this.statementDone(record, stmt),
      },
      new RetainedText(this.ctx.retainedBudget),
    );
    state.txStatus = up.txStatus;
    state.restore = restoreMessages(setup);
    for (const [k, v] of up.parameters) state.clientParams.set(k, v);
    state.upstreamPid = up.processId;
    state.clientPid = key.processId;
    this.state = state;
    this.armExpiry();
    const relay = new ClientRelay(
      state,
      {
        hold: () => this.hold(),
        release: () => this.release(),
        terminate: () => {},
        readingPaused: () => this.clientPause !== 0 || this.framer.isSuspended,
        kill: (error, reason) => this.kill(error, reason),
      },
      this.ctx.maxStatementBytes,
      this.ctx.statementBudget,
    );
    const budget = this.ctx.statementBudget;
    state.queue.release = (n) => budget.release(n);
    relay.framer = this.framer;
    this.relay = relay;
    this.framer.setHandler(relay);
    const serverRelay = new ServerRelay(state);
    this.upFramer = new Framer(serverRelay);
    serverRelay.framer = this.upFramer;
    // From here on the sockets read into reused buffers (socket-reader.ts). A chunk's bytes are kept past its read
    // only by a write the other socket has not handed to the kernel, or by input the framer holds (a pending
    // verdict, a proxy cancel): then the buffer is given up. Everything else decoded from a chunk is a copy.
    const upFramer = this.upFramer;
    const upstreamReads = readChunks(
      up.socket,
      (chunk) => this.fromUpstream(chunk),
      () => this.client.writableLength > 0 || upFramer.holdsInput(),
    );
    // A write to a TLS socket stays queued until a later tick even when OpenSSL took the bytes at once, so a client
    // read would give its buffer up every time (a fresh 64 KiB each, dearer than the stream's own reads): with a
    // TLS upstream the client side keeps 'data' events (measured, docs/benchmarks.md).
    let clientReads: ReadResult = { mode: 'data-event', stats: { reads: 0, handedOver: 0 } };
    if (!(up.socket as { encrypted?: boolean }).encrypted) {
      this.client.removeListener('data', this.onClientData);
      clientReads = readChunks(
        this.client,
        this.onClientData,
        () => up.socket.writableLength > 0 || this.framer.holdsInput(),
      );
    }
    this.reads = { client: clientReads, upstream: upstreamReads };
    up.socket.on('drain', () => this.setPause(UPSTREAM_FULL, false));
    if (up.leftover.length > 0) this.fromUpstream(up.leftover);
    this.client.resume();
    this.release();
  }

  /**
   * Sessions whose identity carries `sessionEndsAt` (an OIDC token with the policy's `endSessionAtExpiry`) end then:
   * at once when no statement is in flight, else when the last one completes. An open transaction is rolled back
   * by the upstream as the connection closes, as PostgreSQL's own session timeouts do.
   */
  private armExpiry(): void {
    const endsAt = this.info?.identity.sessionEndsAt;
    if (endsAt === undefined || this.closed) return;
    const wait = endsAt - Date.now();
    if (wait > 0) {
      this.expiry = setTimeout(() => this.armExpiry(), Math.min(wait, MAX_TIMER_MS));
      this.expiry.unref();
      return;
    }
    this.expired = true;
    this.setPause(EXPIRED, true);
    this.endIfExpired();
  }

  private endIfExpired(): void {
    if (this.closed || (this.state?.queue.length ?? 0) > 0) return;
    const at = new Date(this.info?.identity.sessionEndsAt ?? Date.now()).toISOString();
    this.close(
      { error: 'token expired' },
      errorResponse({
        severity: 'FATAL',
        code: '28000',
        message: `pgwarden: terminating connection because its OIDC token expired (session allowed until ${at})`,
        hint: 'Reconnect with a fresh token.',
      }),
    );
  }

  /** Stops forwarding client messages (a verdict is pending, or a proxy cancel is on its way). Counted. */
  private hold(): void {
    this.holds++;
    this.framer.suspend();
    this.setPause(HOLD, true);
  }

  private release(): void {
    if (this.holds > 0) this.holds--;
    if (this.holds > 0) return;
    this.clientPause &= ~HOLD;
    const up = this.upstream?.socket;
    up?.cork();
    try {
      this.framer.resume();
    } catch (err) {
      this.protocolError(err);
    } finally {
      up?.uncork();
    }
    this.setPause(0, false);
  }

  private setPause(bit: number, on: boolean): void {
    if (on) this.clientPause |= bit;
    else this.clientPause &= ~bit;
    if (this.clientPause !== 0 || this.framer.isSuspended) this.client.pause();
    else if (!this.closed) {
      this.client.resume();
      // Time the proxy did not read is not time the client stalled (StatementBudget reclaim).
      this.framer.touch();
    }
  }

  /**
   * A cancel the proxy itself sends (maxRows, timeoutMs). Nothing more is forwarded upstream until the postmaster
   * has taken the request, so it cannot land on a later statement: a backend that is already idle ignores it
   * (postgres.c ProcessInterrupts, "DoingCommandRead").
   */
  private proxyCancel(): void {
    const up = this.upstream;
    if (!up || this.closed) return;
    this.hold();
    sendCancel(this.ctx.upstream, up.processId, up.secretKey)
      .catch((err) => {
        if (err instanceof UpstreamError) this.ctx.observer.upstreamError(this, err);
      })
      .finally(() => this.release());
  }

  /**
   * A client's CancelRequest, mapped from the proxy's key to the upstream's (or ending a held statement). Settles
   * when the upstream has closed the cancel connection, i.e. has signalled its backend (or gave up).
   */
  cancelUpstream(): Promise<void> {
    if (this.relay?.cancelHeld) {
      this.relay.cancelHeld();
      return Promise.resolve();
    }
    const up = this.upstream;
    if (!up || this.closed) return Promise.resolve();
    return sendCancel(this.ctx.upstream, up.processId, up.secretKey).catch((err) => {
      if (err instanceof UpstreamError) this.ctx.observer.upstreamError(this, err);
    });
  }

  private statementDone(record: StatementRecord, _stmt: Stmt): void {
    this.seq++;
    try {
      this.sessionHooks?.statementDone(record);
    } catch (err) {
      // The statement already ran; a failing recorder must not break the protocol stream.
      this.ctx.observer.hookError(this, err);
    }
    this.unsettled = true;
    this.ctx.observer.statement(this, record, this.seq);
  }

  private settle(): void {
    this.unsettled = false;
    try {
      this.sessionHooks?.settle?.();
    } catch (err) {
      this.ctx.observer.hookError(this, err);
    }
  }

  /**
   * Closes both sides; safe to call more than once. `last`: the proxy's FATAL for the client, sent after the
   * statements still in flight are recorded (and any error the upstream sent for them, held back until then).
   */
  close(reason: { error?: string }, last?: Buffer): void {
    if (this.closed) return;
    this.closed = true;
    // Once PostgreSQL has sent a FATAL the session ended by its cause, whichever side is seen closing first: the
    // client that read the relayed FATAL often hangs up before the upstream socket's own close (or the RST of a
    // query written into it) is read.
    const fatal = this.state?.upstreamFatal;
    if (fatal !== undefined) reason = { error: `upstream ended the session (FATAL ${fatal})` };
    clearTimeout(this.expiry);
    clearTimeout(this.startupTimer);
    if (this.key) this.ctx.cancels.unregister(this.key.processId);
    // A statement being read or held gives its share of the process's budget back (the queue's, drained below, too).
    this.relay?.freeReserved();
    // So do its prepared statements and portals, which PostgreSQL drops with the session.
    this.state?.retained.end();
    // Statements already sent upstream may have run (or failed) even though their ReadyForQuery never arrived, e.g.
    // the client sent Terminate right after an ErrorResponse: they are audited with what is known, never dropped.
    const drained = new Set<Stmt>();
    for (const e of this.state?.queue.drain() ?? []) {
      const st = e.stmt;
      if (st === undefined || drained.has(st)) continue;
      // A count behind a write (K_ROWS): its write was recorded already, unless it waited for the count.
      if (e.kind === K_ROWS && !st.awaitCount) continue;
      drained.add(st);
      if (st.sentAt === 0 && st.results.length === 0) {
        st.settle(); // never left the proxy
        continue;
      }
      if (st.results.length === 0 || st.rows > 0) {
        st.endResult({
          rows: st.rows,
          bytes: st.bytes,
          error: { code: '08006', message: 'pgwarden: the session closed before the statement completed' },
        });
      }
      this.statementDone(st.record(), st);
    }
    if (this.unsettled) this.settle();
    const held = this.state?.heldReply;
    if (held !== undefined) {
      this.state!.heldReply = undefined;
      if (!this.client.destroyed) this.client.write(held.length === 1 ? held[0] : Buffer.concat(held));
    }
    if (last !== undefined) this.client.write(last);
    this.client.end();
    this.client.destroySoon?.();
    const up = this.upstream?.socket;
    if (up) {
      up.end(terminateMessage());
      setTimeout(() => up.destroy(), 1000).unref();
    }
    try {
      this.sessionHooks?.close(reason);
    } finally {
      this.ctx.observer.closed(this, reason);
    }
  }
}
