import { type AuditControl, formatAuditTime } from '@pgwarden/policy';
import { type AuditRecorder, cutText, type LoginRefusal } from './audit-recorder.js';
import { nowMicros } from './drop-tracker.js';

/** The governance events (governance/governance-events.ts) that become audit events; others are ignored. */
export type AuditedGovernanceEvent =
  | { type: 'policy.loaded'; names: string[]; hash: string }
  | { type: 'policy.rejected'; code: string; message: string; kept?: { names: string[] } }
  | { type: 'statement.held'; session: string; rule?: string; timeoutMs: number; approvalId?: string }
  | {
      type: 'statement.released';
      session: string;
      rule?: string;
      outcome: 'approved' | 'rejected' | 'stale' | 'timeout' | 'unavailable';
      heldMs: number;
      approvalId?: string;
      by?: string;
      reason?: string;
      grantUntil?: number;
    }
  | ({ type: 'login.refused' } & LoginRefusal)
  | { type: 'control.applied'; control: AuditControl }
  | { type: string };

// An unavailable queue denies the statement with nobody named as approver: approval.denied without `approver`. So
// does an approval that came after a reload of the policy the statement was held under (`stale`): the sidecar denied
// it, and the reason names who had approved.
const OUTCOME = {
  approved: 'approval.granted',
  rejected: 'approval.denied',
  stale: 'approval.denied',
  timeout: 'approval.expired',
  unavailable: 'approval.denied',
} as const;

/**
 * Returns a governance event listener that records policy loads/rejections and refused logins in the sidecar's
 * chain, and the
 * review hold of a statement (`review` rules) in its session's chain: approval.requested when it is held, then
 * approval.granted / denied / expired. A session holds at most one statement at a time, so the pair shares one
 * id: the approval queue's (a UUID) when the governance gives one, else `<session>.approval.<n>`.
 */
export function governanceAuditListener(recorder: AuditRecorder): (e: AuditedGovernanceEvent) => void {
  // Held statement per session → its approval id; a counter keeps ids unique across a session's holds.
  const holds = new Map<string, string>();
  let counter = 0;
  return (e) => {
    if (e.type === 'policy.loaded' && 'names' in e) {
      for (const name of e.names) recorder.policyLoaded({ name, hash: e.hash });
    } else if (e.type === 'policy.rejected' && 'code' in e) {
      recorder.policyRejected({ code: e.code, message: e.message }, e.kept?.names[0]);
    } else if (e.type === 'login.refused' && 'reason' in e) {
      // The governance's own refusal event (it knows the startup database); identity's `auth.refused` is the same
      // refusal with less context, so it is not recorded twice.
      const { type: _type, ...refusal } = e as { type: 'login.refused' } & LoginRefusal;
      recorder.authRefused(refusal);
    } else if (e.type === 'control.applied' && 'control' in e) {
      recorder.controlApplied(e.control);
    } else if (e.type === 'statement.held' && 'timeoutMs' in e) {
      const id = e.approvalId ?? `${e.session}.approval.${++counter}`;
      holds.set(e.session, id);
      recorder.session(e.session)?.approval('approval.requested', {
        id,
        ...(e.rule ? { reason: `rule ${e.rule}` } : {}),
        expiresAt: formatAuditTime(nowMicros() + e.timeoutMs * 1000),
      });
    } else if (e.type === 'statement.released' && 'outcome' in e) {
      const id = holds.get(e.session) ?? `${e.session}.approval.${++counter}`;
      holds.delete(e.session);
      recorder.session(e.session)?.approval(OUTCOME[e.outcome], {
        id,
        ...(e.by ? { approver: cutText(e.by, 256) } : {}),
        // The approver's own words when they give any; else which rule held it, as on approval.requested.
        ...(e.reason ? { reason: cutText(e.reason, 1024) } : e.rule ? { reason: `rule ${e.rule}` } : {}),
        ...(e.grantUntil !== undefined ? { grantUntil: formatAuditTime(e.grantUntil * 1000) } : {}),
      });
    }
  };
}

/** Records one governance event with the recorder's shared listener (`pgwarden sidecar` passes every event). */
export function recordPolicyEvent(recorder: AuditRecorder, e: AuditedGovernanceEvent): void {
  let listener = listeners.get(recorder);
  if (!listener) {
    listener = governanceAuditListener(recorder);
    listeners.set(recorder, listener);
  }
  listener(e);
}

const listeners = new WeakMap<AuditRecorder, (e: AuditedGovernanceEvent) => void>();
