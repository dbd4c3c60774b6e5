export { createHttpsFetch, type HttpsFetch } from '@pgwarden/policy/oidc';
export { type AuthEvent, type Authenticator, createAuthenticator, type IdentityConfig } from './authenticator.js';
export { IdentityConfigError, IdentityError, type IdentityReason, INVALID_PASSWORD } from './errors.js';
export {
  createOidcVerifier,
  DEFAULT_ALGORITHMS,
  MAX_CLOCK_SKEW_S,
  type OidcConfig,
  type OidcVerifier,
} from './oidc-verifier.js';
export { PODINFO_FILES, readWorkloadIdentity, WORKLOAD_ENV, type WorkloadIdentity } from './workload.js';
