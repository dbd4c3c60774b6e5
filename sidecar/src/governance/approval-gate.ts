import type { Subjects } from '@pgwarden/policy';
import type { Identity } from '../proxy/hooks.js';
import type { Grant, GrantScope } from './approval-grants.js';
import type { GovernanceEvent } from './governance-events.js';

export interface ApprovalRequest {
  /** A UUID, also the id of the audit trail's approval events. */
  id: string;
  sessionId: string;
  policy: { name: string; hash: string; namespace?: string };
  /** The policy's approval.approvers: the only people whose decision counts. */
  approvers: Subjects;
  /**
   * The policy's approval.decisionKeys (Ed25519 public keys, PEM): when any, only a decision signed by one of them
   * counts (policy decision-signature.ts).
   */
  decisionKeys?: readonly string[];
  rule: string;
  sql: string;
  /** The execution's bound values, for a prepared statement (StatementRequest.params). */
  params?: (string | null)[];
  /** Each value's format (StatementRequest.paramFormats); absent when `params` is a note. */
  paramFormats?: ('text' | 'binary')[];
  identity: Identity;
  timeoutMs: number;
  /**
   * Present when the policy allows grants (approval.grants) and this statement may be covered by one: an approval
   * that asks for a grant then also covers later statements with this key (approval-grants.ts).
   */
  grant?: GrantScope;
  /** Aborted when the client session ends while the statement is held. */
  signal: AbortSignal;
  /**
   * Why an approval arriving now can no longer be applied (the policy the statement was held under was reloaded:
   * STALE_APPROVAL_REASON), or undefined. Asked when the approval arrives, before the hold's closing is published,
   * so the closing says what happens to the statement: `denied`, not `approved`.
   */
  stale?(): string | undefined;
}

export type ApprovalOutcome =
  /** `grantUntil`: the approval also gave a grant, ending then (epoch ms). */
  /** `under`: nobody decided this one; the collector approved it under that approval's grant (another pod's). */
  | { decision: 'approved'; by: string; grantUntil?: number; under?: string }
  | { decision: 'rejected'; by: string; reason?: string }
  /** `by` approved, but too late to apply (ApprovalRequest.stale): the statement is denied, no grant given. */
  | { decision: 'stale'; by: string; reason: string }
  | { decision: 'timeout' }
  /** The queue could not take the request (NATS down, no stream): nobody decided, the statement is denied at once. */
  | { decision: 'unavailable'; reason: string };

/** Where held (`review`) statements wait: nats-approval-gate.ts with a NATS audit sink, else noApproversGate. */
export interface ApprovalGate {
  request(req: ApprovalRequest): Promise<ApprovalOutcome>;
  /** The live grant covering a statement with this grant key, if the gate keeps grants. */
  granted?(key: string): Grant | undefined;
  /**
   * Ends every grant given under `policy`: a suspension (live or spec.suspend) is a stop, and the agent asks again
   * after the resume.
   */
  endGrants?(policy: { namespace?: string; name: string }): void;
  /** Registers a listener for the gate's own events (a grant revoked). */
  listen?(listener: (e: GovernanceEvent) => void): void;
}

/**
 * The gate until approvers are wired: nobody can approve, so every held statement waits out `approval.timeout`
 * and becomes a denial. Ending the session releases it at once.
 */
export const noApproversGate: ApprovalGate = {
  request: (req) =>
    new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        resolve({ decision: 'timeout' });
      };
      const timer = setTimeout(done, req.timeoutMs);
      req.signal.addEventListener('abort', done, { once: true });
    }),
};
