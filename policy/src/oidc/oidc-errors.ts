/**
 * Why a token could not be verified. `reason` values are stable: they go into audit events, metrics labels and the
 * collector's HTTP errors. Messages are safe to show the caller and never contain the token or any part of it.
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

/** Configuration a verifier cannot start with (bad issuer URL, forbidden algorithm, skew out of range...). */
export class IdentityConfigError extends Error {
  override readonly name = 'IdentityConfigError';
  readonly code = 'PGW_IDENTITY_CONFIG';
}
