/**
 * Audit event schema v1 as TypeScript types (DESIGN §5). The JSON Schema in event-schema.ts describes the same
 * shape; a test validates every event the sidecar produces against it, so the two cannot drift silently.
 */

export const AUDIT_SCHEMA_VERSION = 1 as const;

export const AUDIT_EVENT_TYPES = [
  'session.start',
  'statement',
  'session.end',
  'policy.loaded',
  'policy.rejected',
  'approval.requested',
  'approval.granted',
  'approval.denied',
  'approval.expired',
  'audit.gap',
  'auth.refused',
  'audit.checkpoint',
  'audit.read',
  'audit.heads',
  'audit.finding',
  'control.applied',
  'web.session.end',
] as const;
export type AuditEventType = (typeof AUDIT_EVENT_TYPES)[number];

/** Position of an event in its chain: `seq` runs 1..n per session without holes. */
export interface AuditSessionRef {
  id: string;
  seq: number;
}

/** Who ran it: workload identity from the downward API, plus the OIDC subject (`user`), groups and issuer. */
export interface AuditIdentity {
  namespace?: string;
  serviceAccount?: string;
  pod?: string;
  node?: string;
  /** OIDC `sub` (oidc mode). */
  user?: string;
  groups: string[];
  issuer?: string;
}

export interface AuditDatabase {
  host: string;
  port?: number;
  name: string;
  /** The upstream login role (from the sidecar's credentials), never a password. */
  user: string;
  /** The role the sidecar SETs after connecting (policy `role`). */
  role?: string;
}

export interface AuditClient {
  address: string;
  port: number;
  application?: string;
}

export interface AuditStatement {
  /** SQL text with secrets (PASSWORD literals, connection-string passwords) redacted. */
  text: string;
  fingerprint?: string;
  kind?: string;
  tables: string[];
  functions: string[];
  /** Bind parameters, only when the policy asks for them (binary-format ones as `\x` hex). */
  params?: (string | null)[];
  /** Each of `params`' format as the client sent it (a text value may read `\x41` too); absent for a note. */
  paramFormats?: ('text' | 'binary')[];
  protocol?: 'simple' | 'extended';
  /** Position of this statement in a multi-statement Query (0-based) and how many it held. */
  index?: number;
  count?: number;
}

export interface AuditDecision {
  action: 'allow' | 'deny' | 'review' | 'dryrun';
  rule?: string;
  reason?: string;
  /** SQLSTATE sent to the client for a denial. */
  code?: string;
}

export interface AuditMasking {
  /** Masked columns as `table.column` (or the result column name when no table is known). */
  columns: string[];
  cells: number;
}

export interface AuditError {
  code: string;
  message: string;
}

export interface AuditResult {
  /** CommandComplete tag, e.g. "SELECT 3". */
  tag?: string;
  rows: number;
  bytes: number;
  /**
   * Rows the statement changed counting what its triggers, foreign-key cascades and functions changed, from
   * PostgreSQL's per-transaction statistics: only under guardrails.maxRowsAffected, on the last result of a Query.
   */
  changed?: number;
  error?: AuditError;
  /** Result rows as sent to the client (already masked), per the policy's `captureResults`. */
  sample?: AuditResultSample;
}

export interface AuditTiming {
  /** When the client message carrying the statement arrived (RFC 3339, µs). */
  start: string;
  durationMs: number;
  upstreamMs: number;
  heldMs: number;
}

export interface AuditPolicyRef {
  name: string;
  hash: string;
}

export interface AuditSessionEnd {
  reason?: string;
  error?: string;
  statements: number;
  durationMs: number;
}

export interface AuditApproval {
  id: string;
  approver?: string;
  reason?: string;
  expiresAt?: string;
  /** approval.granted: the approval also covers later statements of the same shape until then (a grant). */
  grantUntil?: string;
}

/** Events that could not be made durable (failMode: open, or spool full) and were dropped. */
export interface AuditGap {
  dropped: number;
  since: string;
  until: string;
  cause: string;
  /** Per-session seq ranges that were dropped (capped; `truncated` when more sessions were affected). */
  sessions: { id: string; fromSeq: number; toSeq: number }[];
  truncated?: boolean;
}

/**
 * A login the sidecar refused (`auth.refused`), as far as the client could be identified. Everything but `reason`
 * and `code` is what the client claimed in its startup packet; the password or token is never recorded.
 */
