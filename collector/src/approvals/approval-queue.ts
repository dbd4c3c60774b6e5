import type { KeyObject } from 'node:crypto';
import { EventEmitter } from 'node:events';
import {
  type ConsumerMessages,
  type JetStreamManager,
  type JsMsg,
  jetstream,
  jetstreamManager,
  StorageType,
} from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import {
  APPROVALS_STREAM,
  APPROVALS_SUBJECTS,
  type ApprovalDecisionMessage,
  type ApprovalRequestMessage,
  type ApprovalRevokedMessage,
  type Approver,
  approvalSubject,
  formatGrantDuration,
  type NatsUserFiles,
  parseApprovalSubject,
  selfApprovalReason,
  signDecision,
  signRevocation,
} from '@pgwarden/policy';
import { CollectorError } from '../errors.js';
import { addStreamIfMissing, closeWithin, connectCollectorNats } from '../ingest/nats-connect.js';
import { ApprovalBook, type ApprovalEntry, type ApprovalState } from './approval-book.js';

const NANOS_PER_MS = 1_000_000;
export const APPROVALS_MAX_AGE_MS = 7 * 86_400_000;

/**
 * Creates the approvals stream if missing: file storage, every `pgwarden.approval.>` subject, kept 7 days (far
 * beyond any `approval.timeout`), messages up to 1 MiB (a request carries the statement text). An existing
 * stream is left as it is, whoever created it, but gains the subjects it lacks (addStreamIfMissing).
 */
export function ensureApprovalsStream(jsm: JetStreamManager): Promise<void> {
  return addStreamIfMissing(jsm, {
    name: APPROVALS_STREAM,
    subjects: [APPROVALS_SUBJECTS],
    storage: StorageType.File,
    max_age: APPROVALS_MAX_AGE_MS * NANOS_PER_MS,
    max_bytes: -1,
    max_msg_size: 1024 * 1024,
    duplicate_window: 120_000 * NANOS_PER_MS,
    // Sidecars read back a decision they missed while disconnected with a direct get, which NATS lets a
    // permission restrict to the decision subjects (charts/pgwarden/templates/nats-auth.yaml).
    allow_direct: true,
  });
}

export interface ApprovalQueueOptions {
  url: string;
  /** The collector's NATS user (files username/password of a mounted Secret), read at each connect. */
  userFiles?: NatsUserFiles;
  maxEntries?: number;
  /** How long a decision's publish may wait for the stream's acknowledgement (default 5 s). */
  publishTimeoutMs?: number;
  /**
   * Ed25519 key every decision is signed with (policy decision-signature.ts), for sidecars whose policy lists its
   * public key in approval.decisionKeys.
   */
  signingKey?: KeyObject;
}

export interface ApprovalQueueEvents {
  status: [status: string];
  /** A message the contract's parsers refused (its subject; the body may hold SQL and is not repeated). */
  malformed: [subject: string];
  /**
   * A request or closing whose subject names another namespace than its request's policy: a sidecar's NATS user
   * reaching outside its namespace, or a forgery (ApprovalBook.closingFits). Ignored.
   */
  foreign: [subject: string];
  /** A decision this collector published and the stream acknowledged. */
  decided: [entry: ApprovalEntry];
}

/** JetStream's answer when `Nats-Expected-Last-Subject-Sequence` does not hold. */
const WRONG_LAST_SEQUENCE = 10071;

/**
 * Follows PGWARDEN_APPROVALS with an ordered consumer (an ephemeral, unacknowledged replay of the whole stream
 * that the client recreates at the next sequence after any gap), so every replica sees every message and a
 * restart rebuilds the queue; then publishes people's decisions into the same stream.
 */
export class ApprovalQueue extends EventEmitter<ApprovalQueueEvents> {
  readonly book: ApprovalBook;
  private nc: NatsConnection | null = null;
  private messages: ConsumerMessages | null = null;
  private running = false;
  private loop: Promise<void> | null = null;
  private up = false;
  private consuming = false;
  private caughtUp = false;
  /** Stream sequence of the last message applied; the consumer resumes after it. */
  private lastSeq = 0;
  /** Last stream sequence when the replay began: the queue is complete once it is applied. */
  private replayTo = 0;

  constructor(private readonly opts: ApprovalQueueOptions) {
    super();
    this.book = new ApprovalBook({ maxEntries: opts.maxEntries, maxAgeMs: APPROVALS_MAX_AGE_MS });
  }

