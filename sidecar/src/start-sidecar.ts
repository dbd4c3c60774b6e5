import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { startAdminServer } from './admin/http-server.js';
import { SidecarMetrics } from './admin/metrics.js';
import {
  type AuditFailMode,
  type AuditRecorder,
  type AuditSink,
  createAuditRecorder,
  createAuditSink,
  policyOf,
  withAudit,
} from './audit/index.js';
import { type CredentialsSource, credentialsProvider } from './credentials.js';
import { DEFAULT_MAX_STATEMENT_BYTES } from './protocol/codes.js';
import { allowAllHooks } from './proxy/allow-all-hooks.js';
import { CancelRegistry } from './proxy/cancel-registry.js';
import type { ProxyHooks } from './proxy/hooks.js';
import { DEFAULT_RETAINED_STATEMENT_BYTES, RetainedBudget } from './proxy/retained-budget.js';
import { ProxySession, type SessionObserver } from './proxy/session.js';
import { defaultStatementBudget, StatementBudget } from './proxy/statement-budget.js';
import type { ChannelBindingMode } from './upstream/channel-binding.js';
import { openTransport, type SslMode } from './upstream/connect.js';

/** The subset of a pino logger the sidecar uses. */
export interface SidecarLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export interface SidecarOptions {
  listen: { host: string; port: number };
  upstream: {
    host: string;
    port: number;
    database: string;
    sslmode: SslMode;
    caFile?: string;
    /** libpq's channel_binding; default prefer (upstream/channel-binding.ts). */
    channelBinding?: ChannelBindingMode;
    connectTimeoutMs?: number;
  };
  credentials: CredentialsSource;
  /** Default: allow everything (records and audit events are still produced). */
  hooks?: ProxyHooks;
  /** Default: JSON lines on stdout. */
  audit?: AuditSink;
  /**
   * Record audit events (session.start, one per statement, session.end; schema v1, audit/audit-recorder.ts) to
   * `audit` through `auditRecorder`. Default true; hooks that emit their own events set this to false.
   */
  statementEvents?: boolean;
  /** The process-wide recorder (one per sidecar process: it also holds the policy/gap chain). Default: one over `audit`. */
  auditRecorder?: AuditRecorder;
  /** closed (default): statements are denied (SQLSTATE 53000) while audit events cannot be made durable. */
  auditFailMode?: AuditFailMode;
  /** Admin HTTP (/healthz, /readyz, /metrics); false or absent = off. */
  http?: { host: string; port: number } | false;
  /**
   * Connections accepted before this settles wait unread until it resolves, and are closed if it rejects: a process
   * of several listeners serves no client until all of them (and its admin server) are up, so that one failing to
   * start cannot end the process under a session another listener already began.
   */
  serveFrom?: Promise<void>;
  /** Further reasons /readyz fails (empty: none), asked at each probe (the governed sidecar's catalogs). */
  readiness?: () => string[] | Promise<string[]>;
  maxStatementBytes?: number;
  /**
   * Statement text (Query, Parse, FunctionCall of 64 KiB or more) read whole at once, over every session: past it a
   * statement is refused with 53200. Default 128 MiB, or twice maxStatementBytes when that is larger.
   */
  maxBufferedStatementBytes?: number;
  /** The budget itself, to share one among several listeners of a process (startGovernedSidecar). */
  statementBudget?: StatementBudget;
  /**
   * When a statement of that budget does not fit, a session whose statement has not grown for this long is ended
   * (FATAL 08P01) to make room. Default 10 s; 0: never.
   */
  statementStallTimeoutMs?: number;
  /**
   * Prepared statements' text, the columns Describe returned and Bind values kept for review or audit, over every
   * session for as long as they exist: past it a Parse is refused with 53200. Default 32 MiB.
   */
  maxRetainedStatementBytes?: number;
  /** That budget itself, to share one among several listeners of a process (startGovernedSidecar). */
  retainedBudget?: RetainedBudget;
  /**
   * Client connections served at once (0 or absent = no cap); the policy's `guardrails.maxConnections` may lower it.
   * Cancel requests do not count, as in PostgreSQL.
   */
  maxConnections?: number;
  /** From connecting to an established session, at most this long (default 60 s, PostgreSQL's default). */
  authenticationTimeoutMs?: number;
  logger?: SidecarLogger;
}

