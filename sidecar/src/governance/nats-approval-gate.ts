import { createHash, randomBytes } from 'node:crypto';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import {
  APPROVALS_STREAM,
  type ApprovalClosedMessage,
  type ApprovalClosedOutcome,
  type ApprovalRequestMessage,
  approvalSubject,
  decisionVerifyKeys,
  formatAuditTime,
  formatGrantDuration,
  grantDurationMs,
  isApprover,
  parseApprovalDecision,
  parseApprovalRevoked,
  redactSecrets,
  selfApprovalReason,
  sidecarApprovalSubject,
  verifyDecision,
  verifyRevocation,
} from '@pgwarden/policy';
import type { AuditSink } from '../audit/audit-sink.js';
import { NatsAuditSink } from '../audit/nats-sink.js';
import type { ApprovalGate, ApprovalOutcome, ApprovalRequest } from './approval-gate.js';
import { ApprovalGrants, type Grant } from './approval-grants.js';
import type { GovernanceEvent } from './governance-events.js';

export interface NatsApprovalGateOptions {
  /** The live NATS connection (the audit sink's), or undefined while there is none. */
  connection(): NatsConnection | undefined;
  /** How long publishing the request may take before the hold is refused (default 5 s). */
  publishTimeoutMs?: number;
  log?: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
  /** The grants approvals gave (tests pass their own to read the clock). */
  grants?: ApprovalGrants;
}

/** Statement text in a request: as much as an operator needs to judge it, no more than one NATS message should carry. */
const MAX_SQL_CHARS = 64 * 1024;

/**
 * Holds a `review` statement in the collector's approval queue (policy/src/approvals/approval-messages.ts): publishes
 * the request to JetStream, waits on its decision subject, and applies a decision only from someone the policy's
 * `approval.approvers` names, never from the person whose session asked (four eyes). The collector checks both too;
 * this is the check that counts, because the sidecar is where the statement runs.
 *
 * Fails closed: no connection, or a request JetStream did not acknowledge (no stream: no collector has started),
 * rejects the statement at once instead of holding it for nobody. Every end (applied decision, timeout, client gone)
 * is published as `closed`, so the queue stops offering a statement that no longer waits.
 *
 * The decision arrives on a plain subscription; one published while this connection was down is read back from the
 * stream (direct get of the last message on the decision subject) after each reconnect, so an approval given during
 * a NATS blip is not lost to a timeout.
 */
