/** Stable error codes of the sidecar's masking I/O. */
export type MaskingIoErrorCode =
  /** The catalog connection or a catalog query failed (masking then keeps its last snapshot and fails closed). */
  | 'PGW_MASK_CATALOG'
  /**
   * A catalog query did not finish within --catalog-query-timeout: PostgreSQL cancelled it (statement_timeout,
   * lock_timeout), or the connection did not answer at all and was closed.
   */
  | 'PGW_MASK_CATALOG_TIMEOUT'
  /**
   * A statement needed a current catalog (a check was due) and it could not be read: the statement is refused. Its
   * message is the client's; the failure behind it is its cause.
   */
  | 'PGW_MASK_CATALOG_UNAVAILABLE';

export class MaskingIoError extends Error {
  readonly code: MaskingIoErrorCode;
  constructor(code: MaskingIoErrorCode, message: string, options: { cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'MaskingIoError';
    this.code = code;
  }
}

/**
 * SQLSTATE of a statement refused because the catalog could not be read: 53000 insufficient_resources, as when the
 * audit log is unavailable (audit/errors.ts): something the statement needs is missing, retry later; the session is
 * fine (class 08 would tell clients and poolers to drop the connection).
 * https://www.postgresql.org/docs/current/errcodes-appendix.html
 */
export const CATALOG_UNAVAILABLE_SQLSTATE = '53000';

/** Whether the catalog's failure was a timeout (`timeout`) or an error (`error`): metrics label, audit reason. */
export function catalogFailureCause(err: unknown): 'timeout' | 'error' {
  let e: unknown = err;
  while (e instanceof MaskingIoError) {
    if (e.code === 'PGW_MASK_CATALOG_TIMEOUT') return 'timeout';
    e = e.cause;
  }
  return 'error';
}

/**
 * The refusal of a statement that needed a current catalog (an error coded PGW_MASK_CATALOG_UNAVAILABLE), for the
 * client's ErrorResponse and the audit event's decision; undefined for any other error. The message names no host,
 * role or upstream error text: those go to the log.
 */
export function catalogRefusal(
  err: unknown,
): { code: string; message: string; hint: string; reason: string; rule: string } | undefined {
  if (!(err instanceof MaskingIoError) || err.code !== 'PGW_MASK_CATALOG_UNAVAILABLE') return undefined;
  return {
    code: CATALOG_UNAVAILABLE_SQLSTATE,
    message: `pgwarden: statement refused: ${err.message}`,
    hint: 'Retry when the database answers again; the pgwarden_catalog_available metric and the sidecar log tell when.',
    reason: `catalog-unavailable: ${catalogFailureCause(err.cause)}`,
    rule: 'catalog',
  };
}
