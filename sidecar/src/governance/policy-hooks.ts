import { initSqlParser, type RenderedPolicy, type SuspensionMessage } from '@pgwarden/policy';
import type { OidcConfig } from '../identity/index.js';
import type { PolicySource } from '../policy-source/index.js';
import type { ProxyHooks } from '../proxy/hooks.js';
import { type ApprovalGate, noApproversGate } from './approval-gate.js';
import type { GovernanceEvent } from './governance-events.js';
import { createPolicyAuthenticator } from './policy-authenticator.js';
import { type PolicyCatalogSource, PolicySession } from './policy-session.js';
import { RateLimiter, rateLimitKey } from './rate-limit.js';

export interface PolicyHooksOptions {
  source: PolicySource<RenderedPolicy[]>;
  /** Which policy of the source this listener serves; may be omitted when the source holds exactly one. */
  policyName?: string;
  /** Downward API environment (workload identity); default process.env. */
  env?: NodeJS.ProcessEnv;
  /** Sidecar-local OIDC settings the policy cannot carry: the IdP's CA, JWKS cooldown. */
  oidc?: Partial<OidcConfig>;
  approvals?: ApprovalGate;
  /** Overrides approval.timeout for held statements (local runs, tests). */
  reviewTimeoutMs?: number;
  onEvent?: (e: GovernanceEvent) => void;
  /** Awaited before each login is judged (see createPolicyAuthenticator). */
  beforeLogin?: () => Promise<void>;
  /** See createPolicyAuthenticator. */
  liveStateUnknown?: () => boolean;
  /** The upstream's catalog cache, for decisions that depend on user functions (PolicySessionContext.catalog). */
  catalog?: () => PolicyCatalogSource | undefined;
}

export interface PolicyHooks extends ProxyHooks {
  /** The policy this listener currently enforces (with spec.suspend set while a live suspension is in force). */
  policy(): RenderedPolicy | undefined;
  /** The collector's live suspension of this listener's policy (governance/nats-control.ts), if any. */
  suspension(): SuspensionMessage | undefined;
  /** Sets or lifts the live suspension; the caller ends the sessions (startGovernedSidecar). */
  setSuspension(m: SuspensionMessage | undefined): void;
  /** guardrails.rateLimit.scope: policy: how many pods share the budget now (governance/nats-presence.ts). */
  setRatePods(n: number): void;
}

/** Picks this listener's policy from the loaded set (by name when several). */
export function selectPolicy(set: readonly RenderedPolicy[] | undefined, name?: string): RenderedPolicy | undefined {
  if (!set) return undefined;
  if (name === undefined) return set.length === 1 ? set[0] : undefined;
  return set.find((p) => p.policy.name === name);
}

/**
 * The ProxyHooks that enforce a policy from a PolicySource: authentication per the policy's `authentication`,
 * and per session the analysis + decision of every statement. Waits for the SQL parser (WASM) to load first, so
 * every check afterwards is synchronous.
 */
export async function createPolicyHooks(opts: PolicyHooksOptions): Promise<PolicyHooks> {
  await initSqlParser();
  const emit = (e: GovernanceEvent) => {
    try {
      opts.onEvent?.(e);
    } catch {
      // Subscribers must not break enforcement.
    }
  };
  // A live suspension shows as spec.suspend on the policy every check reads, so it is enforced exactly where the
  // Kubernetes kill switch is (logins, statements, prepared runs) and cannot be missed by one of them.
  let live: SuspensionMessage | undefined;
  let viewOf: RenderedPolicy | undefined;
  let view: RenderedPolicy | undefined;
  // A suspended policy's grants end (approval-grants.ts): once per policy version seen suspended, off the hot path.
  let grantsEndedFor: RenderedPolicy | undefined;
  const endGrants = (p: RenderedPolicy) => {
    grantsEndedFor = p;
    opts.approvals?.endGrants?.({ namespace: p.policy.namespace, name: p.policy.name });
  };
  const policy = () => {
    const p = selectPolicy(opts.source.current()?.value, opts.policyName);
    if (p === undefined || (live === undefined && !p.policy.spec.suspend)) return p;
    if (grantsEndedFor !== p) endGrants(p);
    if (live === undefined || p.policy.spec.suspend) return p;
    if (viewOf !== p) {
      viewOf = p;
      view = { ...p, policy: { ...p.policy, spec: { ...p.policy.spec, suspend: true } } };
    }
    return view;
  };
  const auth = createPolicyAuthenticator({
    policy,
    env: opts.env,
    oidc: opts.oidc,
    onEvent: emit,
    beforeLogin: opts.beforeLogin,
    liveStateUnknown: opts.liveStateUnknown,
  });
  // One bucket for all of the listener's sessions (an agent that opens more connections gets no more statements),
  // kept across reloads that leave guardrails.rateLimit as it was.
  let limiter: RateLimiter | undefined;
  let limiterSpec: object | undefined;
  // scope: policy: the pods sharing the budget, as presence last counted them (1 until it has).
  let pods = 1;
  const rateLimiter = (): RateLimiter | undefined => {
    const spec = policy()?.policy.spec.guardrails.rateLimit;
    if (spec === limiterSpec) return limiter;
    limiterSpec = spec;
    if (spec === undefined) limiter = undefined;
    else if (limiter === undefined || limiter.key !== rateLimitKey(spec)) {
      limiter = new RateLimiter(spec);
      if (spec.scope === 'policy') limiter.share(pods);
    }
    return limiter;
  };
  return {
    get needsPassword() {
      return auth.needsPassword();
    },
    policy,
    suspension: () => live,
    setSuspension(m) {
      live = m;
      viewOf = undefined;
      view = undefined;
      const p = m && selectPolicy(opts.source.current()?.value, opts.policyName);
      if (p) endGrants(p);
    },
    setRatePods(n) {
      pods = n;
      const l = rateLimiter();
      if (l && policy()?.policy.spec.guardrails.rateLimit?.scope === 'policy') l.share(n);
    },
    ready: () => policy() !== undefined,
    authenticate: (req) => auth.authenticate(req),
    openSession(info) {
      return new PolicySession({
        info,
        policy,
        approvals: opts.approvals ?? noApproversGate,
        reviewTimeoutMs: opts.reviewTimeoutMs,
        emit,
        rateLimiter,
        catalog: opts.catalog,
      });
    },
  };
}
