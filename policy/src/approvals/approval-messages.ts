import type { Subjects } from '../api/access-policy-schema.js';
import { subjectToken } from '../audit/audit-subject.js';
import { compileSubjects, subjectMatches } from '../engine/compile-policy.js';
import { parseDuration } from '../engine/duration.js';
import type { OidcSubject } from './four-eyes.js';

/**
 * The approval queue's wire contract, shared by the sidecar (which holds `review` statements) and the collector
 * (which shows them to people and takes their decisions). Everything travels on NATS JetStream, stream
 * PGWARDEN_APPROVALS, so that a collector that restarts, or a second replica, rebuilds the queue by replaying it:
 *
 *   sidecar   → pgwarden.approval.request.<ns>.<id>  ApprovalRequestMessage  (statement held)
 *   collector → pgwarden.approval.decision.<id>      ApprovalDecisionMessage (a person approved or rejected)
 *   sidecar   → pgwarden.approval.closed.<ns>.<id>   ApprovalClosedMessage   (what the sidecar did: ran it, denied
 *                                                                              it (rejected, or approved too late to
 *                                                                              apply), it expired, or the client went
 *                                                                              away)
 *   collector → pgwarden.approval.revoked.<id>   ApprovalRevokedMessage  (a person ended the grant an approval gave)
 *   collector → pgwarden.approval.notified.<id>  ApprovalNotifiedMessage (the request's webhook notice was sent)
 *
 * The sidecar listens for its decision on the plain subject (it does not need the stream) and checks the approver
 * against the policy's `approval.approvers` itself: the collector's check is for the people using it, the
 * sidecar's is the one that counts.
 *
 * What sidecars publish names the namespace of the request's policy (`<ns>`: subjectToken, `_` for none), so that
 * NATS can hold a namespace's own user to its own requests (chart nats-auth.yaml): a sidecar that learned another
 * namespace's request id cannot close that request. Earlier sidecars published both on `<kind>.<id>`; the collector
 * still reads those (they stay in the stream for its 7-day max age, and old sidecars publish them until their pods
 * roll), but a request on such a subject can only be closed on one, and a namespaced request only on its own.
 */

export const APPROVALS_STREAM = 'PGWARDEN_APPROVALS';
export const APPROVALS_SUBJECTS = 'pgwarden.approval.>';
export type ApprovalSubjectKind = 'request' | 'decision' | 'closed' | 'revoked' | 'notified';
/** The kinds sidecars publish, whose subjects carry the namespace. */
export type SidecarApprovalKind = 'request' | 'closed';
/** The subject of a message the collector publishes (decision, revoked, notified), or one without namespace. */
export const approvalSubject = (kind: ApprovalSubjectKind, id: string) => `pgwarden.approval.${kind}.${id}`;
/** The subject a sidecar publishes a request or its closing on: under the namespace of the request's policy. */
export const sidecarApprovalSubject = (kind: SidecarApprovalKind, namespace: string | undefined, id: string) =>
  `pgwarden.approval.${kind}.${subjectToken(namespace)}.${id}`;

const SUBJECT =
  /^pgwarden\.approval\.(?:(request|closed)\.([^.]+)|(request|decision|closed|revoked|notified))\.([^.]+)$/;
/**
 * The kind, id and (request and closed only) namespace token an approval subject names; undefined for any other
 * subject or an id that is not a UUID. No `namespace`: an earlier sidecar's subject, or a kind the collector publishes.
 */
export function parseApprovalSubject(
  subject: string,
): { kind: ApprovalSubjectKind; id: string; namespace?: string } | undefined {
  const m = SUBJECT.exec(subject);
  if (!m || !isApprovalId(m[4])) return undefined;
  return m[1]
    ? { kind: m[1] as ApprovalSubjectKind, id: m[4], namespace: m[2] }
    : { kind: m[3] as ApprovalSubjectKind, id: m[4] };
}

