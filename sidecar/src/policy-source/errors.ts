/** Stable codes for why a policy source could not produce a policy. Parsing/validation errors keep the policy package's codes. */
export type PolicySourceErrorCode =
  /** The path does not exist or a file in it cannot be read. */
  | 'PGW_POLICY_SOURCE_READ'
  /** The path holds no policy files (*.yaml, *.yml, *.json). */
  | 'PGW_POLICY_SOURCE_EMPTY';

export class PolicySourceError extends Error {
  override readonly name = 'PolicySourceError';
  constructor(
    readonly code: PolicySourceErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