  /** Connected, following the stream, and the replay of what it held at start is complete. */
  get ready(): boolean {
    return this.caughtUp && this.up && this.consuming && this.nc !== null && !this.nc.isClosed();
  }

  /** Stream sequence of the last message the book applied (0 before the first). */
  get appliedSeq(): number {
    return this.lastSeq;
  }

  start(): void {
    this.running = true;
    this.loop = this.connectAndRun();
  }

  list(state: ApprovalState | 'all'): ApprovalEntry[] {
    this.assertLoaded();
    return this.book.list(state, Date.now());
  }

  get(id: string): ApprovalEntry | undefined {
    this.assertLoaded();
    return this.book.get(id, Date.now());
  }

  activeGrants(): ApprovalEntry[] {
    this.assertLoaded();
    return this.book.activeGrants(Date.now());
  }

  /**
   * Publishes `approver`'s decision once the book allows it, and returns the entry as it now stands. The publish
   * expects no earlier message on the decision subject, so of two replicas (or two people) deciding at once the
   * stream takes one and the other gets COLLECTOR_APPROVAL_NOT_PENDING.
   */
  async decide(
    id: string,
    decision: ApprovalDecisionMessage['decision'],
    approver: Approver,
    reason?: string,
    grantFor?: string,
  ): Promise<ApprovalEntry> {
    const nc = this.connected();
    if (grantFor !== undefined && decision !== 'approved')
      throw new CollectorError('COLLECTOR_APPROVAL_BAD_GRANT', 'only an approval can give a grant');
    const held = this.book.checkDecision(id, approver, Date.now(), grantFor);
    const unsigned: ApprovalDecisionMessage = {
      v: 1,
      id,
      decision,
      by: decidedBy(held.request, approver),
      ...(reason ? { reason } : {}),
      at: new Date().toISOString(),
      ...(grantFor !== undefined ? { grant: { for: grantFor } } : {}),
    };
    await this.publishDecision(nc, unsigned);
    const entry = this.book.get(id, Date.now()) as ApprovalEntry;
    this.emit('decided', entry);
    return entry;
  }

  /**
   * Ends the grant approval `id` gave, in the sidecar that holds it (it checks the approver, and the signature
   * where its policy lists decision keys). One revocation per approval: a second gets COLLECTOR_APPROVAL_NOT_PENDING.
   */
  async revoke(id: string, approver: Approver, reason?: string): Promise<ApprovalEntry> {
    const nc = this.connected();
    this.book.checkRevoke(id, approver, Date.now());
    const unsigned: ApprovalRevokedMessage = {
      v: 1,
      id,
      by: { name: approver.name, groups: [...approver.groups] },
      ...(reason ? { reason } : {}),
      at: new Date().toISOString(),
    };
    await this.publishRevocation(nc, unsigned);
    // The approvals given under this grant in other pods end with it; those not active yet, once they are.
    for (const e of this.book.activeUnder(id, Date.now())) {
      await this.publishRevocation(nc, derivedRevocation(unsigned, e.id)).catch((err: unknown) => {
        if (!isNotPending(err)) throw err;
      });
    }
    return this.book.get(id, Date.now()) as ApprovalEntry;
  }

  /**
   * Revokes `id`'s grant when the grant it was given under is revoked already (ApprovalBook.revokedRootOf). Every
   * replica tries; the stream takes one revocation, and the others stay quiet.
   */
  private async revokeUnderRevoked(id: string): Promise<void> {
    const nc = this.nc;
    if (!nc || nc.isClosed() || !this.caughtUp) return;
    const root = this.book.revokedRootOf(id, Date.now());
    if (!root) return;
    try {
      await this.publishRevocation(nc, derivedRevocation({ ...root, at: new Date().toISOString() }, id));
    } catch (err) {
      if (!isNotPending(err))
        this.emit('status', `could not revoke ${id} under revoked grant ${root.id}: ${(err as Error).message}`);
    }
  }

