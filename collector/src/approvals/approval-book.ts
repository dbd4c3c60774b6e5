import {
  type ApprovalClosedMessage,
  type ApprovalClosedOutcome,
  type ApprovalDecisionMessage,
  type ApprovalNotifiedMessage,
  type ApprovalRequestMessage,
  type ApprovalRevokedMessage,
  type Approver,
  grantDurationMs,
  isApprover,
  parseApprovalClosed,
  parseApprovalDecision,
  parseApprovalNotified,
  parseApprovalRequest,
  parseApprovalRevoked,
  parseApprovalSubject,
  requestFitsSubject,
  sameIdentity,
  selfApprovalReason,
} from '@pgwarden/policy';
import { CollectorError } from '../errors.js';

/**
 * Where a held statement stands, as far as the stream tells: the sidecar's closed outcome once it reported one
 * (`denied`: approved, but the sidecar denied it all the same, as after a reload of the policy during the hold);
 * `decided` while a decision waits for the sidecar to apply it; `expired` once `expiresAt` passed without either;
 * else `pending`.
 */
export type ApprovalState = 'pending' | 'decided' | 'expired' | ApprovalClosedOutcome;
export const APPROVAL_STATES: readonly ApprovalState[] = [
  'pending',
  'decided',
  'approved',
  'rejected',
  'denied',
  'expired',
  'withdrawn',
  'refused',
];

/**
 * Where the grant an approval asked for stands: `requested` until the sidecar applies the decision; `active` while
 * it covers statements; `expired` past its end; `revoked` once someone ended it; `refused` when the sidecar's policy
 * allowed no grant (the approval covered its own statement only).
 */
export type GrantState = 'requested' | 'active' | 'expired' | 'revoked' | 'refused';

export interface ApprovalGrantView {
  /** What the approver asked for (a duration). */
  for: string;
  state: GrantState;
  /** When it ends, as the sidecar reported it (the policy may have shortened it). */
  until?: string;
  revoked?: ApprovalRevokedMessage;
}

export interface ApprovalEntry {
  id: string;
  state: ApprovalState;
  request: ApprovalRequestMessage;
  decision?: ApprovalDecisionMessage;
  closed?: ApprovalClosedMessage;
  grant?: ApprovalGrantView;
  /** When a collector sent the request's webhook notice (absent: not announced, or notifications are off). */
  notifiedAt?: string;
}

interface Held {
  request?: ApprovalRequestMessage;
  /** The namespace token of the request's subject; undefined for an earlier sidecar's `request.<id>`. */
  requestNamespace?: string;
  decision?: ApprovalDecisionMessage;
  /** The closing whose subject's namespace is the request's (closingFits). */
  closed?: ApprovalClosedMessage;
  /** Closings that came before their request, the first per subject namespace ('' for none), until it comes. */
  early?: Map<string, ApprovalClosedMessage>;
  revoked?: ApprovalRevokedMessage;
  notified?: ApprovalNotifiedMessage;
  /** Stream time (epoch ms) of the first message for this id: what the stream's max age is measured from. */
  since: number;
}

/** `foreign`: a message whose subject names a namespace other than its request's (ignored: see closingFits). */
const MAX_EARLY_CLOSINGS = 8;

export type ApplyOutcome = 'applied' | 'repeated' | 'malformed' | 'foreign';

export interface ApprovalBookOptions {
  /** Ids kept at most; the oldest go first (default 10,000). */
  maxEntries?: number;
  /** Ids whose first message is older than this are forgotten, as the stream forgets them (default 7 days). */
  maxAgeMs?: number;
}

/**
 * The approval queue's state, rebuilt from the PGWARDEN_APPROVALS messages in stream order: no I/O, the clock is
 * passed in. Messages may come in any order (a decision or closed before its request is kept until the request
 * arrives); for each kind the first valid message wins, as it does for the sidecar.
 */
export class ApprovalBook {
  private readonly held = new Map<string, Held>();
  private readonly maxEntries: number;
  private readonly maxAgeMs: number;

  constructor(opts: ApprovalBookOptions = {}) {
    this.maxEntries = opts.maxEntries ?? 10_000;
    this.maxAgeMs = opts.maxAgeMs ?? 7 * 86_400_000;
  }

  get size(): number {
    return this.held.size;
  }

