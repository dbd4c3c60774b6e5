/** Stable error codes of the masking core. */
export type MaskingErrorCode =
  /** initMaskingParser() has not finished. */
  | 'PGW_MASK_PARSER_NOT_LOADED'
  /** SQL given to the lineage analysis does not parse. */
  | 'PGW_MASK_PARSE';

export class MaskingError extends Error {
  readonly code: MaskingErrorCode;
  constructor(code: MaskingErrorCode, message: string, options: { cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'MaskingError';
    this.code = code;
  }
}