export function natsApprovalGate(opts: NatsApprovalGateOptions): ApprovalGate {
  const log = opts.log ?? (() => {});
  const publishTimeoutMs = opts.publishTimeoutMs ?? 5000;
  const grants = opts.grants ?? new ApprovalGrants();
  const listeners: ((e: GovernanceEvent) => void)[] = [];
  const emit = (e: GovernanceEvent) => {
    for (const l of listeners) l(e);
  };
  // One status watcher per connection, calling back every hold waiting on it after a reconnect.
  const watchers = new WeakMap<NatsConnection, Set<() => Promise<void>>>();
  const reconnects = (nc: NatsConnection) => {
    let set = watchers.get(nc);
    if (!set) {
      const holds = new Set<() => Promise<void>>();
      set = holds;
      watchers.set(nc, holds);
      void (async () => {
        for await (const s of nc.status()) if (s.type === 'reconnect') for (const readBack of holds) void readBack();
      })();
    }
    return set;
  };
  /**
   * Applies a revocation if it ends a live grant and comes from someone who may end it. No four-eyes check here: a
   * revocation only takes a grant away, so even the requester ending its own grant is the safe direction.
   */
  const considerRevocation = (data: Uint8Array) => {
    const r = parseApprovalRevoked(data);
    const g = r && grants.get(r.id);
    if (!r || !g) return;
    const keys = g.decisionKeys?.length ? decisionVerifyKeys(g.decisionKeys) : undefined;
    if (keys && !verifyRevocation(r, keys)) {
      log('warn', 'approval: ignored a revocation not signed by a key in approval.decisionKeys', { id: r.id });
      return;
    }
    if (!isApprover(g.approvers, r.by)) {
      log('warn', 'approval: ignored a revocation by someone the policy does not name as approver', {
        id: r.id,
        by: r.by.name,
      });
      return;
    }
    if (!grants.revoke(r.id)) return;
    log('info', 'approval: grant revoked', { id: r.id, by: r.by.name });
    emit({
      type: 'approval.grant_revoked',
      approvalId: r.id,
      by: r.by.name,
      ...(r.reason ? { reason: r.reason } : {}),
    });
  };
  // One subscription per connection to every revocation, from the first grant on: grants are few and revocations
  // rarer, and one wildcard keeps a sidecar with many grants at one subscription.
  const revocationWatch = new WeakSet<NatsConnection>();
  const watchRevocations = (nc: NatsConnection) => {
    if (revocationWatch.has(nc)) return;
    revocationWatch.add(nc);
    const sub = nc.subscribe(approvalSubject('revoked', '*'));
    void (async () => {
      for await (const m of sub) considerRevocation(m.data);
    })();
    // A revocation published while this connection was down is read back after the reconnect, as decisions are.
    reconnects(nc).add(async () => {
      for (const id of grants.ids()) {
        try {
          const jsm = await jetstreamManager(nc, { timeout: publishTimeoutMs, checkAPI: false });
          const stored = await jsm.direct.getMessage(APPROVALS_STREAM, {
            last_by_subj: approvalSubject('revoked', id),
          });
          if (stored) considerRevocation(stored.data);
        } catch (err) {
          if (!/no message found|not found/i.test((err as Error).message))
            log('warn', 'approval: could not read back a revocation', { id, err: (err as Error).message });
        }
      }
    });
  };
  return {
    granted: (key) => grants.find(key),
    endGrants: (policy) => {
      for (const g of grants.endPolicy(policy)) {
        log('info', 'approval: grant ended by the suspension of its policy', { id: g.id, policy: policy.name });
        emit({ type: 'approval.grant_revoked', approvalId: g.id, by: 'pgwarden', reason: 'policy suspended' });
      }
    },
    listen: (l) => {
      listeners.push(l);
    },
    request: (req) =>
      new Promise<ApprovalOutcome>((resolve) => {
        // An approver must see what runs: a statement longer than a request shows is refused, not shown cut.
        const shown = req.sql.length + (req.params ?? []).reduce((n, v) => n + (v?.length ?? 0), 0);
        if (shown > MAX_SQL_CHARS) {
          resolve({
            decision: 'unavailable',
            reason: `the statement${req.params ? ' and its values' : ''} is ${shown} characters long, more than the ${MAX_SQL_CHARS} an approver is shown`,
          });
          return;
        }
        const nc = opts.connection();
        if (!nc || nc.isClosed()) {
          resolve(unavailable('NATS is not connected'));
          return;
        }
        const js = jetstream(nc, { timeout: publishTimeoutMs });
        let sub: Subscription | undefined;
        let readBack: (() => Promise<void>) | undefined;
        let done = false;
        const closeNonce = randomBytes(8).toString('hex');
        const finish = (outcome: ApprovalOutcome, closed: ApprovalClosedOutcome, publishClosed = true) => {
          if (done) return;
          done = true;
          if (readBack) reconnects(nc).delete(readBack);
          clearTimeout(timer);
          req.signal.removeEventListener('abort', onAbort);
          sub?.unsubscribe();
          if (publishClosed) {
            const msg: ApprovalClosedMessage = {
              v: 1,
              id: req.id,
              outcome: closed,
              at: new Date().toISOString(),
              ...(outcome.decision === 'approved' || outcome.decision === 'rejected'
                ? { by: approverOf(outcome.by) }
                : {}),
              ...(outcome.decision === 'approved' && outcome.grantUntil !== undefined
                ? { grantUntil: new Date(outcome.grantUntil).toISOString() }
                : {}),
              ...(outcome.decision === 'stale' ? { reason: outcome.reason.slice(0, 256) } : {}),
            };
            // JetStream's duplicate window is stream-wide: with a msgID anyone who learned the request id could
            // predict, a closing published first on any subject would have this one dropped as its duplicate.
            js.publish(sidecarApprovalSubject('closed', req.policy.namespace, req.id), JSON.stringify(msg), {
              msgID: `${req.id}.closed.${closeNonce}`,
            }).catch((err: Error) =>
              log('warn', 'approval: could not publish the end of a hold', { id: req.id, err: err.message }),
            );
          }
          resolve(outcome);
        };
        const timer = setTimeout(() => finish({ decision: 'timeout' }, 'expired'), req.timeoutMs);
        const onAbort = () => finish({ decision: 'timeout' }, 'withdrawn');
        req.signal.addEventListener('abort', onAbort, { once: true });
        if (req.signal.aborted) return onAbort();

        // Subscribe before publishing: a decision cannot arrive before anyone could see the request, but a fast
        // one could arrive before a subscription made after the publish's acknowledgement.
        sub = nc.subscribe(approvalSubject('decision', req.id));
        const keys = req.decisionKeys?.length ? decisionVerifyKeys(req.decisionKeys) : undefined;
        /** Applies a decision message if it is one that counts; returns whether the hold ended. */
        const consider = (data: Uint8Array): boolean => {
          const d = parseApprovalDecision(data);
          if (!d || d.id !== req.id) {
            log('warn', 'approval: ignored a malformed decision', { id: req.id });
            return false;
          }
          if (keys && !verifyDecision(d, keys)) {
            log('warn', 'approval: ignored a decision not signed by a key in approval.decisionKeys', {
              id: req.id,
              by: d.by.name,
            });
            return false;
          }
          if (!isApprover(req.approvers, d.by)) {
            log('warn', 'approval: ignored a decision by someone the policy does not name as approver', {
              id: req.id,
              by: d.by.name,
            });
            return false;
          }
          // The collector's rule, by the same code: the approver's name (in any spelling that can pass for the
          // requester's), OIDC subjects and service accounts against who asked. A collector that lets a
          // self-approval through (misconfigured, or an older replica with a bug) does not get it past here.
          const self = selfApprovalReason(req.identity, d.by);
          if (self) {
            log('warn', 'approval: ignored a decision by the requester itself', {
              id: req.id,
              by: d.by.name,
              why: self,
            });
            return false;
          }
          if (d.decision === 'approved') {
            // Approved under a policy no longer in force: the statement is denied, so neither the closing nor a
            // grant may say it was approved (the collector would list the grant as active and approve other pods'
            // statements under it).
            const stale = req.stale?.();
            if (stale !== undefined) {
              log('info', 'approval: an approval arrived after a reload of the policy it was asked under', {
                id: req.id,
                by: d.by.name,
              });
              finish({ decision: 'stale', by: d.by.name, reason: stale }, 'denied');
              return true;
            }
            const grant = d.grant && req.grant ? grantOf(req, d.by.name, grantDurationMs(d.grant.for)) : undefined;
            if (grant) {
              grants.add(grant);
              watchRevocations(nc);
              log('info', 'approval: grant given', { id: req.id, by: d.by.name, until: new Date(grant.until) });
            } else if (d.grant) {
              // The policy allows no grant for this statement (or none at all): the approval covers it alone.
              log('warn', 'approval: a grant the policy does not allow was asked for; approved this statement only', {
                id: req.id,
                by: d.by.name,
              });
            }
            finish(
              { decision: 'approved', by: d.by.name, grantUntil: grant?.until, ...(d.under ? { under: d.under } : {}) },
              'approved',
            );
          } else finish({ decision: 'rejected', by: d.by.name, reason: d.reason }, 'rejected');
          return true;
        };
        void (async () => {
          for await (const m of sub) if (consider(m.data)) return;
        })();
        readBack = async () => {
          if (done) return;
          try {
            const jsm = await jetstreamManager(nc, { timeout: publishTimeoutMs, checkAPI: false });
            const stored = await jsm.direct.getMessage(APPROVALS_STREAM, {
              last_by_subj: approvalSubject('decision', req.id),
            });
            if (stored && !done) consider(stored.data);
          } catch (err) {
            // Not found, or a stream without direct gets: the live subscription is all there is.
            if (!/no message found|not found/i.test((err as Error).message))
              log('warn', 'approval: could not read back a decision', { id: req.id, err: (err as Error).message });
          }
        };
        reconnects(nc).add(readBack);

        js.publish(
          sidecarApprovalSubject('request', req.policy.namespace, req.id),
          JSON.stringify(requestMessage(req)),
          {
            msgID: `${req.id}.request`,
          },
        ).catch((err: Error) => {
          log('warn', 'approval: the approval queue did not take the request', { id: req.id, err: err.message });
          // Nothing reached the queue, so there is nothing to close there.
          finish(unavailable(err.message), 'refused', false);
        });
      }),
  };
}

