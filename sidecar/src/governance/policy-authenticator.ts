import { parseDuration, type RenderedPolicy } from '@pgwarden/policy';
import {
  type AuthEvent,
  type Authenticator,
  createAuthenticator,
  type IdentityConfig,
  type OidcConfig,
} from '../identity/index.js';
import type { AuthOutcome, AuthRequest } from '../proxy/hooks.js';
import { SQLSTATE } from './sqlstate.js';

type AuthSpec = RenderedPolicy['policy']['spec']['authentication'];

/** The identity configuration a policy asks for; `local` adds what only the sidecar knows (IdP CA, test clocks). */
export function identityConfigOf(auth: AuthSpec, local: Partial<OidcConfig> = {}): IdentityConfig {
  if (auth.mode !== 'oidc' || !auth.oidc) return { mode: 'workload' };
  const o = auth.oidc;
  return {
    mode: 'oidc',
    oidc: {
      issuer: o.issuer,
      audience: o.audience,
      groupsClaim: o.groupsClaim,
      usernameClaim: o.usernameClaim,
      jwksUri: o.jwksUri,
      algorithms: o.algorithms as string[] | undefined,
      clockSkewSeconds: o.clockSkew ? (parseDuration(o.clockSkew) ?? Number.NaN) / 1000 : undefined,
      ...local,
    },
  };
}

/**
 * Follows the policy's `authentication` across hot reloads. The authenticator (and its JWKS cache) is rebuilt only
 * when the authentication block changes, so a reload of rules does not refetch keys.
 */
export function createPolicyAuthenticator(opts: {
  policy: () => RenderedPolicy | undefined;
  env?: NodeJS.ProcessEnv;
  oidc?: Partial<OidcConfig>;
  onEvent?: (e: AuthEvent) => void;
}): { needsPassword(): boolean; authenticate(req: AuthRequest): Promise<AuthOutcome> } {
  let key: string | undefined;
  let current: Authenticator | undefined;
  const get = (): Authenticator | undefined => {
    const p = opts.policy();
    if (!p) return undefined;
    const k = JSON.stringify(p.policy.spec.authentication);
    if (k !== key) {
      current = createAuthenticator(identityConfigOf(p.policy.spec.authentication, opts.oidc), {
        env: opts.env,
        onEvent: opts.onEvent,
      });
      key = k;
    }
    return current;
  };
  return {
    needsPassword: () => get()?.needsPassword ?? false,
    async authenticate(req) {
      let auth: Authenticator | undefined;
      try {
        auth = get();
      } catch (err) {
        return {
          ok: false,
          code: SQLSTATE.cannotConnectNow,
          message: `pgwarden: authentication is misconfigured: ${(err as Error).message}`,
          reason: 'identity_config',
        };
      }
      if (!auth)
        return {
          ok: false,
          code: SQLSTATE.cannotConnectNow,
          message: 'pgwarden: no valid policy is loaded yet',
          reason: 'policy_not_ready',
        };
      return auth.authenticate(req);
    },
  };
}
