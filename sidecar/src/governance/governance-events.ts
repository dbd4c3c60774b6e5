import type { AuthEvent } from '../identity/index.js';
import type { PolicySourceEvent } from '../policy-source/index.js';

export interface PolicyRef {
  name: string;
  hash: string;
}

/** Typed events the governance emits; logging, metrics and audit subscribe (nothing here logs by itself). */
export type GovernanceEvent =
  | PolicySourceEvent
  | AuthEvent
  | { type: 'statement.held'; session: string; policy: PolicyRef; rule?: string; timeoutMs: number }
  | {
      type: 'statement.released';
      session: string;
      policy: PolicyRef;
      rule?: string;
      outcome: 'approved' | 'rejected' | 'timeout';
      heldMs: number;
    }
  /** The analysis or decision threw: the statement was denied (fail closed). Never carries the SQL. */
  | { type: 'statement.check_failed'; session: string; error: string };
