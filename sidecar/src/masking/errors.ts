/** Stable error codes of the sidecar's masking I/O. */
export type MaskingIoErrorCode =
  /** The catalog connection or a catalog query failed (masking then keeps its last snapshot and fails closed). */
  'PGW_MASK_CATALOG';

export class MaskingIoError extends Error {
  readonly code: MaskingIoErrorCode;
  constructor(code: MaskingIoErrorCode, message: string, options: { cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'MaskingIoError';
    this.code = code;
  }
}
