import type { AuthOutcome, AuthRequest, Identity } from '../proxy/hooks.js';
import { IdentityError, type IdentityReason, INVALID_AUTHORIZATION, INVALID_PASSWORD } from './errors.js';
import { createOidcVerifier, type OidcConfig, type OidcVerifier } from './oidc-verifier.js';
import { readWorkloadIdentity, type WorkloadIdentity } from './workload.js';

export type IdentityConfig = { mode: 'workload' } | { mode: 'oidc'; oidc: OidcConfig };

/** What an authentication produced, for audit: never carries the password/token. */
export type AuthEvent =
  | { type: 'auth.accepted'; identity: Identity; client: AuthRequest['client']; user: string }
  | {
      type: 'auth.refused';
      reason: IdentityReason;
      message: string;
      client: AuthRequest['client'];
      user: string;
      workload: WorkloadIdentity;
    };

export interface Authenticator {
  readonly needsPassword: boolean;
  readonly mode: IdentityConfig['mode'];
  authenticate(req: AuthRequest): Promise<AuthOutcome>;
}

/**
 * workload: every client on the pod's loopback is the pod; identity = downward API values, no password asked.
 * oidc: the password must be a JWT; identity = the pod's values plus the token's sub, groups and issuer.
 */
export function createAuthenticator(
  config: IdentityConfig,
  opts: { env?: NodeJS.ProcessEnv; onEvent?: (e: AuthEvent) => void; verifier?: OidcVerifier } = {},
): Authenticator {
  const workload = readWorkloadIdentity(opts.env);
  const emit = opts.onEvent ?? (() => {});
  if (config.mode === 'workload') {
    return {
      needsPassword: false,
      mode: 'workload',
      async authenticate(req) {
        const identity: Identity = { ...workload, groups: [] };
        emit({ type: 'auth.accepted', identity, client: req.client, user: req.startup.user });
        return { ok: true, identity };
      },
    };
  }
  const verifier = opts.verifier ?? createOidcVerifier(config.oidc);
  return {
    needsPassword: true,
    mode: 'oidc',
    async authenticate(req) {
      try {
        const who = await verifier.verify(req.password ?? '');
        const identity: Identity = { ...workload, ...who };
        emit({ type: 'auth.accepted', identity, client: req.client, user: req.startup.user });
        return { ok: true, identity };
      } catch (err) {
        const e =
          err instanceof IdentityError
            ? err
            : new IdentityError('idp_unavailable', 'cannot verify OIDC token: internal error', { cause: err });
        emit({
          type: 'auth.refused',
          reason: e.reason,
          message: e.message,
          client: req.client,
          user: req.startup.user,
          workload,
        });
        const code = e.reason === 'idp_unavailable' ? INVALID_AUTHORIZATION : INVALID_PASSWORD;
        return { ok: false, code, message: `pgwarden: ${e.message}`, reason: e.reason };
      }
    },
  };
}