export interface AuditRefusal {
  /**
   * Stable reason code (identity IdentityReason, or `policy_not_ready` / `identity_config`, `startup_parameter`
   * for a startup packet refused for its parameters before authentication, or `protocol_violation` for a connection
   * that was not a valid startup exchange).
   */
  reason: string;
  /** SQLSTATE sent to the client (28P01 for a refused token, 57P03 while no policy is loaded). */
  code: string;
  /** The message sent to the client (it never contains the token). */
  message?: string;
  /** Startup packet `user` and `database` (claimed, unverified). */
  user?: string;
  database?: string;
  /** Authentication mode in force (`workload`, `oidc`). */
  mode?: string;
  /**
   * Identical refusals (the same in everything but the client's port) since this refusal was last recorded, folded
   * into this event instead of one each: a client in a retry loop is recorded once a minute, not per attempt.
   */
  repeated?: number;
  /**
   * The client kept varying the strings it chooses (user, database, application): its refusals are folded by client
   * address, reason and code alone, and this event's strings are those of one of them.
   */
  varied?: boolean;
}

/**
 * A signed checkpoint (`audit.checkpoint`): the sidecar's Ed25519 signature over the hash of the event just before
 * it in the same chain (`seq` = own seq - 1, `hash` = own prevHash). Because each hash covers every earlier event,
 * one valid checkpoint vouches for events 1..seq: a party that can write the stream or the collector's store but
 * does not hold the signing key can drop or rewrite events only after the last checkpoint (checkpoint-signature.ts).
 */
export interface AuditCheckpoint {
  /** The seq and hash of the event signed. */
  seq: number;
  hash: string;
  /** Key id: the first 16 hex digits of sha256 over the raw 32-byte Ed25519 public key. */
  key: string;
  /** Ed25519 signature, base64, over checkpointSignedBytes(session id, seq, hash). */
  sig: string;
}

/**
 * The heads of a sidecar's session chains (`audit.heads`), in its own chain (`sidecar-<instance>`): for each session
 * chain that grew since the previous heads event, its latest seq and hash. A chain's tail (its last events, closing
 * checkpoint included) can be cut without leaving a hole in it; the heads in the sidecar's own chain, which keeps
 * growing as long as the sidecar runs, still name the events that were there. Signed with the sidecar's chain when
 * signing is on (its checkpoint follows the heads), so a party without the key cannot rewrite them either.
 */
export interface AuditHeads {
  chains: AuditChainHead[];
  /**
   * The sidecar names every session chain it still has open at least this often (ms), grown or not: a chain its
   * sidecar stopped naming for several such periods without a `session.end` was cut off (the sidecar was killed, or
   * its trail stopped arriving).
   */
  refreshMs?: number;
}

export interface AuditChainHead {
  /** `session.id` of the chain. */
  id: string;
  seq: number;
  hash: string;
}

/**
 * A chain finding the collector raised (`audit.finding`), in its own chain (`collector-<instance>`): a session's
 * events missing (`audit.gap`: a hole, a cut tail, a chain deleted whole, events a sidecar had to drop) or altered
 * (`audit.tampered`). Recorded as an event so that exports carry it to the SIEM, where integrity alerts belong, and
 * so that it is chained and signed like the reads of the trail.
 */
export interface AuditFindingRecord {
  /** `audit.gap.unattributed`: a sidecar declared events lost that it could not name (`session` is its own chain). */
  kind: 'audit.gap' | 'audit.gap.unattributed' | 'audit.tampered';
  /** The session (chain) the finding is about. */
  session: string;
  seqFrom: number;
  seqTo: number;
  detail: string;
}

/**
 * A read of the audit trail over the collector's HTTP API (`audit.read`), in the collector's own chain
 * (`collector-<instance>`): who asked, for what, and what they were answered, refusals included. It never holds the
 * bearer token, its hash or the Authorization header.
 */
export interface AuditRead {
  /** The token entry's `name` (readers or approvers file); `open` when the API needs no token; `unknown` when refused. */
  reader: string;
  /** The request path, e.g. `/api/v1/sessions/<id>`. */
  route: string;
  /** The query string's parameters (the first value of each), values of token-like keys redacted. */
  query?: Record<string, string>;
  /** The reader's namespace scope, when their entry limits it (absent: every namespace). */
  namespaces?: string[];
  /**
   * For a reader who came with an OIDC token or the web UI's sign-in: the token's issuer and `sub`, verified, besides
   * the entry's name (several people may be bound to one entry). Also on a refusal of a valid token nobody binds.
   */
  oidc?: { issuer: string; subject: string };
  /** The HTTP status the collector answered. */
  status: number;
  /** How many sessions, events or approvals the answer held, where that is known. */
  items?: number;
  /**
   * The reason an approver gave for an action (closing a finding, ending a session, suspending or resuming a policy),
   * as sent, once the request got as far as reading it; so the chain says who did what and why. Absent on reads and
   * on events written before it existed (which verify as they did).
   */
  reason?: string;
  /**
   * Identical reads (same reader, route, query, scope, status and item count) answered since this read was last
   * recorded, folded into one event instead of one each: a dashboard that polls is recorded once a minute, not on
   * every poll. Absent on a read's first event.
   */
  repeated?: number;
}

