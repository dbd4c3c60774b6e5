/** Stable error codes of @pgwarden/operator (the fake API server's ApiError mirrors Kubernetes Status instead). */
export type OperatorErrorCode =
  /** A JSON Patch could not be applied (bad path or failed test op). */
  | 'PGW_JSON_PATCH'
  /** The policy JSON Schema uses a keyword the CRD generator cannot translate. */
  | 'PGW_CRD_SCHEMA'
  /** `pgwarden inject` met a workload the webhook would refuse. */
  | 'PGW_INJECT_REFUSED'
  /** Policy files could not be read or are invalid. */
  | 'PGW_POLICY_FILES';

export class OperatorError extends Error {
  constructor(
    readonly code: OperatorErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

export class JsonPatchError extends OperatorError {
  constructor(message: string) {
    super('PGW_JSON_PATCH', message);
  }
}

export class CrdSchemaError extends OperatorError {
  constructor(message: string) {
    super('PGW_CRD_SCHEMA', message);
  }
}

export class InjectError extends OperatorError {
  constructor(message: string) {
    super('PGW_INJECT_REFUSED', message);
  }
}

export class PolicyFilesError extends OperatorError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PGW_POLICY_FILES', message, options);
  }
}
