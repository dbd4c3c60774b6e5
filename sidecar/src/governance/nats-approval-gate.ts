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
  isApprover,
  parseApprovalDecision,
  redactSecrets,
  verifyDecision,
} from '@pgwarden/policy';
import type { AuditSink } from '../audit/audit-sink.js';
import { NatsAuditSink } from '../audit/nats-sink.js';
import type { ApprovalGate, ApprovalOutcome, ApprovalRequest } from './approval-gate.js';

export interface NatsApprovalGateOptions {
  /** The live NATS connection (the audit sink's), or undefined while there is none. */
  connection(): NatsConnection | undefined;
  /** How long publishing the request may take before the hold is refused (default 5 s). */
  publishTimeoutMs?: number;
  log?: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
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
  return {
    request: (req) =>
      new Promise<ApprovalOutcome>((resolve) => {
        const nc = opts.connection();
        if (!nc || nc.isClosed()) {
          resolve(unavailable('NATS is not connected'));
          return;
        }
        const js = jetstream(nc, { timeout: publishTimeoutMs });
        let sub: Subscription | undefined;
        let readBack: (() => Promise<void>) | undefined;
        let done = false;
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
            };
            js.publish(approvalSubject('closed', req.id), JSON.stringify(msg), { msgID: `${req.id}.closed` }).catch(
              (err: Error) =>
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
          if (req.identity.user !== undefined && d.by.name === req.identity.user) {
            log('warn', 'approval: ignored a decision by the requester itself', { id: req.id, by: d.by.name });
            return false;
          }
          if (d.decision === 'approved') finish({ decision: 'approved', by: d.by.name }, 'approved');
          else finish({ decision: 'rejected', by: d.by.name, reason: d.reason }, 'rejected');
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

        js.publish(approvalSubject('request', req.id), JSON.stringify(requestMessage(req)), {
          msgID: `${req.id}.request`,
        }).catch((err: Error) => {
          log('warn', 'approval: the approval queue did not take the request', { id: req.id, err: err.message });
          // Nothing reached the queue, so there is nothing to close there.
          finish(unavailable(err.message), 'refused', false);
        });
      }),
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
    sql: sql.length <= MAX_SQL_CHARS ? sql : `${sql.slice(0, MAX_SQL_CHARS)}…`,
    identity: { ...req.identity },
    approvers: req.approvers,
    requestedAt: formatAuditTime(now * 1000),
    expiresAt: formatAuditTime((now + req.timeoutMs) * 1000),
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