/**
 * Whether a request may stand on the subject it came on: one naming a namespace must name its policy's. A namespace's
 * own NATS user can publish only there, so this is what stops it queueing requests in another namespace's name.
 */
export const requestFitsSubject = (request: ApprovalRequestMessage, subjectNamespace: string | undefined) =>
  subjectNamespace === undefined || subjectNamespace === subjectToken(request.policy.namespace);

/** Ids are UUIDs: they are NATS subject tokens, so nothing else is accepted. */
const ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
export const isApprovalId = (id: unknown): id is string => typeof id === 'string' && ID.test(id);

export interface ApprovalRequestMessage {
  v: 1;
  id: string;
  /** The sidecar session holding the statement (audit session id). */
  session: string;
  policy: { name: string; hash: string; namespace?: string };
  /** The rule whose `review` action held it ('' for the policy's defaultAction). */
  rule: string;
  /** The statement text, secrets redacted and capped (the audit event carries the same). */
  sql: string;
  /**
   * For an execution of a prepared statement: the values bound to `$1`, `$2`, … (null for NULL, binary ones as `\x`
   * hex), secrets redacted. The approval is for the statement with these values.
   */
  params?: (string | null)[];
  /**
   * Each of `params`' format as the client sent it, in order: `binary` values are shown as `\x` hex, and a `text`
   * value may read the same (`\x41` typed as text). Absent from earlier sidecars, and when `params` holds a note
   * from the sidecar in place of the values (they were not kept, or the Bind could not be read).
   */
  paramFormats?: ('text' | 'binary')[];
  /** Who asked: the session's identity (namespace, serviceAccount, pod, user, groups). */
  identity: Record<string, unknown>;
  /** The policy's approval.approvers: who may decide. */
  approvers: Subjects;
  requestedAt: string;
  expiresAt: string;
  /**
   * The policy's approval.grants.maxDuration, when the policy lets an approval cover later statements of the same
   * shape (a grant) and this statement may be covered: the longest grant an approver may give. Absent: this
   * approval covers this statement only.
   */
  grantMax?: string;
  /** The statement's shape (its fingerprint: constants replaced), which a grant would cover. */
  fingerprint?: string;
  /**
   * sha256 (hex) of the statement's grant key (sidecar approval-grants.ts: policy and its hash, rule, identity,
   * fingerprint, what the analysis found). Requests with equal keys are the same statement shape from the same
   * identity under the same policy: while one's grant is active, the collector approves the others under it, so a
   * grant covers every pod of the workload, not only the one that asked.
   */
  grantKey?: string;
  /**
   * Set by sidecars that apply the four-eyes rule to the approver's `oidc` and `serviceAccounts` too: the collector
   * puts them into this request's decision only then, because an earlier sidecar drops fields it does not know
   * from `by` before it checks the signature, and would ignore a signed decision that carried them.
   */
  approverIdentities?: true;
}

/** Grants are bounded here too, whatever a policy says: a standing approval is meant to be short. */
export const MAX_GRANT_MS = 24 * 3_600_000;

export interface Approver {
  name: string;
  groups: string[];
  /**
   * The approver's OIDC subjects (approvers file `oidc`, and the token they signed in with) and service accounts
   * (`namespace/name`), in a decision for a request with `approverIdentities`: the sidecar's four-eyes check
   * (four-eyes.ts) compares them with the requester's identity. Absent: none, or an earlier collector.
   */
  oidc?: OidcSubject[];
  serviceAccounts?: string[];
}

export interface ApprovalDecisionMessage {
  v: 1;
  id: string;
  decision: 'approved' | 'rejected';
  by: Approver;
  reason?: string;
  at: string;
  /**
   * With `approved`: the approver also approves, for `for` (a duration), later statements of the same shape, under
   * the same rule, from the same identity, in the sidecar that held this one (sidecar approval-grants.ts).
   */
  grant?: { for: string };
  /**
   * With `approved`: no person decided this request; the collector approved it under the active grant of approval
   * `under` (same grant key), on behalf of that grant's approver (`by`), for the grant's remaining time.
   */
  under?: string;
  /** Ed25519 signature (base64) by the collector's approval signing key, when it has one (decision-signature.ts). */
  sig?: string;
}

