/**
 * The contract between the wire proxy (sidecar/src/proxy) and everything that decides, masks or records.
 * The proxy knows the PostgreSQL protocol and nothing about policies; the implementations of these interfaces
 * (governance, masking, audit) know policies and nothing about sockets.
 */

/** Who is on the other end of the client connection, as far as the sidecar could establish. */
export interface Identity {
  /** From the downward API (workload mode). */
  namespace?: string;
  serviceAccount?: string;
  pod?: string;
  node?: string;
  /** From a verified OIDC token (oidc mode): `sub`, groups claim, issuer. */
  user?: string;
  groups: string[];
  issuer?: string;
  /**
   * Epoch ms at which the proxy ends the session (the token's `exp` plus clock skew, when the policy's
   * `authentication.oidc.endSessionAtExpiry` asks for it). Not an identity attribute: never audited.
   */
  sessionEndsAt?: number;
}

export interface StartupInfo {
  user: string;
  database: string;
  applicationName?: string;
  /** Every startup parameter the client sent (after the proxy's own filtering). */
  params: Record<string, string>;
}

export interface AuthRequest {
  startup: StartupInfo;
  client: { address: string; port: number };
  /** The password the client sent, if the authenticator asked for one (`needsPassword`). Never log it. */
  password?: string;
}

export type AuthOutcome =
  | { ok: true; identity: Identity }
  /** code is a SQLSTATE (28P01 bad password/token, 28000 not authorized); message is safe to show the client. */
  | { ok: false; code: string; message: string; reason: string };

export interface SessionInfo {
  id: string;
  startedAt: Date;
  client: { address: string; port: number };
  startup: StartupInfo;
  identity: Identity;
  upstream: { host: string; port: number; database: string; user: string; tls: boolean };
}

export type TxStatus = 'I' | 'T' | 'E';

export interface StatementRequest {
  /** The SQL exactly as the client sent it (a simple Query may hold several statements). */
  sql: string;
  protocol: 'simple' | 'extended';
  /** Prepared statement name for Parse ('' = unnamed). */
  statementName?: string;
  /** Transaction status as the client last saw it. */
  txStatus: TxStatus;
  /**
   * The values a Bind gave an execution ($1, $2, …; null for NULL, binary ones as `\x` hex): only for a statement
   * held for review, so an approver sees what runs.
   */
  params?: (string | null)[];
  /**
   * Each of `params`' format as the Bind sent it (`binary` ones are shown as `\x` hex, and a text value can read the
   * same). Absent when `params` holds a note in place of the values.
   */
  paramFormats?: ('text' | 'binary')[];
}

/** Per-statement detail a gate may return so audit can record one event per statement. */
export interface StatementDetail {
  text: string;
  kind?: string;
  fingerprint?: string;
  tables?: string[];
  functions?: string[];
}

interface VerdictBase {
  /** Rule that decided, for messages and audit. */
  rule?: string;
  reason?: string;
  policy?: { name: string; hash: string };
  statements?: StatementDetail[];
  /** Opaque data the same session's hooks get back in planRows/statementDone (e.g. the analysis). */
  context?: unknown;
}

export type Verdict =
  | (VerdictBase & {
      action: 'allow' | 'dryrun';
      /** Cap on DataRows the client may receive for this statement (guardrail maxRowsReturned). */
      maxRows?: number;
      /** Milliseconds the statement was held for review before it was allowed. */
      heldMs?: number;
      /** Proxy-enforced statement timeout (guardrail statementTimeout): past it the proxy cancels upstream. */
      timeoutMs?: number;
      /**
       * Rows one write of this Query/Execute may change (guardrail maxRowsAffected): the proxy runs it so that it can
       * be undone, and turns a CommandComplete over the cap into ERROR 54000 with the change rolled back.
       */
      maxAffected?: number;
    })
  | (VerdictBase & {
      action: 'deny';
      /** SQLSTATE for the client's ErrorResponse: 42501 for policy denials, 57P03/53000 when audit cannot be made durable, 42601 for unparseable SQL. */
      code: string;
      message: string;
      detail?: string;
      hint?: string;
      /** 'P' of the ErrorResponse: where in the statement text the error is (unparseable SQL). */
      position?: number;
      heldMs?: number;
    })
  /**
   * Parse only: the statement needs a person's approval, which a Parse (it runs nothing) cannot use up. Each
   * execution of it (a Bind's first Execute) is held by checkExecute; where nothing can hold it, the proxy denies it.
   */
  | (VerdictBase & {
      action: 'review';
      heldMs?: undefined;
      maxRows?: undefined;
      maxAffected?: undefined;
      timeoutMs?: undefined;
    });

/** One column of a RowDescription, as the proxy decoded it. */
export interface RowField {
  name: string;
  tableOid: number;
  columnAttr: number;
  typeOid: number;
  typeSize: number;
  typeModifier: number;
  /** 0 text, 1 binary. */
  format: number;
}

/**
 * Rewrites DataRow message bodies (the bytes after the 5-byte header: int16 count, then per column int32 len + bytes).
 * Return the same Buffer when nothing changed, so untouched rows stay zero-copy. A transformer may also overwrite
 * bytes of `body` in place without changing any length and return the same Buffer: the proxy must then forward the
 * memory `body` views (masking relies on this to rewrite same-length values without copying the row).
 */
