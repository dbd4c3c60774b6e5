import type { SpoolPos } from './disk-spool.js';

/** Stable codes for audit failures (metrics labels, logs); messages never carry event contents. */
export type AuditErrorCode =
  | 'AUDIT_BAD_SPEC'
  | 'AUDIT_SPOOL_FULL'
  | 'AUDIT_SPOOL_IO'
  | 'AUDIT_SPOOL_CORRUPT'
  | 'AUDIT_AT_RISK_RECORD'
  | 'AUDIT_NATS'
  | 'AUDIT_CLOSED';

export class AuditError extends Error {
  override readonly name = 'AuditError';
  constructor(
    readonly code: AuditErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * An append to the spool that failed part way (AUDIT_SPOOL_IO): `written` are the ends of the records it wrote whole
 * before the failure, oldest first. Those are in the spool and will be read back: the caller keeps them as spooled and
 * drops only the rest.
 */
export class SpoolWriteError extends AuditError {
  constructor(
    readonly written: readonly SpoolPos[],
    err: AuditError,
  ) {
    super(err.code, err.message, { cause: err.cause });
  }
}

/**
 * SQLSTATE the gate sends when `failMode: closed` and events cannot be made durable. Class 53 "Insufficient
 * Resources" (53000 insufficient_resources) says "a resource this statement needs is exhausted, retry later"
 * without suggesting that the server is shutting down (57P03 cannot_connect_now is a connection-time code).
 * https://www.postgresql.org/docs/current/errcodes-appendix.html
 */
export const AUDIT_UNAVAILABLE_SQLSTATE = '53000';
