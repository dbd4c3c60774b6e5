import type { Credentials, UpstreamTarget } from '../upstream/connect.js';
import type { UpstreamError } from '../upstream/errors.js';
import type { CancelRegistry } from './cancel-registry.js';
import type { ProxyHooks, StatementRecord } from './hooks.js';
import type { RetainedBudget } from './retained-budget.js';
import type { ProxySession } from './session.js';
import type { StatementBudget } from './statement-budget.js';

/** Everything a session needs from the listener that created it. */
export interface SessionContext {
  hooks: ProxyHooks;
  upstream: UpstreamTarget;
  credentials: () => Credentials;
  maxStatementBytes: number;
  /** Statement text read whole, counted over every session of the process (statement-budget.ts). */
  statementBudget: StatementBudget;
  /** Prepared statements and portals kept, counted over every session of the process (retained-budget.ts). */
  retainedBudget: RetainedBudget;
  /** How long a client may take from connecting to an established session (PostgreSQL's authentication_timeout). */
  authenticationTimeoutMs: number;
  cancels: CancelRegistry;
  observer: SessionObserver;
  /**
   * Called once per StartupMessage, before authentication: false when the listener already serves as many clients
   * as it may (the session then refuses with 53300). An admitted session counts until it closes.
   */
  admit(session: ProxySession): boolean;
}

/** Observability as events: the listener turns these into logs, metrics and audit events. */
export interface SessionObserver {
  opened(session: ProxySession): void;
  closed(session: ProxySession, reason: { error?: string }): void;
  statement(session: ProxySession, record: StatementRecord, seq: number): void;
  upstreamError(session: ProxySession, err: UpstreamError): void;
  /** A hook threw (the session may have been ended because of it). */
  hookError(session: ProxySession, err: unknown): void;
  /** Bytes relayed since the last call, per direction. */
  bytes(fromClient: number, fromUpstream: number): void;
}
