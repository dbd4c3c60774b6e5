import type { AuditControl } from '@pgwarden/policy';
import type { AuthEvent, WorkloadIdentity } from '../identity/index.js';
import type { UnreadableMaskingKey } from '../masking/masking-keys.js';
import type { PolicySourceEvent } from '../policy-source/index.js';

export interface PolicyRef {
  name: string;
  hash: string;
}

/**
 * Every login the sidecar refused (identity refusals and its own: no policy loaded, misconfigured identity), with
 * what the client claimed in its startup packet. Never carries the password or token. The audit recorder turns it
 * into an `auth.refused` event in the sidecar's own chain.
 */
export interface LoginRefusedEvent {
  type: 'login.refused';
  reason: string;
  /** SQLSTATE sent to the client. */
  code: string;
  /** The message sent to the client (safe: identity messages never quote the token). */
  message: string;
  mode?: 'workload' | 'oidc';
  client: { address: string; port: number };
  user: string;
  database: string;
  application?: string;
  workload: WorkloadIdentity;
  /** The policy of the listener that refused (absent while none is loaded). */
  policy?: PolicyRef;
}

/** Typed events the governance emits; logging, metrics and audit subscribe (nothing here logs by itself). */
export type GovernanceEvent =
  | PolicySourceEvent
  | AuthEvent
  | LoginRefusedEvent
  | {
      type: 'statement.held';
      session: string;
      policy: PolicyRef;
      rule?: string;
      timeoutMs: number;
      /** The approval queue's id for this hold (approval-gate.ts). */
      approvalId?: string;
    }
  | {
      type: 'statement.released';
      session: string;
      policy: PolicyRef;
      rule?: string;
      /** `stale`: approved, but under a policy reloaded during the hold; the statement was denied. */
      outcome: 'approved' | 'rejected' | 'stale' | 'timeout' | 'unavailable';
      heldMs: number;
      approvalId?: string;
      /** Who approved or rejected it. */
      by?: string;
      reason?: string;
      /** The approval also gave a grant, ending then (epoch ms). */
      grantUntil?: number;
    }
  /** A statement held for review ran at once, covered by the grant approval `approvalId` gave (approval-grants.ts). */
  | {
      type: 'statement.granted';
      session: string;
      policy: PolicyRef;
      rule?: string;
      approvalId: string;
      by: string;
    }
  /** An approver ended the grant of approval `approvalId` before its time. */
  | { type: 'approval.grant_revoked'; approvalId: string; by: string; reason?: string }
  /**
   * guardrails.rateLimit: a statement was denied (53400) or made to wait `waitMs` for its turn (delayed). Never
   * carries the SQL; the statement's own audit event records the denial or the wait (timing.heldMs).
   */
  | {
      type: 'statement.rate_limited';
      session: string;
      policy: PolicyRef;
      outcome: 'denied' | 'delayed';
      waitMs: number;
    }
  /** The analysis or decision threw: the statement was denied (fail closed). Never carries the SQL. */
  | { type: 'statement.check_failed'; session: string; error: string }
  /** A control message from the collector was applied (governance/nats-control.ts): audited as `control.applied`. */
  | { type: 'control.applied'; control: AuditControl }
  /**
   * A control message was not applied: malformed, on the wrong subject, without a valid signature where the policy
   * requires one, or for a policy this sidecar does not serve. Counted and logged, not audited (anyone allowed to
   * publish could otherwise fill the chain).
   */
  | { type: 'control.refused'; reason: 'malformed' | 'subject' | 'signature'; subject: string; kind?: string }
  /**
   * At a policy load: keySecretRefs of its MaskingRules whose key this sidecar cannot read (masking/masking-keys.ts).
   * Those columns are still masked, with the per-process key. Names only, never key bytes.
   */
  | { type: 'masking.keys_unreadable'; policy: string; keys: UnreadableMaskingKey[] };