/** The grant an approval gives: as long as the approver asked, never longer than the policy's maxDuration. */
function grantOf(req: ApprovalRequest, by: string, askedMs: number | undefined): Grant | undefined {
  if (!req.grant || askedMs === undefined) return undefined;
  return {
    id: req.id,
    by,
    until: Date.now() + Math.min(askedMs, req.grant.maxMs),
    key: req.grant.key,
    approvers: req.approvers,
    decisionKeys: req.decisionKeys,
    policy: { namespace: req.policy.namespace, name: req.policy.name },
  };
}

function requestMessage(req: ApprovalRequest): ApprovalRequestMessage {
  const now = Date.now();
  const sql = redactSecrets(req.sql);
  return {
    v: 1,
    id: req.id,
    session: req.sessionId,
    policy: req.policy,
    rule: req.rule,
    // Redaction can only shorten it; request() refused anything longer.
    sql: sql.slice(0, MAX_SQL_CHARS),
    ...(req.params ? { params: req.params.map((v) => (v === null ? null : redactSecrets(v))) } : {}),
    ...(req.params && req.paramFormats?.length === req.params.length ? { paramFormats: req.paramFormats } : {}),
    identity: { ...req.identity },
    approvers: req.approvers,
    approverIdentities: true,
    requestedAt: formatAuditTime(now * 1000),
    expiresAt: formatAuditTime((now + req.timeoutMs) * 1000),
    ...(req.grant
      ? {
          grantMax: formatGrantDuration(req.grant.maxMs),
          fingerprint: req.grant.fingerprint,
          // A digest, not the key: the collector only compares keys, and the key names the identity in full.
          grantKey: createHash('sha256').update(req.grant.key).digest('hex'),
        }
      : {}),
  };
}

/** The approver as recorded: the sidecar keeps only the name of who decided (the groups were checked already). */
const approverOf = (name: string) => ({ name, groups: [] });

function unavailable(why: string): ApprovalOutcome {
  return { decision: 'unavailable', reason: `the approval queue is unavailable (${why})` };
}

/**
 * The approval gate `pgwarden sidecar` uses: the NATS gate over the audit sink's own connection when the sink is NATS
 * (one connection, one set of credentials), else undefined (nobody can approve: held statements are denied after
 * approval.timeout).
 */
export function approvalGateForSink(sink: AuditSink, log?: NatsApprovalGateOptions['log']): ApprovalGate | undefined {
  return sink instanceof NatsAuditSink ? natsApprovalGate({ connection: () => sink.natsConnection(), log }) : undefined;
}