/** Why a web UI sign-in ended (`web.session.end`): a stable code; `detail` says it in words. */
export const WEB_SESSION_END_REASONS = [
  /** The person signed out (POST /auth/logout). */
  'signed_out',
  /** `--web-session-max-age` passed, renewed or not. */
  'max_age',
  /** Unused for `--web-session-idle-timeout`. */
  'idle',
  /** Its ID token expired and it had no refresh token (no `--web-session-key-file`, or none was issued). */
  'expired',
  /** The identity provider refused the refresh token (revoked, `invalid_grant`, ...). */
  'refresh_refused',
  /** The renewed ID token failed verification or named another subject, nonce or auth_time. */
  'renewal_invalid',
  /** The ID token expired while the identity provider could not be reached to renew it. */
  'idp_unavailable',
  /** Its refresh token opens under none of the collector's web session keys (a key rotated out too early). */
  'key_unknown',
  /** The renewed token's claims no longer bind the person to a readers or approvers entry. */
  'unbound',
  /** Pushed out by newer sign-ins past the store's cap on sessions. */
  'evicted',
] as const;
export type WebSessionEndReason = (typeof WEB_SESSION_END_REASONS)[number];

/**
 * A web UI sign-in that ended (`web.session.end`, in the collector's own chain): whose, and why. Exactly one per
 * sign-in, whichever replica saw it end; never the session's cookie, its digest or any token.
 */
export interface AuditWebSession {
  /** The readers or approvers entry the sign-in acted as. */
  reader: string;
  /** The verified ID token's issuer and `sub`. */
  oidc: { issuer: string; subject: string };
  reason: WebSessionEndReason;
  /** The reason in words, as the person's browser was told. */
  detail: string;
}

/**
 * A control message a sidecar applied (`control.applied`, in the sidecar's own chain): an approver ended a session
 * or suspended or resumed a policy through the collector (policy/src/control/control-messages.ts).
 */
export interface AuditControl {
  kind: 'terminate' | 'suspend' | 'resume';
  /** The action's id (the collector's UUID), also in the `session.end` of a session it ended. */
  id: string;
  /** The approver who acted, and why. */
  by: string;
  reason: string;
  /** When the collector published it. */
  at: string;
  /** terminate: the session it ended. */
  session?: string;
  /** suspend / resume: the policy (namespace `_` when it has none). */
  policy?: { namespace: string; name: string };
  /** Whether it carried a signature one of the policy's approval.decisionKeys verified (required when there are any). */
  signed: boolean;
  /** How many sessions applying it ended. */
  sessionsEnded: number;
}

/** A result sample (`captureResults: rows`): the first rows as sent to the client, after masking. */
export interface AuditResultSample {
  columns: string[];
  /** Text-format values as text, binary-format values as `\\x` hex; null for SQL NULL. */
  rows: (string | null)[][];
  /** More rows were sent than the sample holds (maxResultBytes). */
  truncated: boolean;
}

/** Which sidecar (or collector, for its own chain) process produced the event. */
export interface AuditSource {
  instance: string;
  pod?: string;
  namespace?: string;
  version?: string;
}

export interface AuditEvent {
  v: typeof AUDIT_SCHEMA_VERSION;
  type: AuditEventType;
  /** `<session.id>.<session.seq>`: unique, and the JetStream message id (retries deduplicate). */
  id: string;
  /** RFC 3339 UTC with microseconds. */
  time: string;
  session: AuditSessionRef;
  source?: AuditSource;
  identity?: AuditIdentity;
  database?: AuditDatabase;
  client?: AuditClient;
  statement?: AuditStatement;
  decision?: AuditDecision;
  masking?: AuditMasking;
  result?: AuditResult;
  timing?: AuditTiming;
  policy?: AuditPolicyRef;
  end?: AuditSessionEnd;
  approval?: AuditApproval;
  gap?: AuditGap;
  error?: AuditError;
  refusal?: AuditRefusal;
  checkpoint?: AuditCheckpoint;
  read?: AuditRead;
  heads?: AuditHeads;
  finding?: AuditFindingRecord;
  control?: AuditControl;
  webSession?: AuditWebSession;
  /** `hash` of the previous event of the same session; null for seq 1. */
  prevHash: string | null;
  /** Lowercase hex sha256 over the canonical JSON of the event without `hash`. */
  hash: string;
}

/** An event before it is sealed into its chain. */
export type UnsealedAuditEvent = Omit<AuditEvent, 'prevHash' | 'hash' | 'id' | 'session'> & {
  session: { id: string };
};
