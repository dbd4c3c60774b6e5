import type { PolicyAction } from '../api/access-policy-schema.js';

/** Who is asking: the sidecar's Identity (sidecar/src/proxy/hooks.ts) has this shape. */
export interface Subject {
  groups: readonly string[];
  namespace?: string;
  serviceAccount?: string;
  /** OIDC `sub`. */
  user?: string;
}

/**
 * Why a statement got its action. `rule` / `default` are policy outcomes; the rest are protections that no rule
 * (identity-change, unsafe-setting, parse-error) or only an explicit rule (dangerous:*) can lift.
 */
export type DecisionReason =
  | 'rule'
  | 'default'
  | 'identity-change'
  | 'unsafe-setting'
  | 'parse-error'
  | 'unknown-prepared'
  | 'guardrail:blockDDL'
  | 'guardrail:requireWhere'
  | 'guardrail:blockedFunctions'
  | 'guardrail:maxRowsAffected'
  | `dangerous:${string}`;

export interface StatementDecision {
  text: string;
  kind: string;
  action: PolicyAction;
  rule?: string;
  reason: DecisionReason;
  /** Human explanation; for deny it is the client's error message. */
  message: string;
  /** Under the default action (not allow): what no rule covered, e.g. `statement kind "copy" is not allowed by any rule`. */
  detail?: string;
  tables: string[];
  functions: string[];
}

export interface Decision {
  /** deny if any statement is denied, else review if any needs review, else dryrun if any, else allow. */
  action: PolicyAction;
  /** The rule behind the overall action (the first statement that produced it). */
  rule?: string;
  reason: DecisionReason;
  /** SQLSTATE for a deny: 42501 (policy), 42601 (unparseable SQL), 54001 (too deeply nested to analyse). */
  code?: string;
  message: string;
  /** StatementDecision.detail of the statement behind the action. */
  detail?: string;
  /** For unparseable SQL: PostgreSQL's 1-based character position of the error, as it would report it. */
  position?: number;
  hint?: string;
  /** guardrails.maxRowsReturned (absent = no cap). */
  maxRows?: number;
  /** guardrails.statementTimeout in milliseconds. */
  timeoutMs?: number;
  /** guardrails.maxRowsAffected, set only on a Query that writes (the proxy counts and undoes only those). */
  maxAffected?: number;
  statements: StatementDecision[];
}
