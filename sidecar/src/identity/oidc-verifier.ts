import {
  createOidcVerifier as createTokenVerifier,
  DEFAULT_CLOCK_SKEW_S,
  type HttpsFetch,
  type OidcConfig as TokenConfig,
} from '@pgwarden/policy/oidc';
import type { Identity } from '../proxy/hooks.js';

export { DEFAULT_ALGORITHMS, MAX_CLOCK_SKEW_S } from '@pgwarden/policy/oidc';

export interface OidcConfig extends TokenConfig {
  /** Set Identity.sessionEndsAt (exp + clock skew), so the proxy ends the session when the token expires. */
  endSessionAtExpiry?: boolean;
}

export interface OidcVerifier {
  readonly issuer: string;
  verify(token: string): Promise<Identity>;
}

/**
 * The sidecar's view of @pgwarden/policy/oidc's verifier: the token is the PostgreSQL password, and what it says
 * becomes the session's Identity (`sub`, or the username claim, as `user`).
 */
export function createOidcVerifier(cfg: OidcConfig, fetchImpl?: HttpsFetch): OidcVerifier {
  const verifier = createTokenVerifier({ credentialName: 'password', ...cfg }, fetchImpl);
  const skew = cfg.clockSkewSeconds ?? DEFAULT_CLOCK_SKEW_S;
  return {
    issuer: verifier.issuer,
    async verify(token) {
      const t = await verifier.verify(token);
      return {
        user: t.user,
        groups: t.groups,
        issuer: t.issuer,
        ...(cfg.endSessionAtExpiry ? { sessionEndsAt: (t.expiresAt + skew) * 1000 } : {}),
      };
    },
  };
}