  /** Applies one stream message; `at` is its stream time (epoch ms). The subject's id must be the body's. */
  apply(subject: string, data: Uint8Array | string, at: number): ApplyOutcome {
    const named = parseApprovalSubject(subject);
    if (!named) return 'malformed';
    const { kind, id, namespace } = named;
    const parsed =
      kind === 'request'
        ? parseApprovalRequest(data)
        : kind === 'decision'
          ? parseApprovalDecision(data)
          : kind === 'revoked'
            ? parseApprovalRevoked(data)
            : kind === 'notified'
              ? parseApprovalNotified(data)
              : parseApprovalClosed(data);
    if (!parsed || parsed.id !== id) return 'malformed';
    if (kind === 'request' && !requestFitsSubject(parsed as ApprovalRequestMessage, namespace)) return 'foreign';
    if (kind === 'closed' && !this.closingFits(id, namespace)) return 'foreign';
    let h = this.held.get(id);
    if (!h) {
      h = { since: at };
      this.held.set(id, h);
      this.evict(at);
    }
    if (kind === 'request') {
      if (h.request) return 'repeated';
      h.request = parsed as ApprovalRequestMessage;
      h.requestNamespace = namespace;
      h.closed = h.early?.get(namespace ?? '');
      h.early = undefined;
    } else if (kind === 'decision') {
      if (h.decision) return 'repeated';
      h.decision = parsed as ApprovalDecisionMessage;
    } else if (kind === 'revoked') {
      if (h.revoked) return 'repeated';
      h.revoked = parsed as ApprovalRevokedMessage;
    } else if (kind === 'notified') {
      if (h.notified) return 'repeated';
      h.notified = parsed as ApprovalNotifiedMessage;
    } else if (!h.request) {
      h.early ??= new Map();
      // A sidecar publishes a request before its closing, so these are rare; a publisher naming many namespaces
      // for one id gets no more memory than this.
      if (h.early.has(namespace ?? '') || h.early.size >= MAX_EARLY_CLOSINGS) return 'repeated';
      h.early.set(namespace ?? '', parsed as ApprovalClosedMessage);
    } else {
      if (h.closed) return 'repeated';
      h.closed = parsed as ApprovalClosedMessage;
    }
    return 'applied';
  }

  /**
   * Whether a closing of request `id` on a subject naming `subjectNamespace` may close it: the request's own subject
   * named the same namespace (or, for an earlier sidecar's request, neither names one). A sidecar's NATS user of
   * another namespace can publish only under its own, so it cannot mark this request withdrawn or approved; the
   * shared user could name any namespace, and is held to the request's. True while the request is unknown.
   */
  closingFits(id: string, subjectNamespace: string | undefined): boolean {
    const h = this.held.get(id);
    return !h?.request || h.requestNamespace === subjectNamespace;
  }

  get(id: string, now: number): ApprovalEntry | undefined {
    this.expire(now);
    const h = this.held.get(id);
    return h?.request ? entryOf(id, h, now) : undefined;
  }

  /** Entries in `state` (or all), newest request first. Ids whose request has not arrived are not listed. */
  list(state: ApprovalState | 'all', now: number): ApprovalEntry[] {
    this.expire(now);
    const out: ApprovalEntry[] = [];
    for (const [id, h] of this.held) {
      if (!h.request) continue;
      const e = entryOf(id, h, now);
      if (state === 'all' || e.state === state) out.push(e);
    }
    // Map order is arrival order; newest first is that reversed unless requestedAt says otherwise.
    return out.reverse().sort((a, b) => Date.parse(b.request.requestedAt) - Date.parse(a.request.requestedAt));
  }

  /** Entries whose grant is active now, newest request first. */
  activeGrants(now: number): ApprovalEntry[] {
    return this.list('approved', now).filter((e) => e.grant?.state === 'active');
  }

  /**
   * The active grant that covers pending request `id` (the same grant key, policy and hash, an approver of this
   * request who is not its requester), the one that lasts longest; undefined when none does.
   */
  coveringGrant(id: string, now: number): ApprovalEntry | undefined {
    const e = this.get(id, now);
    return e?.state === 'pending' ? this.grantCovering(e.request, now) : undefined;
  }

  /** The active grant that would cover `request` (as coveringGrant), whether or not the book has seen it yet. */
  grantCovering(request: ApprovalRequestMessage, now: number): ApprovalEntry | undefined {
    const key = request.grantKey;
    if (key === undefined) return undefined;
    let best: ApprovalEntry | undefined;
    for (const g of this.activeGrants(now)) {
      if (g.id === request.id || g.request.grantKey !== key || !g.decision || !samePolicy(g.request, request)) continue;
      if (isRequester(request, g.decision.by.name) || !mayDecide(request, g.decision.by)) continue;
      if (!best || Date.parse(g.grant!.until!) > Date.parse(best.grant!.until!)) best = g;
    }
    return best;
  }

  /** Pending requests with this grant key (waiting for a grant that has just become active). */
  pendingWithGrantKey(key: string, now: number): ApprovalEntry[] {
    return this.list('pending', now).filter((e) => e.request.grantKey === key);
  }

  /** Entries approved under the grant of `id` whose own grant is still active (revoking `id` ends them too). */
  activeUnder(id: string, now: number): ApprovalEntry[] {
    return this.activeGrants(now).filter((e) => e.decision?.under === id);
  }

  /**
   * The revocation of the grant `id` was given under, when `id`'s own grant is active although that one is revoked:
   * the revocation raced the approval under it (published before its pod applied it, or by a replica that had not
   * seen the approval yet), so `id` was never revoked with it.
   */
  revokedRootOf(id: string, now: number): ApprovalRevokedMessage | undefined {
    const e = this.get(id, now);
    const root = e?.decision?.under;
    if (root === undefined || e?.grant?.state !== 'active') return undefined;
    return this.held.get(root)?.revoked;
  }

  countPending(now: number): number {
    let n = 0;
    for (const [id, h] of this.held) if (h.request && entryOf(id, h, now).state === 'pending') n++;
    return n;
  }