/** Ends the grant of approval `id` before its time (a person changed their mind). */
export interface ApprovalRevokedMessage {
  v: 1;
  id: string;
  by: Approver;
  reason?: string;
  at: string;
  sig?: string;
}

/**
 * `denied`: an approver approved, but the sidecar could not apply the approval and denied the statement (`reason`
 * says why: `stale: policy reloaded` when the policy it was held under was reloaded during the hold).
 */
export type ApprovalClosedOutcome = 'approved' | 'rejected' | 'denied' | 'expired' | 'withdrawn' | 'refused';

export interface ApprovalClosedMessage {
  v: 1;
  id: string;
  outcome: ApprovalClosedOutcome;
  /** The approver whose decision the sidecar applied (approved / rejected). */
  by?: Approver;
  at: string;
  /** When the approval gave a grant the sidecar took: when that grant ends (the policy may have shortened it). */
  grantUntil?: string;
  /** With `denied`: why the sidecar denied the statement an approver had approved (at most 256 characters). */
  reason?: string;
}

/** The closing reason of a statement approved during a hold, but under a policy the sidecar no longer enforces. */
export const STALE_APPROVAL_REASON = 'stale: policy reloaded';

/** Whether `who` is one of `approvers` (a user name or a group, globs as in rule subjects). */
export function isApprover(approvers: Subjects, who: Approver): boolean {
  return subjectMatches(compileSubjects(approvers), { user: who.name, groups: who.groups });
}

const str = (v: unknown, max: number): v is string => typeof v === 'string' && v.length > 0 && v.length <= max;

/**
 * Kept exactly as sent, or refused: a signature covers `by` whole, and a list cut or tidied here would no longer
 * verify. A malformed identity list makes the whole message malformed, never an approver without identities.
 */
function approverOf(v: unknown): Approver | undefined {
  const o = v as Approver | undefined;
  if (!o || typeof o !== 'object' || !str(o.name, 256) || !Array.isArray(o.groups)) return undefined;
  if (o.groups.length > 256 || !o.groups.every((g) => str(g, 256))) return undefined;
  const oidc = o.oidc as unknown;
  if (
    oidc !== undefined &&
    (!Array.isArray(oidc) ||
      oidc.length > MAX_APPROVER_IDENTITIES ||
      !oidc.every(
        (b: Partial<OidcSubject> | null) =>
          b && typeof b === 'object' && Object.keys(b).length === 2 && str(b.issuer, 1024) && str(b.subject, 1024),
      ))
  )
    return undefined;
  const accounts = o.serviceAccounts as unknown;
  if (
    accounts !== undefined &&
    (!Array.isArray(accounts) || accounts.length > MAX_APPROVER_IDENTITIES || !accounts.every((a) => str(a, 512)))
  )
    return undefined;
  return {
    name: o.name,
    groups: [...o.groups],
    ...(oidc ? { oidc: (oidc as OidcSubject[]).map((b) => ({ issuer: b.issuer, subject: b.subject })) } : {}),
    ...(accounts ? { serviceAccounts: [...(accounts as string[])] } : {}),
  };
}

/** At most this many OIDC subjects, and service accounts, in an approver's `by` (the approvers file allows 64 and 256). */
export const MAX_APPROVER_IDENTITIES = 256;

