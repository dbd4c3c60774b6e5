/** Stable error codes of @pgwarden/policy. Callers map them once to SQLSTATEs and audit `reason` values. */
export type PolicyErrorCode =
  /** A document failed schema or semantic validation (details in `issues`). */
  | 'PGW_POLICY_INVALID'
  /** The YAML/JSON text could not be read as documents. */
  | 'PGW_POLICY_SYNTAX'
  /** initSqlParser() has not finished: the SQL analysis cannot run. */
  | 'PGW_SQL_PARSER_NOT_LOADED'
  /** The SQL text does not parse (where a parse was required, e.g. to normalize it). */
  | 'PGW_SQL_UNPARSEABLE'
  /** A rendered policy's hash does not match its content. */
  | 'PGW_RENDERED_HASH_MISMATCH';

/** One precise problem: where (JSON Pointer into the document) and why. */
export interface PolicyIssue {
  /** JSON Pointer, e.g. `/spec/rules/2/action`. */
  path: string;
  message: string;
  /** 0-based index of the YAML document, when the input held several. */
  document?: number;
  /** `Kind/namespace/name` of the document when known. */
  object?: string;
  severity: 'error' | 'warning';
}

export class PolicyError extends Error {
  readonly code: PolicyErrorCode;
  readonly issues: PolicyIssue[];
  constructor(code: PolicyErrorCode, message: string, options: { issues?: PolicyIssue[]; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'PolicyError';
    this.code = code;
    this.issues = options.issues ?? [];
  }
}

export function formatIssue(issue: PolicyIssue): string {
  const where = [issue.document === undefined ? '' : `document ${issue.document}`, issue.object ?? '']
    .filter(Boolean)
    .join(' ');
  return `${issue.severity}: ${where ? `${where}: ` : ''}${issue.path || '/'}: ${issue.message}`;
}
