import type {
  ApprovalClosedMessage,
  ApprovalClosedOutcome,
  ApprovalDecisionMessage,
  ApprovalRequestMessage,
} from '@pgwarden/policy';
import { visibleText } from '../display/visible-text.js';
import { approvalLink, heldSummary, type NoticeOptions, slackEscape } from './approval-notice.js';

/** The body of a follow-up in `format: json`: how a held statement's wait ended. Never its SQL. */
export interface ApprovalClosedNotice {
  type: 'approval.closed';
  id: string;
  /** The sidecar's closing outcome (ApprovalClosedOutcome). */
  outcome: ApprovalClosedOutcome;
  /** The approver whose decision the sidecar applied (approved, rejected). */
  by?: { name: string };
  /** When the sidecar ended the hold. */
  at: string;
  /** The approval gave a grant: when it ends. */
  grantUntil?: string;
  /** With `denied`: why the sidecar denied the statement an approver had approved (`stale: policy reloaded`). */
  deniedBecause?: string;
  /**
   * The approver's reason for the decision the sidecar applied (approved, rejected), as they typed it, cut to 256
   * characters; for an approval under a grant, which grant.
   */
  reason?: string;
  /** Of the request, when the approval queue holds it. */
  policy?: { name: string; namespace?: string };
  rule?: string;
  session?: string;
  url?: string;
}

/** What the approval queue knows of the request a closing ends (nothing when it has not seen it). */
export interface KnownRequest {
  request?: ApprovalRequestMessage;
  decision?: ApprovalDecisionMessage;
}

/** The exact follow-up body for `closed` (`known`: the request and decision from the approval queue, if any). */
export function outcomeNoticeBody(
  closed: ApprovalClosedMessage,
  known: KnownRequest,
  opts: Pick<NoticeOptions, 'format' | 'publicUrl'>,
): string {
  const url = opts.publicUrl ? approvalLink(opts.publicUrl, closed.id) : undefined;
  if (opts.format === 'slack') return JSON.stringify({ text: outcomeSlackText(closed, known, url) });
  const { request } = known;
  const reason = appliedReason(closed, known.decision);
  const notice: ApprovalClosedNotice = {
    type: 'approval.closed',
    id: closed.id,
    outcome: closed.outcome,
    ...(closed.by ? { by: { name: closed.by.name } } : {}),
    at: closed.at,
    ...(closed.grantUntil ? { grantUntil: closed.grantUntil } : {}),
    ...(closed.reason ? { deniedBecause: closed.reason } : {}),
    ...(reason ? { reason } : {}),
    ...(request
      ? {
          policy: {
            name: request.policy.name,
            ...(request.policy.namespace ? { namespace: request.policy.namespace } : {}),
          },
          rule: request.rule.slice(0, 256),
          session: request.session,
        }
      : {}),
    ...(url ? { url } : {}),
  };
  return JSON.stringify(notice);
}

/**
 * One chat line: what ended the wait, the approver's reason, then which statement (as its request notice named it,
 * or the approval's id when the queue never saw the request). Linked when the queue holds the request: the page
 * lists it among the recently decided (and an active grant, with Revoke).
 */
function outcomeSlackText(closed: ApprovalClosedMessage, known: KnownRequest, url?: string): string {
  const which = known.request ? heldSummary(known.request) : `approval ${closed.id}`;
  const reason = appliedReason(closed, known.decision);
  // The headline is ours (its ↩︎ holds a variation selector); what people and the agent wrote shows as visibleText.
  let text = slackEscape(
    `${headline(closed, known.decision)}${reason ? ` (“${visibleText(reason)}”)` : ''}: ${visibleText(which)}.`,
  );
  if (url && known.request)
    text += ` <${slackEscape(url)}|${closed.grantUntil ? 'Review the grant in pgwarden' : 'Open in pgwarden'}>`;
  return text;
}

const MAX_REASON_CHARS = 256;

/**
 * The reason of the decision the sidecar applied: only for approved and rejected, and only when the decision the
 * queue holds is that approver's (the closing names who). Cut short: a follow-up is a line, not a report.
 */
function appliedReason(closed: ApprovalClosedMessage, decision?: ApprovalDecisionMessage): string | undefined {
  if (closed.outcome !== 'approved' && closed.outcome !== 'rejected') return undefined;
  if (!decision?.reason || decision.decision !== closed.outcome) return undefined;
  if (closed.by && closed.by.name !== decision.by.name) return undefined;
  const r = decision.reason;
  return r.length <= MAX_REASON_CHARS ? r : `${r.slice(0, MAX_REASON_CHARS - 1)}…`;
}

function headline(closed: ApprovalClosedMessage, decision?: ApprovalDecisionMessage): string {
  const by = closed.by?.name ?? decision?.by.name;
  switch (closed.outcome) {
    case 'approved':
      return `✅ Approved${by ? ` by ${by}` : ''}${closed.grantUntil ? ` (grant until ${clockTime(closed.grantUntil, closed.at)})` : ''}`;
    case 'rejected':
      return `⛔ Rejected${by ? ` by ${by}` : ''}`;
    case 'denied':
      // Approved, but the sidecar could not apply it (a reload of the policy during the hold): it did not run.
      return `🚫 Denied by its sidecar${decision?.decision === 'approved' ? ` after ${visibleText(decision.by.name)}’s approval` : ''} (${visibleText(closed.reason ?? 'no reason given')})`;
    case 'expired':
      // A decision the sidecar never applied: published while the sidecar was cut off from NATS.
      return decision
        ? `⌛ Expired before ${decision.by.name}’s ${decision.decision === 'approved' ? 'approval' : 'rejection'} reached its sidecar`
        : '⌛ Expired without a decision';
    case 'withdrawn':
      return '↩︎ Cancelled by the client (or it went away)';
    case 'refused':
      return '🚫 Refused (its sidecar could not hold it for approval)';
  }
}

/** `10:42 UTC`, with the date in front unless it is `ref`'s day (a grant lasts 24 hours at most). */
function clockTime(iso: string, ref: string): string {
  const t = new Date(iso).toISOString();
  const day = t.slice(0, 10);
  const sameDay = !Number.isNaN(Date.parse(ref)) && new Date(ref).toISOString().startsWith(day);
  return `${sameDay ? '' : `${day} `}${t.slice(11, 16)} UTC`;
}
