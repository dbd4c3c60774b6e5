/**
 * Why a client could not be identified. `reason` values are stable: they go into audit events and metrics labels.
 * Messages are safe to show the client and never contain the token or any part of it.
 */
export type IdentityReason =
  | 'no_token'
  | 'malformed_token'
  | 'alg_not_allowed'
  | 'unknown_key'
  | 'bad_signature'
  | 'token_expired'
  | 'token_not_yet_valid'
  | 'token_lifetime_too_long'
  | 'wrong_issuer'
  | 'wrong_audience'
  | 'missing_claim'
  | 'bad_claim'
  | 'idp_unavailable'
  | 'workload_identity_missing';

/** SQLSTATE 28P01 invalid_password: what PostgreSQL itself sends for a refused password (Appendix A, class 28). */
export const INVALID_PASSWORD = '28P01';

/**
 * SQLSTATE 28000 invalid_authorization_specification: what PostgreSQL sends when an external authentication
 * method fails (LDAP, RADIUS), an unreachable server included. An identity provider that cannot be asked says
 * nothing about the token, so the client is not told its password is wrong.
 */
export const INVALID_AUTHORIZATION = '28000';

export class IdentityError extends Error {
  override readonly name = 'IdentityError';
  constructor(
    readonly reason: IdentityReason,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Configuration the sidecar cannot start with (bad issuer URL, forbidden algorithm, skew out of range...). */
export class IdentityConfigError extends Error {
  override readonly name = 'IdentityConfigError';
  readonly code = 'PGW_IDENTITY_CONFIG';
}
