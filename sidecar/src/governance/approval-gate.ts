import type { Identity } from '../proxy/hooks.js';

export interface ApprovalRequest {
  sessionId: string;
  policy: { name: string; hash: string };
  rule: string;
  sql: string;
  identity: Identity;
  timeoutMs: number;
  /** Aborted when the client session ends while the statement is held. */
  signal: AbortSignal;
}

export type ApprovalOutcome =
  | { decision: 'approved'; by: string }
  | { decision: 'rejected'; by: string; reason?: string }
  | { decision: 'timeout' };

/** Where held (`review`) statements wait. The approvals issue plugs its NATS-backed gate in here. */
export interface ApprovalGate {
  request(req: ApprovalRequest): Promise<ApprovalOutcome>;
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