  /**
   * Approves pending request `id` when an active grant covers it (ApprovalBook.coveringGrant): the same statement
   * shape from the same identity under the same policy, held in another pod than the one the grant was given to.
   * Decided in the grant approver's name, marked `under` the grant, for the grant's remaining time; replicas race
   * as people do (the stream takes one decision), and the losers stay quiet.
   */
  private async approveUnderGrant(id: string): Promise<void> {
    const nc = this.nc;
    // Not `ready`: the replay can complete before the consumer counts as consuming (markLoaded from follow()).
    if (!nc || nc.isClosed() || !this.caughtUp) return;
    const now = Date.now();
    const g = this.book.coveringGrant(id, now);
    const by = g?.decision?.by;
    const remaining = g?.grant?.until ? Date.parse(g.grant.until) - now : 0;
    if (!g || !by || remaining < 1000) return;
    // Equal grant keys mean the same identity, as the requesting sidecar computed them; a request whose identity
    // could be the grant approver's own is left to a person all the same.
    const held = this.book.get(id, now);
    if (!held || selfApprovalReason(held.request.identity, by)) return;
    const root = g.decision?.under ?? g.id;
    const unsigned: ApprovalDecisionMessage = {
      v: 1,
      id,
      decision: 'approved',
      by: decidedBy(held.request, by),
      reason: `under the grant of approval ${root}`,
      at: new Date(now).toISOString(),
      grant: { for: formatGrantDuration(remaining) },
      under: root,
    };
    try {
      await this.publishDecision(nc, unsigned);
    } catch (err) {
      if (!isNotPending(err))
        this.emit('status', `could not approve ${id} under grant ${root}: ${(err as Error).message}`);
      return;
    }
    const entry = this.book.get(id, Date.now());
    if (entry) this.emit('decided', entry);
  }

  /** After a request arrives, or a grant becomes active: what the grants now cover is approved under them. */
  private coverPending(subject: string): void {
    const named = parseApprovalSubject(subject);
    if (!named || !this.caughtUp) return;
    const now = Date.now();
    if (named.kind === 'request') void this.approveUnderGrant(named.id);
    else if (named.kind === 'closed') {
      void this.revokeUnderRevoked(named.id);
      const key = this.book.get(named.id, now)?.request.grantKey;
      if (key !== undefined) for (const e of this.book.pendingWithGrantKey(key, now)) void this.approveUnderGrant(e.id);
    }
  }

  private connected(): NatsConnection {
    const nc = this.nc;
    if (!nc || !this.ready) throw unavailable('NATS is not connected or the approval queue is still loading');
    return nc;
  }

  /** Signs a decision when the collector has a signing key, then publishes it as its id's only decision. */
  private publishDecision(nc: NatsConnection, d: ApprovalDecisionMessage): Promise<void> {
    const msg = this.opts.signingKey ? signDecision(d, this.opts.signingKey) : d;
    return this.publishOnce(nc, approvalSubject('decision', d.id), JSON.stringify(msg), 'a decision');
  }

  /** Signs a revocation (in its own domain) when the collector has a key, then publishes it as its id's only one. */
  private publishRevocation(nc: NatsConnection, r: ApprovalRevokedMessage): Promise<void> {
    const msg = this.opts.signingKey ? signRevocation(r, this.opts.signingKey) : r;
    return this.publishOnce(nc, approvalSubject('revoked', r.id), JSON.stringify(msg), 'a revocation');
  }

  /** Publishes the first message on `subject`, or fails with NOT_PENDING when the stream has one already. */
  private async publishOnce(nc: NatsConnection, subject: string, body: string, what: string): Promise<void> {
    try {
      await jetstream(nc, { timeout: this.opts.publishTimeoutMs ?? 5000 }).publish(subject, body, {
        expect: { lastSubjectSequence: 0 },
      });
    } catch (err) {
      if ((err as { code?: unknown }).code === WRONG_LAST_SEQUENCE)
        throw new CollectorError(
          'COLLECTOR_APPROVAL_NOT_PENDING',
          `approval ${subject.split('.').pop()} already has ${what} in the stream (made meanwhile)`,
        );
      throw unavailable(`publishing ${what} failed: ${(err as Error).message}`, err);
    }
    // The consumer applies the same message again when it arrives: the first stays, so this is idempotent.
    this.book.apply(subject, body, Date.now());
  }

  private assertLoaded(): void {
    if (!this.caughtUp) throw unavailable('the approval queue is still loading from NATS');
  }

  private async connectAndRun(): Promise<void> {
    const nc = await connectCollectorNats({
      url: this.opts.url,
      name: 'pgwarden-collector-approvals',
      userFiles: this.opts.userFiles,
      running: () => this.running,
      onStatus: (s) => this.emit('status', s),
      onUp: (up) => {
        this.up = up;
      },
    });
    if (!nc) return;
    this.nc = nc;
    await this.run(nc);
  }