export interface RowTransformer {
  (body: Buffer): Buffer;
  /**
   * The same rewrite over a whole DataRow message in `buf[start, end)` (type byte and length word included), for
   * the proxy's row path: no Buffer view per row. Returns undefined to forward those bytes (possibly overwritten in
   * place, lengths unchanged), or the complete replacement message. Optional: wrappers may offer only the call.
   */
  span?(buf: Buffer, start: number, end: number): Buffer | undefined;
}

export interface StatementResult {
  /** CommandComplete tag, e.g. "SELECT 3". */
  tag?: string;
  rows: number;
  bytes: number;
  /** guardrail maxRowsAffected: rows changed counting triggers, cascades and functions (the Query's last result). */
  changed?: number;
  error?: { code: string; message: string };
}

/** What the proxy reports when a client message that carried a statement has finished. */
export interface StatementRecord {
  request: StatementRequest;
  verdict: Verdict;
  /** One entry per statement that produced a CommandComplete, ErrorResponse or EmptyQueryResponse, in order. */
  results: StatementResult[];
  startedAt: Date;
  durationMs: number;
  upstreamMs: number;
  heldMs: number;
}

export interface SessionHooks {
  /**
   * SQL the proxy runs upstream after authentication and before the client's first ReadyForQuery (SET ROLE,
   * statement_timeout...), one statement per entry: after a client's DISCARD ALL each runs again as a prepared
   * statement (session-reset.ts), which cannot hold several.
   */
  setupSql(): string[];
  /**
   * Startup parameters sent upstream in place of the client's of the same name (case-insensitive). A setting given
   * at login is what RESET, RESET ALL and `SET … TO DEFAULT` return to; a role's or database's default is not.
   */
  startupParams?(): Record<string, string>;
  checkQuery(req: StatementRequest): Verdict | Promise<Verdict>;
  checkParse(req: StatementRequest): Verdict | Promise<Verdict>;
  /**
   * Each Execute of a portal: the verdict to run it under now (`prepared` itself, another, a denial, or a promise
   * while it waits for a rate limit or a review). `resumed` false: the portal's first Execute since its Bind, a new
   * execution of the statement, and `prepared` is the verdict its statement got at Parse. `resumed` true: the same
   * execution goes on (after PortalSuspended; PostgreSQL never runs a portal twice), and `prepared` is the verdict its
   * first Execute ran under. `request` is the statement's Parse. Return `prepared` itself when nothing changed: row
   * plans (masking) find a statement by its verdict's identity. Absent: every Execute runs under the Parse's verdict
   * (a `review` one is denied).
   */
  checkExecute?(prepared: Verdict, request: StatementRequest, resumed: boolean): Verdict | Promise<Verdict>;
  /** The FunctionCall message bypasses SQL: allow it only where a policy says so. */
  checkFunctionCall(functionOid: number): Verdict | Promise<Verdict>;
  /** Called on each RowDescription; a transformer masks that result's DataRows. undefined = pass rows through as bytes. */
  planRows(fields: RowField[], verdict: Verdict): RowTransformer | undefined;
  /**
   * Scrubs free text the column rules cannot see: error/notice messages, notification payloads, COPY data.
   * `verdict` is the statement whose response carries the text, when there is one (notifications have none);
   * `fields`, for a field of an ErrorResponse/NoticeResponse, all of its fields by code (S, C, P, t, n, ...).
   */
  scrubText?(text: string, verdict?: Verdict, fields?: ReadonlyMap<string, string>): string;
  /**
   * A statement or portal name the client sent in a protocol message (Bind, Describe, Execute, Close): text the
   * client wrote itself, which masking's echo redaction may then leave in error messages that quote it.
   */
  clientName?(name: string): void;
  /**
   * Whether the audit trail records the values a Bind gives (`audit.captureParams`): asked at each Bind of a checked
   * statement; true makes the proxy read the Bind whole, as for a reviewed one, to put them in the request's `params`.
   */
  captureParams?(): boolean;
  statementDone(record: StatementRecord): void;
  /**
   * Called after statements were done and before the proxy lets the client see their replies: what statementDone
   * recorded must survive a crash of the process from here on, or a client could be told a statement ran that the
   * audit trail never holds.
   */
  settle?(): void;
  close(reason: { error?: string }): void;
}

export interface ProxyHooks {
  /** true when the proxy must ask the client for a password (cleartext, over loopback) and pass it to authenticate(). */
  readonly needsPassword: boolean;
  /** false until a first valid policy is loaded (drives /readyz); absent = always ready. */
  ready?(): boolean;
  authenticate(req: AuthRequest): Promise<AuthOutcome>;
  /**
   * The client was refused before a session opened: for its startup parameters (replication, `options`, identity
   * settings), or for bytes that are not a valid startup exchange. Told for the audit trail; the proxy answers the
   * client with the FATAL itself.
   */
  startupRefused?(refusal: StartupRefusal): void;
  openSession(info: SessionInfo): SessionHooks;
}

/** A connection refused before a session opened; the client-chosen strings as sent (the recorder caps them). */
export interface StartupRefusal {
  /**
   * `startup_parameter` (the default): a parameter not allowed; `protocol_violation`: a malformed startup exchange;
   * `connection_limit`: the listener already serves as many clients as it may.
   */
  reason?: 'startup_parameter' | 'protocol_violation' | 'connection_limit' | 'authentication_timeout';
  code: string;
  message: string;
  client: { address: string; port: number };
  user?: string;
  database?: string;
  applicationName?: string;
}
