/** Stable error codes for the collector; messages never carry secrets (tokens, passwords, DSNs). */
export type CollectorErrorCode =
  | 'COLLECTOR_BAD_CONFIG'
  | 'COLLECTOR_BAD_EVENT'
  | 'COLLECTOR_STORE'
  | 'COLLECTOR_MIGRATION'
  | 'COLLECTOR_NATS'
  | 'COLLECTOR_EXPORT'
  | 'COLLECTOR_HTTP'
  /** Approval queue: no such request, or its request is not (yet) in the stream. */
  | 'COLLECTOR_APPROVAL_UNKNOWN'
  /** Approval queue: already decided, closed by the sidecar, or expired. */
  | 'COLLECTOR_APPROVAL_NOT_PENDING'
  /** Approval queue: the approver is not in the request's `approvers`. */
  | 'COLLECTOR_APPROVAL_NOT_APPROVER'
  /** Approval queue: the approver is the identity that asked (four-eyes rule). */
  | 'COLLECTOR_APPROVAL_SELF'
  /** Approval queue: a grant the request's policy does not allow (none, or longer than approval.grants.maxDuration). */
  | 'COLLECTOR_APPROVAL_BAD_GRANT'
  /** Approval queue: NATS is not connected, the stream is still replaying, or the publish failed. */
  | 'COLLECTOR_APPROVAL_UNAVAILABLE'
  /** Live control: NATS is not connected, the control stream is not set up yet, or it did not acknowledge. */
  | 'COLLECTOR_CONTROL_UNAVAILABLE'
  /** A read of the trail whose `audit.read` event could not be stored (in time): the read is refused with 503. */
  | 'COLLECTOR_READ_UNRECORDED';

export class CollectorError extends Error {
  override readonly name = 'CollectorError';
  constructor(
    readonly code: CollectorErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Removes credentials from a connection URL before it reaches a log line or an error message. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    for (const k of [...u.searchParams.keys()]) {
      if (/pass|token|secret|key/i.test(k)) u.searchParams.set(k, '***');
    }
    return u.toString();
  } catch {
    return '<unparseable url>';
  }
}