/** Parses a decision message; undefined for anything malformed (the caller ignores it, the hold goes on). */
export function parseApprovalDecision(data: Uint8Array | string): ApprovalDecisionMessage | undefined {
  const o = parseObject(data);
  if (o?.v !== 1 || !isApprovalId(o.id)) return undefined;
  if (o.decision !== 'approved' && o.decision !== 'rejected') return undefined;
  const by = approverOf(o.by);
  if (!by || !str(o.at, 64)) return undefined;
  if (o.reason !== undefined && typeof o.reason !== 'string') return undefined;
  if (o.sig !== undefined && !str(o.sig, 128)) return undefined;
  // The collector caps reasons at 1024 characters; a longer one is not the collector's. Kept as sent otherwise:
  // a signature covers the exact text.
  if (o.reason !== undefined && o.reason.length > 1024) return undefined;
  let grant: { for: string } | undefined;
  if (o.grant !== undefined) {
    const g = o.grant as { for?: unknown } | null;
    if (o.decision !== 'approved' || !g || typeof g !== 'object' || Object.keys(g).length !== 1) return undefined;
    if (typeof g.for !== 'string' || grantDurationMs(g.for) === undefined) return undefined;
    grant = { for: g.for };
  }
  if (o.under !== undefined && (o.decision !== 'approved' || !isApprovalId(o.under) || o.under === o.id))
    return undefined;
  return {
    v: 1,
    id: o.id,
    decision: o.decision,
    by,
    at: o.at,
    ...(o.reason !== undefined ? { reason: o.reason } : {}),
    ...(grant ? { grant } : {}),
    ...(o.under !== undefined ? { under: o.under as string } : {}),
    ...(o.sig !== undefined ? { sig: o.sig } : {}),
  };
}

/** A grant's duration in ms: a schema duration of at least a second and at most MAX_GRANT_MS; else undefined. */
export function grantDurationMs(text: string): number | undefined {
  const ms = text.length <= 32 ? parseDuration(text) : undefined;
  return ms !== undefined && ms >= 1000 && ms <= MAX_GRANT_MS ? ms : undefined;
}