export interface Sidecar {
  host: string;
  port: number;
  httpPort?: number;
  metrics: SidecarMetrics;
  sessions(): number;
  /** Ends every session at once (ProxySession.kill): FATAL `error` to each client, running statements cancelled. */
  killSessions(error: { code: string; message: string; hint?: string }, reason: string): number;
  /** Ids of the open sessions (the audit trail's session ids). */
  sessionIds(): string[];
  /** How the open sessions' sockets are read (socket-reader.ts): sockets per mode, reads, buffers given up. */
  readStats(): { reusedBuffer: number; dataEvent: number; reads: number; handedOver: number };
  /** Ends one session as killSessions does; false when no open session has this id. */
  killSession(id: string, error: { code: string; message: string; hint?: string }, reason: string): boolean;
  /** Stops accepting, lets in-flight work finish for up to `graceMs` (default 10 s), then ends every session. */
  close(graceMs?: number): Promise<void>;
}

const quietLogger: SidecarLogger = { info() {}, warn() {}, error() {}, debug() {} };

export async function startSidecar(options: SidecarOptions): Promise<Sidecar> {
  const log = options.logger ?? quietLogger;
  const audit = options.audit ?? options.auditRecorder?.sink ?? createAuditSink('stdout');
  const emitEvents = options.statementEvents ?? true;
  const innerHooks = options.hooks ?? allowAllHooks();
  const hooks = emitEvents
    ? withAudit(innerHooks, options.auditRecorder ?? createAuditRecorder(audit), options.auditFailMode ?? 'closed')
    : innerHooks;
  const credentials = credentialsProvider(options.credentials);
  const metrics = new SidecarMetrics();
  const cancels = new CancelRegistry();
  const sessions = new Set<ProxySession>();
  // Sessions that sent a StartupMessage and were let in: what the connection cap counts.
  const admitted = new Set<ProxySession>();
  const policy = policyOf(innerHooks);
  const maxConnections = () => {
    const caps = [options.maxConnections ?? 0, policy()?.policy.spec?.guardrails?.maxConnections ?? 0].filter(
      (n) => n > 0,
    );
    return caps.length ? Math.min(...caps) : 0;
  };

  const observer: SessionObserver = {
    opened(s) {
      metrics.sessionOpened();
      log.debug({ session: s.id, client: s.info?.client, user: s.info?.startup.user }, 'session opened');
    },
    closed(s, reason) {
      sessions.delete(s);
      admitted.delete(s);
      if (s.info) metrics.sessionClosed();
      log.debug({ session: s.id, error: reason.error }, 'session closed');
    },
    statement(_s, record) {
      metrics.statement(record);
    },
    upstreamError(s, err) {
      metrics.upstreamError(err.code);
      log.warn({ session: s.id, code: err.code, err: err.message }, 'upstream error');
    },
    hookError(s, err) {
      log.error({ session: s.id, err: err instanceof Error ? err.message : String(err) }, 'hook failed');
    },
    bytes: (a, b) => metrics.bytes(a, b),
  };

  const maxStatementBytes = options.maxStatementBytes ?? DEFAULT_MAX_STATEMENT_BYTES;
  const statementBudget =
    options.statementBudget ??
    new StatementBudget(
      options.maxBufferedStatementBytes ?? defaultStatementBudget(maxStatementBytes),
      options.statementStallTimeoutMs,
    );

  const retainedBudget =
    options.retainedBudget ?? new RetainedBudget(options.maxRetainedStatementBytes ?? DEFAULT_RETAINED_STATEMENT_BYTES);
  metrics.budgets(statementBudget, retainedBudget);

  let serving = options.serveFrom === undefined;
  options.serveFrom?.then(
    () => {
      serving = true;
    },
    () => undefined,
  );
  const server: Server = createServer({ noDelay: true }, (socket: Socket) => {
    if (serving) return serve(socket);
    socket.pause();
    socket.on('error', () => undefined);
    options.serveFrom!.then(
      () => {
        socket.resume();
        serve(socket);
      },
      () => socket.destroy(),
    );
  });
  const serve = (socket: Socket) => {
    const session = new ProxySession(socket, {
      hooks,
      upstream: options.upstream,
      credentials,
      maxStatementBytes,
      statementBudget,
      retainedBudget,
      authenticationTimeoutMs: options.authenticationTimeoutMs ?? 60_000,
      cancels,
      observer,
      admit(s) {
        const max = maxConnections();
        if (max > 0 && admitted.size >= max) {
          metrics.connectionRefused('connection_limit');
          log.warn({ max, client: socket.remoteAddress }, 'connection refused: connection limit reached');
          return false;
        }
        admitted.add(s);
        return true;
      },
    });
    sessions.add(session);
  };
  let listening = false;
  let probe: { at: number; error: string | null } | null = null;
  const upstreamReachable = async (): Promise<string | null> => {
    // Cached: readiness probes come every few seconds from every kubelet and must not hammer the database.
    if (probe && Date.now() - probe.at < 3000) return probe.error;
    let error: string | null = null;
    try {
      const { socket } = await openTransport({ ...options.upstream, connectTimeoutMs: 2000 });
      socket.destroy();
    } catch (err) {
      error = err instanceof Error ? err.message : String(err);
    }
    probe = { at: Date.now(), error };
    return error;
  };

  let admin: Awaited<ReturnType<typeof startAdminServer>> | undefined;
  let lastReadiness: string | undefined;
  if (options.http) {
    admin = await startAdminServer({
      host: options.http.host,
      port: options.http.port,
      metrics,
      readiness: async () => {
        const reasons: string[] = [];
        if (!listening) reasons.push('not listening yet');
        const up = await upstreamReachable();
        if (up) reasons.push(`upstream unreachable: ${up}`);
        // Every login would fail without them: a pod with a broken credentials mount must not look ready.
        try {
          credentials();
        } catch (err) {
          reasons.push(`credentials unreadable: ${err instanceof Error ? err.message : String(err)}`);
        }
        if (hooks.ready?.() === false) reasons.push('policy not loaded');
        if (!audit.ready()) {
          const cause = audit.notReadyCause?.();
          reasons.push(cause ? `audit sink not durable: ${cause}` : 'audit sink not durable');
        }
        if (options.readiness) reasons.push(...(await options.readiness()));
        // Logged when the answer changes: the probe's own body shows the reasons to local callers only.
        const now = reasons.join('; ');
        if (now !== lastReadiness) {
          if (now) log.warn({ reasons }, 'not ready');
          else if (lastReadiness !== undefined) log.info({}, 'ready');
          lastReadiness = now;
        }
        return reasons;
      },
    });
  }
  server.on('error', (err) => log.error({ err: err.message }, 'listener error'));
  // The admin server starts first: a sidecar that cannot take its admin port must fail before its proxy port has
  // answered a client (it would exit with that client's session open). Until the listener is up it is not ready.
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.listen.port, options.listen.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    await admin?.close();
    throw err;
  }
  listening = true;
  const addr = server.address() as AddressInfo;

  log.info(
    {
      listen: `${addr.address}:${addr.port}`,
      upstream: `${options.upstream.host}:${options.upstream.port}/${options.upstream.database}`,
      sslmode: options.upstream.sslmode,
      http: admin?.port,
    },
    'sidecar listening',
  );

  let closing: Promise<void> | null = null;
  return {
    host: addr.address,
    port: addr.port,
    httpPort: admin?.port,
    metrics,
    sessions: () => sessions.size,
    killSessions(error, reason) {
      const all = [...sessions];
      for (const s of all) s.kill(error, reason);
      return all.length;
    },
    sessionIds: () => [...sessions].map((s) => s.id),
    readStats() {
      const out = { reusedBuffer: 0, dataEvent: 0, reads: 0, handedOver: 0 };
      for (const s of sessions) {
        for (const r of s.reads ? [s.reads.client, s.reads.upstream] : []) {
          if (r.mode === 'reused-buffer') out.reusedBuffer++;
          else out.dataEvent++;
          out.reads += r.stats.reads;
          out.handedOver += r.stats.handedOver;
        }
      }
      return out;
    },
    killSession(id, error, reason) {
      for (const s of sessions) {
        if (s.id !== id) continue;
        s.kill(error, reason);
        return true;
      }
      return false;
    },
    close(graceMs = 10_000) {
      closing ??= (async () => {
        // server.close() stops accepting at once; its callback only fires after every connection ended.
        const listenerClosed = new Promise<void>((resolve) => server.close(() => resolve()));
        for (const s of sessions) s.drain();
        const deadline = Date.now() + graceMs;
        while (sessions.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
        for (const s of [...sessions]) s.terminate();
        await listenerClosed;
        await admin?.close();
        if (!options.audit && !options.auditRecorder) await audit.close();
        log.info({}, 'sidecar stopped');
      })();
      return closing;
    },
  };
}
