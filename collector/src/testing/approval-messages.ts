import { randomUUID } from 'node:crypto';
import type { ApprovalClosedMessage, ApprovalRequestMessage } from '@pgwarden/policy';

/**
 * An ApprovalRequestMessage as a sidecar publishes it for a held statement: asked by OIDC user `ana`, decidable by
 * group `dba` or user `bob`, expiring in ten minutes. Fields can be overridden.
 */
export function approvalRequest(over: Partial<ApprovalRequestMessage> = {}): ApprovalRequestMessage {
  const now = Date.now();
  return {
    v: 1,
    id: randomUUID(),
    session: 'sess-held-1',
    policy: { name: 'writer-review', hash: 'sha256:1111', namespace: 'agents' },
    rule: 'writes-need-approval',
    sql: 'DELETE FROM public.orders WHERE id = 42',
    identity: {
      namespace: 'agents',
      serviceAccount: 'analytics',
      pod: 'analytics-0',
      user: 'ana',
      groups: ['data-team'],
    },
    approvers: { groups: ['dba'], users: ['bob'] },
    requestedAt: new Date(now).toISOString(),
    expiresAt: new Date(now + 600_000).toISOString(),
    ...over,
  };
}

/** `grantUntil`: the end of the grant the sidecar took (an approval that gave one). */
export function approvalClosed(
  id: string,
  outcome: ApprovalClosedMessage['outcome'],
  by?: ApprovalClosedMessage['by'],
  grantUntil?: string,
): ApprovalClosedMessage {
  return {
    v: 1,
    id,
    outcome,
    at: new Date().toISOString(),
    ...(by ? { by } : {}),
    ...(grantUntil ? { grantUntil } : {}),
  };
}
