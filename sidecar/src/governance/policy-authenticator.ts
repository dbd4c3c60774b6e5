import { parseDuration, type RenderedPolicy } from '@pgwarden/policy';
import {
  type AuthEvent,
  type Authenticator,
  createAuthenticator,
  type IdentityConfig,
  type OidcConfig,
  readWorkloadIdentity,
} from '../identity/index.js';
import type { AuthOutcome, AuthRequest } from '../proxy/hooks.js';
import type { LoginRefusedEvent } from './governance-events.js';
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
      endSessionAtExpiry: o.endSessionAtExpiry,
      ...local,
      // The sidecar's flag is the default; a policy that names its identity provider knows its token lifetimes.
      maxTokenLifetimeSeconds: o.maxTokenLifetime
        ? (parseDuration(o.maxTokenLifetime) ?? Number.NaN) / 1000
        : local.maxTokenLifetimeSeconds,
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
  onEvent?: (e: AuthEvent | LoginRefusedEvent) => void;
  /** Awaited before each login is judged (startGovernedSidecar: until live control has read back its state). */
  beforeLogin?: () => Promise<void>;
  /**
   * True while live control has not read back whether the policy is suspended (NATS unreachable since start):
   * logins are refused then, unless the policy's liveControl.failMode is open.
   */
  liveStateUnknown?: () => boolean;
}): { needsPassword(): boolean; authenticate(req: AuthRequest): Promise<AuthOutcome> } {
  const workload = readWorkloadIdentity(opts.env);
  // Built from the request's non-secret parts only: the password/token is never copied into the event.
  const refused = (req: AuthRequest, out: Extract<AuthOutcome, { ok: false }>, mode?: 'workload' | 'oidc') => {
    const p = opts.policy();
    opts.onEvent?.({
      type: 'login.refused',
      reason: out.reason,
      code: out.code,
      message: out.message,
      ...(mode ? { mode } : {}),
      client: { address: req.client.address, port: req.client.port },
      user: req.startup.user,
      database: req.startup.database,
      ...(req.startup.applicationName ? { application: req.startup.applicationName } : {}),
      workload,
      ...(p ? { policy: { name: p.policy.name, hash: p.hash } } : {}),
    });
    return out;
  };
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
      await opts.beforeLogin?.();
      let auth: Authenticator | undefined;
      try {
        auth = get();
      } catch (err) {
        return refused(req, {
          ok: false,
          code: SQLSTATE.cannotConnectNow,
          message: `pgwarden: authentication is misconfigured: ${(err as Error).message}`,
          reason: 'identity_config',
        });
      }
      if (!auth)
        return refused(req, {
          ok: false,
          code: SQLSTATE.cannotConnectNow,
          message: 'pgwarden: no valid policy is loaded yet',
          reason: 'policy_not_ready',
        });
      const p = opts.policy();
      // Before the credentials are even looked at: a suspended policy lets nobody in.
      if (p?.policy.spec.suspend)
        return refused(req, {
          ok: false,
          code: SQLSTATE.invalidAuthorization,
          message: `pgwarden: policy "${p.policy.name}" is suspended: new sessions are refused`,
          reason: 'policy_suspended',
        });
      // A live suspension this sidecar could not read back yet must not be walked around by restarting the pod
      // while NATS is away: fail closed, unless the policy chose availability.
      if (p && opts.liveStateUnknown?.() && p.policy.spec.liveControl?.failMode !== 'open')
        return refused(req, {
          ok: false,
          code: SQLSTATE.cannotConnectNow,
          message: `pgwarden: cannot tell yet whether policy "${p.policy.name}" is suspended (live control over NATS has not answered since this sidecar started); try again`,
          reason: 'live_state_unknown',
        });
      const out = await auth.authenticate(req);
      return out.ok ? out : refused(req, out, auth.mode);
    },
  };
}
