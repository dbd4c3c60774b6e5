/**
 * SQLSTATEs the governance puts in ErrorResponses. PostgreSQL Appendix A:
 * https://www.postgresql.org/docs/current/errcodes-appendix.html
 */
export const SQLSTATE = {
  /** 42501 insufficient_privilege: a policy denial, as PostgreSQL reports a missing GRANT. */
  insufficientPrivilege: '42501',
  /** 42601 syntax_error: SQL the parser rejects (it never reaches the server). */
  syntaxError: '42601',
  /** XX000 internal_error: the analysis or decision itself failed; the statement is denied (fail closed). */
  internalError: 'XX000',
  /** 28000 invalid_authorization_specification: the policy is suspended (spec.suspend), nobody may log in. */
  invalidAuthorization: '28000',
  /** 57P01 admin_shutdown: a session ended because its policy was suspended, as by pg_terminate_backend. */
  adminShutdown: '57P01',
  /** 57P03 cannot_connect_now: no valid policy loaded yet. */
  cannotConnectNow: '57P03',
  /** 53400 configuration_limit_exceeded: over guardrails.rateLimit (class 53: retry later, nothing is wrong with it). */
  configurationLimitExceeded: '53400',
} as const;
