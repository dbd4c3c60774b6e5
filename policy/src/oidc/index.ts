/**
 * `@pgwarden/policy/oidc`: verifying OIDC tokens (JWTs) against an issuer's published keys, shared by the sidecar
 * (a JWT as the PostgreSQL password) and the collector (a JWT as the API's bearer token). Unlike the package's main
 * entry it does I/O (discovery and JWKS over HTTPS), so it is a separate entry point: importing `@pgwarden/policy`
 * never loads it.
 */
export { createHttpsFetch, type HttpsFetch, type HttpsFetchOptions, withFailureBackoff } from './https-fetch.js';
export { createJwksCache, freshnessMs, type JwksCacheOptions } from './jwks-cache.js';
export { IdentityConfigError, IdentityError, type IdentityReason } from './oidc-errors.js';
export {
  createOidcVerifier,
  DEFAULT_ALGORITHMS,
  DEFAULT_CLOCK_SKEW_S,
  DEFAULT_MAX_TOKEN_LIFETIME_S,
  MAX_CLOCK_SKEW_S,
  type OidcConfig,
  type OidcVerifier,
  type VerifiedToken,
} from './oidc-verifier.js';