/** `ms` as a duration the schema reads back (`1h30m`, `45s`), to whole seconds. */
export function formatGrantDuration(ms: number): string {
  let s = Math.max(1, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  return `${h ? `${h}h` : ''}${m ? `${m}m` : ''}${s ? `${s}s` : ''}`;
}

/**
 * The collector's record that a request's notice reached the webhook (collector approval-notifier.ts). It is in the
 * stream, so that whichever replica takes the request's closing, after a restart too, knows the request was
 * announced and follows it up. Nothing else reads it; the sidecar never sees it.
 */
export interface ApprovalNotifiedMessage {
  v: 1;
  id: string;
  at: string;
}

/** Parses a notice record; undefined when malformed. */
export function parseApprovalNotified(data: Uint8Array | string): ApprovalNotifiedMessage | undefined {
  const o = parseObject(data);
  if (o?.v !== 1 || !isApprovalId(o.id) || !str(o.at, 64) || Number.isNaN(Date.parse(o.at))) return undefined;
  return { v: 1, id: o.id, at: o.at };
}

/** Parses a revocation; undefined when malformed. */
export function parseApprovalRevoked(data: Uint8Array | string): ApprovalRevokedMessage | undefined {
  const o = parseObject(data);
  if (o?.v !== 1 || !isApprovalId(o.id)) return undefined;
  const by = approverOf(o.by);
  if (!by || !str(o.at, 64) || Number.isNaN(Date.parse(o.at))) return undefined;
  if (o.reason !== undefined && (typeof o.reason !== 'string' || o.reason.length > 1024)) return undefined;
  if (o.sig !== undefined && !str(o.sig, 128)) return undefined;
  return {
    v: 1,
    id: o.id,
    by,
    at: o.at,
    ...(o.reason !== undefined ? { reason: o.reason } : {}),
    ...(o.sig !== undefined ? { sig: o.sig } : {}),
  };
}

/** Parses a request message (collector side); undefined when malformed. */
export function parseApprovalRequest(data: Uint8Array | string): ApprovalRequestMessage | undefined {
  const o = parseObject(data);
  if (o?.v !== 1 || !isApprovalId(o.id) || !str(o.session, 256) || typeof o.sql !== 'string') return undefined;
  const p = o.policy as ApprovalRequestMessage['policy'] | undefined;
  if (!p || typeof p !== 'object' || !str(p.name, 253) || typeof p.hash !== 'string') return undefined;
  if (typeof o.rule !== 'string' || !o.identity || typeof o.identity !== 'object') return undefined;
  if (!isSubjects(o.approvers)) return undefined;
  if (Number.isNaN(Date.parse(String(o.requestedAt))) || Number.isNaN(Date.parse(String(o.expiresAt))))
    return undefined;
  if (o.grantMax !== undefined && (typeof o.grantMax !== 'string' || grantDurationMs(o.grantMax) === undefined))
    return undefined;
  if (o.fingerprint !== undefined && !str(o.fingerprint, 64)) return undefined;
  if (
    o.params !== undefined &&
    (!Array.isArray(o.params) ||
      o.params.length > 65_535 ||
      !o.params.every((v) => v === null || typeof v === 'string'))
  )
    return undefined;
  if (o.grantKey !== undefined && (typeof o.grantKey !== 'string' || !/^[0-9a-f]{64}$/.test(o.grantKey)))
    return undefined;
  if (o.approverIdentities !== undefined && o.approverIdentities !== true) return undefined;
  // One format per value, or none: a list that does not line up would label the wrong value.
  if (
    o.paramFormats !== undefined &&
    (!Array.isArray(o.paramFormats) ||
      !Array.isArray(o.params) ||
      o.paramFormats.length !== o.params.length ||
      !o.paramFormats.every((f) => f === 'text' || f === 'binary'))
  )
    return undefined;
  return o as unknown as ApprovalRequestMessage;
}

/** `approval.approvers` as the schema allows it: optional arrays of strings under users, groups, serviceAccounts. */
function isSubjects(v: unknown): v is Subjects {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return false;
  for (const [k, list] of Object.entries(v)) {
    if (k !== 'users' && k !== 'groups' && k !== 'serviceAccounts') return false;
    if (!Array.isArray(list) || list.length > 256 || !list.every((x) => str(x, 256))) return false;
  }
  return true;
}

const OUTCOMES: readonly string[] = ['approved', 'rejected', 'denied', 'expired', 'withdrawn', 'refused'];

/** Parses a closed message (collector side); undefined when malformed. */
export function parseApprovalClosed(data: Uint8Array | string): ApprovalClosedMessage | undefined {
  const o = parseObject(data);
  if (o?.v !== 1 || !isApprovalId(o.id) || !OUTCOMES.includes(String(o.outcome)) || !str(o.at, 64)) return undefined;
  const by = o.by === undefined ? undefined : approverOf(o.by);
  const grantUntil =
    typeof o.grantUntil === 'string' && o.grantUntil.length <= 64 && !Number.isNaN(Date.parse(o.grantUntil))
      ? o.grantUntil
      : undefined;
  // A denial says why; a reason on any other outcome is not this contract's and is dropped.
  const reason = o.outcome === 'denied' && str(o.reason, 256) ? o.reason : undefined;
  if (o.outcome === 'denied' && reason === undefined) return undefined;
  return {
    v: 1,
    id: o.id,
    outcome: o.outcome as ApprovalClosedOutcome,
    at: o.at,
    ...(by ? { by } : {}),
    ...(grantUntil && o.outcome === 'approved' ? { grantUntil } : {}),
    ...(reason ? { reason } : {}),
  };
}

function parseObject(data: Uint8Array | string): Record<string, unknown> | undefined {
  try {
    const text = typeof data === 'string' ? data : Buffer.from(data).toString('utf8');
    const o = JSON.parse(text) as unknown;
    return o && typeof o === 'object' && !Array.isArray(o) ? (o as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