  /**
   * Throws unless `approver` may decide `id` now: the request exists, the approver is one of its `approvers` and
   * not the identity that asked, and it is still pending.
   */
  checkDecision(id: string, approver: Approver, now: number, grantFor?: string): ApprovalEntry {
    const e = this.checkApprover(id, approver, now);
    if (e.state !== 'pending')
      throw new CollectorError('COLLECTOR_APPROVAL_NOT_PENDING', `approval ${id} is ${e.state}`);
    if (grantFor !== undefined) {
      const asked = grantDurationMs(grantFor);
      const max = e.request.grantMax === undefined ? undefined : grantDurationMs(e.request.grantMax);
      if (max === undefined)
        throw new CollectorError(
          'COLLECTOR_APPROVAL_BAD_GRANT',
          `policy ${e.request.policy.name} allows no grant for this statement (approval.grants), so an approval covers it alone`,
        );
      if (asked === undefined || asked > max)
        throw new CollectorError(
          'COLLECTOR_APPROVAL_BAD_GRANT',
          `a grant must be a duration from 1s to ${e.request.grantMax} (the policy's approval.grants.maxDuration)`,
        );
    }
    return e;
  }

  /** Throws unless `approver` may end the grant of approval `id` now: an approver of its policy, the grant active. */
  checkRevoke(id: string, approver: Approver, now: number): ApprovalEntry {
    const e = this.checkApprover(id, approver, now);
    if (e.grant?.state !== 'active')
      throw new CollectorError(
        'COLLECTOR_APPROVAL_NOT_PENDING',
        e.grant ? `the grant of approval ${id} is ${e.grant.state}` : `approval ${id} gave no grant`,
      );
    return e;
  }

  private checkApprover(id: string, approver: Approver, now: number): ApprovalEntry {
    const e = this.get(id, now);
    if (!e) throw new CollectorError('COLLECTOR_APPROVAL_UNKNOWN', `no approval request ${id}`);
    const self = selfApprovalReason(e.request.identity, approver);
    if (self) throw new CollectorError('COLLECTOR_APPROVAL_SELF', `${self}: four-eyes rule`);
    if (!mayDecide(e.request, approver)) {
      throw new CollectorError(
        'COLLECTOR_APPROVAL_NOT_APPROVER',
        `${approver.name} is not an approver of policy ${e.request.policy.name}`,
      );
    }
    return e;
  }

  /** Forgets everything (the stream was deleted and created again). */
  clear(): void {
    this.held.clear();
  }

  private evict(now: number): void {
    this.expire(now);
    for (const id of this.held.keys()) {
      if (this.held.size <= this.maxEntries) break;
      this.held.delete(id);
    }
  }

  private expire(now: number): void {
    for (const [id, h] of this.held) {
      if (now - h.since <= this.maxAgeMs) break;
      this.held.delete(id);
    }
  }
}

function samePolicy(a: ApprovalRequestMessage, b: ApprovalRequestMessage): boolean {
  return (
    a.policy.name === b.policy.name && a.policy.hash === b.policy.hash && a.policy.namespace === b.policy.namespace
  );
}

/** The request's `approvers` were only checked to be an object: a shape compileSubjects cannot read decides no one. */
function mayDecide(request: ApprovalRequestMessage, approver: Approver): boolean {
  try {
    return isApprover(request.approvers, approver);
  } catch {
    return false;
  }
}

function entryOf(id: string, h: Held, now: number): ApprovalEntry {
  const request = h.request as ApprovalRequestMessage;
  const state: ApprovalState = h.closed
    ? h.closed.outcome
    : h.decision
      ? 'decided'
      : now > Date.parse(request.expiresAt)
        ? 'expired'
        : 'pending';
  const grant = h.decision?.grant ? grantOf(h, h.decision.grant.for, now) : undefined;
  return {
    id,
    state,
    request,
    ...(h.decision ? { decision: h.decision } : {}),
    ...(h.closed ? { closed: h.closed } : {}),
    ...(grant ? { grant } : {}),
    ...(h.notified ? { notifiedAt: h.notified.at } : {}),
  };
}

function grantOf(h: Held, asked: string, now: number): ApprovalGrantView {
  const until = h.closed?.outcome === 'approved' ? h.closed.grantUntil : undefined;
  const state: GrantState = !h.closed
    ? 'requested'
    : until === undefined
      ? 'refused'
      : h.revoked
        ? 'revoked'
        : now >= Date.parse(until)
          ? 'expired'
          : 'active';
  return { for: asked, state, ...(until ? { until } : {}), ...(h.revoked ? { revoked: h.revoked } : {}) };
}

/**
 * The four-eyes rule: the requester's user name may come from a claim they can edit (`usernameClaim: email`), so
 * `Alice@Example.com`, `alice+x@example.com` or `a1ice@example.com` asking does not make approver
 * `alice@example.com` someone else.
 */
function isRequester(request: ApprovalRequestMessage, approverName: string): boolean {
  const user = request.identity.user;
  return typeof user === 'string' ? sameIdentity(user, approverName) : user === approverName;
}