  /** Supervises the consumer: a failure (server restart, stream deleted) rebuilds it after a pause. */
  private async run(nc: NatsConnection): Promise<void> {
    while (this.running && !nc.isClosed()) {
      try {
        this.messages = await this.follow(nc);
        if (!this.running) {
          this.messages.stop();
          break;
        }
        this.consuming = true;
        this.emit('status', 'consuming');
        const ended = await this.messages.closed();
        if (ended instanceof Error) throw ended;
      } catch (err) {
        if (!this.running) break;
        this.emit('status', `approvals consumer error: ${(err as Error).message}`);
      }
      this.consuming = false;
      if (this.running) await pause(500);
    }
  }

  private async follow(nc: NatsConnection): Promise<ConsumerMessages> {
    const jsm = await jetstreamManager(nc);
    await ensureApprovalsStream(jsm);
    const { state } = await jsm.streams.info(APPROVALS_STREAM);
    if (state.last_seq < this.lastSeq) {
      // The stream was deleted and created again: its sequences start over, and so does the book.
      this.book.clear();
      this.lastSeq = 0;
      this.caughtUp = false;
    }
    this.replayTo = state.last_seq;
    if (state.messages === 0 || this.lastSeq >= this.replayTo) this.markLoaded();
    const consumer = await jetstream(nc).consumers.get(APPROVALS_STREAM, {
      filter_subjects: APPROVALS_SUBJECTS,
      opt_start_seq: this.lastSeq + 1,
    });
    return consumer.consume({ callback: (m) => this.receive(m) });
  }

  private receive(m: JsMsg): void {
    this.lastSeq = m.seq;
    const applied = this.book.apply(m.subject, m.data, m.time.getTime());
    if (applied === 'malformed') this.emit('malformed', m.subject);
    else if (applied === 'foreign') this.emit('foreign', m.subject);
    // Until the replay is done nothing is approved under a grant: markLoaded then looks at every pending request.
    if (!this.caughtUp && (m.seq >= this.replayTo || m.info.pending === 0)) this.markLoaded();
    else if (applied === 'applied') this.coverPending(m.subject);
  }

  private markLoaded(): void {
    if (this.caughtUp) return;
    this.caughtUp = true;
    this.emit('status', 'loaded');
    // Requests that arrived while this replica was away and that an active grant covers.
    const now = Date.now();
    for (const e of this.book.list('pending', now)) if (e.request.grantKey) void this.approveUnderGrant(e.id);
    // Grants that became active while no replica ran, under one revoked meanwhile.
    for (const e of this.book.activeGrants(now)) if (e.decision?.under) void this.revokeUnderRevoked(e.id);
  }

  async close(): Promise<void> {
    this.running = false;
    this.messages?.stop();
    if (this.nc) await closeWithin(this.nc);
    await this.loop;
    this.nc = null;
  }
}

/**
 * The decision's `by`: name and groups, and for a sidecar that reads them (the request's `approverIdentities`) the
 * approver's OIDC subjects and service accounts, so that its own four-eyes check knows them too. Each list only when
 * non-empty, and without repeats: a decision by an approver without any is the same message as before.
 */
function decidedBy(request: ApprovalRequestMessage, approver: Approver): Approver {
  const by: Approver = { name: approver.name, groups: [...approver.groups] };
  if (request.approverIdentities !== true) return by;
  const seen = new Set<string>();
  const oidc = (approver.oidc ?? []).filter((b) => {
    const key = JSON.stringify([b.issuer, b.subject]);
    return !seen.has(key) && seen.add(key);
  });
  const accounts = [...new Set(approver.serviceAccounts ?? [])];
  return {
    ...by,
    ...(oidc.length ? { oidc: oidc.map((b) => ({ issuer: b.issuer, subject: b.subject })) } : {}),
    ...(accounts.length ? { serviceAccounts: accounts } : {}),
  };
}

/** The revocation of approval `id`, given under the grant that `root` (its revocation) ends. */
function derivedRevocation(root: ApprovalRevokedMessage, id: string): ApprovalRevokedMessage {
  // Built afresh: the root's signature covers the root's id, and publishRevocation signs this one.
  return {
    v: 1,
    id,
    by: { name: root.by.name, groups: [...root.by.groups] },
    at: root.at,
    reason:
      `the grant of approval ${root.id} it was given under was revoked${root.reason ? `: ${root.reason}` : ''}`.slice(
        0,
        1024,
      ),
  };
}

/** Another replica or person published first: for a decision or revocation made on the side, nothing to report. */
const isNotPending = (err: unknown) => (err as CollectorError).code === 'COLLECTOR_APPROVAL_NOT_PENDING';

const unavailable = (message: string, cause?: unknown) =>
  new CollectorError('COLLECTOR_APPROVAL_UNAVAILABLE', message, { cause });

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
