import { randomUUID } from 'node:crypto';
import {
  controlPolicyRef,
  initSqlParser,
  type KeyResolver,
  type RenderedPolicy,
  warmUpSqlAnalysis,
} from '@pgwarden/policy';
import { recordPolicyEvent } from '../audit/governance-audit.js';
import { NatsAuditSink } from '../audit/nats-sink.js';
import { credentialsProvider } from '../credentials.js';
import { createOidcVerifier } from '../identity/index.js';
import {
  type CatalogCache,
  type CatalogEvent,
  CatalogMetrics,
  catalogFailureCause,
  keyResolverFromEnv,
  maskingNeedsCatalog,
  withPolicyMasking,
} from '../masking/index.js';
import { MaskingKeyMetrics, unreadableMaskingKeys } from '../masking/masking-keys.js';
import { compilePolicyFiles, createPolicySource, type PolicySource } from '../policy-source/index.js';
import { DEFAULT_ANALYZED_STATEMENT_BYTES } from '../protocol/codes.js';
import type { ProxyHooks } from '../proxy/hooks.js';
import { DEFAULT_RETAINED_STATEMENT_BYTES, RetainedBudget } from '../proxy/retained-budget.js';
import { defaultStatementBudget, StatementBudget } from '../proxy/statement-budget.js';
import { type Sidecar, type SidecarOptions, startSidecar } from '../start-sidecar.js';
import { ApprovalMetrics } from './approval-metrics.js';
import type { GovernanceEvent } from './governance-events.js';
import { type ControlListener, ControlMetrics, type NatsControlOptions, natsControl } from './nats-control.js';
import { natsPresence } from './nats-presence.js';
import { identityConfigOf } from './policy-authenticator.js';
import { createPolicyHooks, type PolicyHooks, type PolicyHooksOptions } from './policy-hooks.js';
import { policyNeedsCatalog } from './policy-session.js';
import { RateLimitMetrics } from './rate-limit.js';
import { sessionSetupSql } from './session-setup.js';
import { SQLSTATE } from './sqlstate.js';

/** How long a login waits for the catalog's first load when the policy's decisions need it. */
const CATALOG_WAIT_MS = 5000;

export interface GovernedSidecarOptions extends Omit<SidecarOptions, 'hooks' | 'listen' | 'upstream'> {
  /** A policy file, a directory of them, or a mounted ConfigMap directory (`--policy`). */
  policyPath: string;
  /** Loopback by default: the agent container shares the pod's network namespace. */
  listenHost?: string;
  /** Overrides the policy's listen.port; only valid with a single policy (`--listen`). */
  listenPort?: number;
  /** Overrides fields of the policy's database (`--upstream`). */
  upstream?: Partial<SidecarOptions['upstream']>;
  governance?: Omit<PolicyHooksOptions, 'source' | 'policyName'>;
  /** Lets the caller wrap each listener's hooks (e.g. audit); gets the policy name the listener serves. */
  wrapHooks?: (hooks: PolicyHooks, policyName: string) => ProxyHooks;
  debounceMs?: number;
  pollMs?: number;
  /**
   * Where live control (governance/nats-control.ts) gets its NATS connection: by default the audit sink's, when it
   * is NATS (one connection, one set of credentials); `false` turns it off.
   */
  control?: Pick<NatsControlOptions, 'onConnected'> | false;
  /** How long a login waits at start for live control's first read-back (default 5 s; tests shorten it). */
  liveStateWaitMs?: number;
  /** Where MaskingRule keySecretRefs are read from; default `$PGWARDEN_MASKING_KEYS_DIR` (keyResolverFromEnv). */
  resolveMaskingKey?: KeyResolver;
  /**
   * `--catalog-query-timeout`: the longest one client statement waits for the catalog in all, and one query of the
   * catalog connection may take (default 5 s).
   */
  catalogQueryTimeoutMs?: number;
}

export interface GovernedSidecar {
  source: PolicySource<RenderedPolicy[]>;
  listeners: { policy: string; sidecar: Sidecar; hooks: PolicyHooks }[];
  close(graceMs?: number): Promise<void>;
}

/**
 * Beyond the schema: checks that only the sidecar can make (the identity config builds, the setup SQL renders),
 * so such a policy is rejected at load time and the last good one stays, instead of failing at a client's login.
 */
export function compileSidecarPolicy(files: Parameters<typeof compilePolicyFiles>[0]) {
  const compiled = compilePolicyFiles(files);
  for (const p of compiled.value) {
    const id = identityConfigOf(p.policy.spec.authentication);
    if (id.mode === 'oidc') createOidcVerifier(id.oidc);
    sessionSetupSql(p.policy.spec);
  }
  return compiled;
}

/**
 * `pgwarden sidecar --policy PATH`: loads and watches the policy, and opens one listener per policy (its
 * listen.port), each enforcing its own policy against its own database. Policies added to the file later are
 * validated but get no listener until restart; a listener whose policy disappears denies everything.
 */
export async function startGovernedSidecar(opts: GovernedSidecarOptions): Promise<GovernedSidecar> {
  await initSqlParser();
  // Before listening (and so before /readyz passes): the first client statements would otherwise pay for V8 and
  // the WASM tiers compiling the parser path, at several times the warm cost.
  await warmUpSqlAnalysis();
  const source = createPolicySource({
    path: opts.policyPath,
    compile: compileSidecarPolicy,
    debounceMs: opts.debounceMs,
    pollMs: opts.pollMs,
  });
  // With the process's audit recorder, governance events are audited here (policy loads and rejections, refused
  // logins, review holds), so every caller gets the same audit trail; `governance.onEvent` still sees them all.
  const recorder = opts.auditRecorder;
  const subscriber = opts.governance?.onEvent;
  const approvalMetrics = new ApprovalMetrics();
  const rateLimitMetrics = new RateLimitMetrics();
  const controlMetrics = new ControlMetrics();
  const maskingKeyMetrics = new MaskingKeyMetrics();
  const catalogMetrics = new CatalogMetrics();
  const events = (e: GovernanceEvent) => {
    if (recorder) recordPolicyEvent(recorder, e);
    approvalMetrics.onEvent(e);
    rateLimitMetrics.onEvent(e);
    controlMetrics.onEvent(e);
    subscriber?.(e);
  };
  source.on(events);
  // The gate's own events (a grant revoked) take the same path: log, metrics, audit subscribers.
  opts.governance?.approvals?.listen?.(events);
  let firstError: string | undefined;
  const off = source.on((e) => {
    if (e.type === 'policy.rejected') firstError ??= e.message;
  });
  source.start();
  off();
  const set = source.current()?.value;
  if (!set) {
    source.close();
    throw new Error(`no valid policy at ${opts.policyPath}: ${firstError ?? 'unknown error'}`);
  }
  if (opts.listenPort !== undefined && set.length > 1) {
    source.close();
    throw new Error(
      `${set.length} policies in ${opts.policyPath}: each listens on its own listen.port, so --listen cannot apply`,
    );
  }
  const ports = new Map<number, string>();
  for (const p of set) {
    const port = opts.listenPort ?? p.policy.spec.listen.port;
    const other = ports.get(port);
    if (other !== undefined) {
      source.close();
      throw new Error(`policies "${other}" and "${p.policy.name}" both listen on port ${port}`);
    }
    ports.set(port, p.policy.name);
  }
  // The collector's live control (terminate, suspend, resume) and presence ride on the audit sink's NATS connection.
  const sink = opts.auditRecorder?.sink ?? opts.audit;
  const link =
    opts.control === false
      ? undefined
      : (opts.control ?? (sink instanceof NatsAuditSink ? { onConnected: sink.onConnected.bind(sink) } : undefined));
  // A pod that starts during a live suspension must not let the agent in before it has read the suspension back:
  // logins wait for the first read-back, but no longer than LIVE_STATE_WAIT_MS; then, while NATS stays away, they
  // are refused unless the policy's liveControl.failMode is open (spec.suspend is the switch that does not depend
  // on NATS). Once read back, the state is known for good: later outages keep the last state.
  // Known from the start without live control (no NATS link): there is no live state to wait for.
  let liveKnown = !link;
  controlMetrics.setStateKnown(liveKnown);
  const markLiveKnown = () => {
    liveKnown = true;
    controlMetrics.setStateKnown(true);
  };
  let liveStateKnown = () => {};
  const liveState = link
    ? new Promise<void>((resolve) => {
        liveStateKnown = () => {
          markLiveKnown();
          resolve();
        };
        setTimeout(resolve, opts.liveStateWaitMs ?? LIVE_STATE_WAIT_MS).unref();
      })
    : Promise.resolve();
  const listeners: GovernedSidecar['listeners'] = [];
  // One budget of statement text for the process, whichever listener a session came through.
  const maxStatementBytes = opts.maxStatementBytes ?? DEFAULT_ANALYZED_STATEMENT_BYTES;
  const statementBudget =
    opts.statementBudget ??
    new StatementBudget(
      opts.maxBufferedStatementBytes ?? defaultStatementBudget(maxStatementBytes),
      opts.statementStallTimeoutMs,
    );
  const retainedBudget =
    opts.retainedBudget ?? new RetainedBudget(opts.maxRetainedStatementBytes ?? DEFAULT_RETAINED_STATEMENT_BYTES);
  const maskings: { close(): void }[] = [];
  /** Every listener's catalog, for /readyz (served by the first listener's admin server for the whole process). */
  const catalogs: CatalogListener[] = [];
  // One resolver for the process: it reads each key once, and the load-time check below sees what masking uses.
  const resolveKey = opts.resolveMaskingKey ?? keyResolverFromEnv();
  let opened = false;
  let open!: () => void;
  let fail!: (err: unknown) => void;
  const serveFrom = new Promise<void>((resolve, reject) => {
    open = resolve;
    fail = reject;
  });
  serveFrom.catch(() => undefined);
  try {
    for (const [i, p] of set.entries()) {
      const db = p.policy.spec.database;
      let catalog: CatalogCache | undefined;
      const hooks: PolicyHooks = await createPolicyHooks({
        ...opts.governance,
        // A policy whose decisions depend on user functions decides with the catalog: the first login waits for its
        // first load (bounded; without one, possible calls count as calls, which denies more).
        beforeLogin: async () => {
          await liveState;
          const policy = hooks.policy();
          if (catalog === undefined || catalog.loaded || !policy || !policyNeedsCatalog(policy.policy.spec)) return;
          // A catalog that cannot be read lets the login in: the statements that need it are refused one by one.
          await Promise.race([
            catalog.ensure().catch(() => undefined),
            new Promise((r) => setTimeout(r, CATALOG_WAIT_MS).unref()),
          ]);
        },
        catalog: () => catalog,
        liveStateUnknown: () => !liveKnown,
        onEvent: events,
        source,
        policyName: set.length > 1 ? p.policy.name : undefined,
      });
      const upstream = {
        host: db.host,
        port: db.port,
        database: db.name,
        sslmode: db.sslMode,
        channelBinding: db.channelBinding,
        ...opts.upstream,
      };
      // Masking (docs/masking.md) wraps the policy hooks inside audit (startSidecar adds audit outside), so audit
      // sees scrubbed records; it reads the catalog over its own upstream connection, closed with the listener.
      const masked = withPolicyMasking(hooks, {
        policy: () => hooks.policy(),
        upstream,
        credentials: credentialsProvider(opts.credentials),
        resolveKey,
        catalogQueryTimeoutMs: opts.catalogQueryTimeoutMs,
        policyReadsCatalog: (policy) => policyNeedsCatalog(policy.policy.spec),
        onCatalogEvent: catalogEvents(p.policy.name, catalogMetrics.listen(p.policy.name), opts.logger),
      });
      maskings.push(masked);
      catalog = masked.catalog;
      catalogs.push({ policy: p.policy.name, hooks, catalog });
      const inner = withPolicyView(masked, hooks) as PolicyHooks;
      const sidecar = await startSidecar({
        ...opts,
        maxStatementBytes,
        statementBudget,
        retainedBudget,
        listen: { host: opts.listenHost ?? '127.0.0.1', port: opts.listenPort ?? p.policy.spec.listen.port },
        upstream,
        hooks: opts.wrapHooks ? withPolicyView(opts.wrapHooks(inner, p.policy.name), hooks) : inner,
        // One admin server per process: the first listener's.
        http: i === 0 ? opts.http : false,
        readiness: i === 0 ? () => (opened ? catalogReadiness(catalogs) : ['listeners not all open yet']) : undefined,
        serveFrom,
      });
      source.registerMetrics(sidecar.metrics.registry);
      approvalMetrics.register(sidecar.metrics.registry);
      rateLimitMetrics.register(sidecar.metrics.registry);
      controlMetrics.register(sidecar.metrics.registry);
      maskingKeyMetrics.register(sidecar.metrics.registry);
      catalogMetrics.register(sidecar.metrics.registry);
      listeners.push({ policy: p.policy.name, sidecar, hooks });
    }
    opened = true;
    open();
  } catch (err) {
    fail(err);
    await Promise.all(listeners.map((l) => l.sidecar.close(0)));
    for (const m of maskings) m.close();
    source.close();
    throw err;
  }
  // spec.suspend, the kill switch: a reload that suspends a listener's policy ends its sessions at once (its
  // authenticator already refuses new ones, its sessions deny every statement until they are gone).
  const endIfSuspended = (l: GovernedSidecar['listeners'][number]): number => {
    const p = l.hooks.policy();
    if (!p?.policy.spec.suspend) return 0;
    const n = l.sidecar.killSessions(
      {
        code: SQLSTATE.adminShutdown,
        message: `terminating connection because pgwarden policy "${p.policy.name}" was suspended`,
      },
      'policy suspended',
    );
    if (n > 0) opts.logger?.warn({ policy: p.policy.name, sessions: n }, 'policy suspended: sessions ended');
    return n;
  };
  // A keyed hash strategy whose key cannot be read still masks, with the per-process key, but its pseudonyms then
  // differ between pods and restarts: said at every load (a rule edited after the pod started names a Secret the
  // pod does not mount until it is recreated), by name, never the key.
  const checkMaskingKeys = (l: GovernedSidecar['listeners'][number]) => {
    const p = l.hooks.policy();
    if (!p) return;
    const keys = unreadableMaskingKeys(p, resolveKey);
    maskingKeyMetrics.set(l.policy, keys.length);
    if (keys.length === 0) return;
    events({ type: 'masking.keys_unreadable', policy: l.policy, keys });
    for (const k of keys)
      opts.logger?.warn(
        { policy: l.policy, rule: k.rule, secret: k.secret, key: k.key, reason: k.reason },
        `MaskingRule "${k.rule}": key "${k.key}" of Secret "${k.secret}" cannot be read (${k.reason}); its hash columns are masked with a per-process key, so pseudonyms will not match across pods or restarts`,
      );
  };
  for (const l of listeners) checkMaskingKeys(l);
  const offLoaded = source.on((e) => {
    if (e.type !== 'policy.loaded') return;
    for (const l of listeners) {
      endIfSuspended(l);
      checkMaskingKeys(l);
    }
  });
  // guardrails.rateLimit.scope: policy: the pods serving a policy count each other over the same connection.
  const presence =
    link &&
    natsPresence({
      onConnected: link.onConnected,
      instance: randomUUID(),
      listeners: listeners.map((l) => ({
        policy: () => policyRefOf(l),
        shared: () => l.hooks.policy()?.policy.spec.guardrails.rateLimit?.scope === 'policy',
        setPods: (n) => {
          l.hooks.setRatePods(n);
          rateLimitMetrics.pods(l.policy, n);
        },
      })),
    });
  if (!link)
    for (const l of listeners)
      if (l.hooks.policy()?.policy.spec.guardrails.rateLimit?.scope === 'policy')
        opts.logger?.warn(
          { policy: l.policy },
          'guardrails.rateLimit.scope is policy, but without a NATS audit sink this pod cannot find the others: it keeps the whole budget',
        );
  const control =
    link &&
    natsControl({
      onConnected: link.onConnected,
      listeners: listeners.map((l) => controlListener(l, endIfSuspended)),
      emit: events,
      log: (level, msg, fields) => opts.logger?.[level](fields ?? {}, msg),
    });
  if (control) void control.ready.then(liveStateKnown);
  else markLiveKnown();
  return {
    source,
    listeners,
    async close(graceMs) {
      offLoaded();
      control?.close();
      presence?.close();
      source.close();
      await Promise.all(listeners.map((l) => l.sidecar.close(graceMs)));
      for (const m of maskings) m.close();
    },
  };
}

interface CatalogListener {
  policy: string;
  hooks: PolicyHooks;
  catalog: CatalogCache;
}

/** How long a readiness probe waits for a catalog's first load (the kubelet gives the probe 2 s in all). */
const READY_FIRST_LOAD_MS = 1000;

/**
 * /readyz's catalog reasons: a listener whose decisions read the catalog (a policy with function rules, masking with
 * column rules) is not ready while it cannot be read, since its statements needing a check are refused (53000), nor
 * before its first load. Each probe starts a check when one is due (at most one per second, paced after failures),
 * so a sidecar without statements notices an outage and the recovery too; a first load is waited for briefly.
 */
async function catalogReadiness(listeners: readonly CatalogListener[]): Promise<string[]> {
  const reasons: string[] = [];
  for (const l of listeners) {
    const p = l.hooks.policy();
    if (!p || !(policyNeedsCatalog(p.policy.spec) || maskingNeedsCatalog(p))) continue;
    const c = l.catalog;
    if (!c.loaded && !c.failing) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        c.refresh(),
        new Promise((r) => {
          timer = setTimeout(r, READY_FIRST_LOAD_MS);
        }),
      ]);
      clearTimeout(timer);
    } else c.refreshIfOld();
    if (c.failing)
      reasons.push(
        `catalog unavailable (policy ${l.policy}, ${catalogFailureCause(c.lastError)}): ${c.lastError?.message ?? 'unknown error'}`,
      );
    else if (!c.loaded) reasons.push(`catalog not loaded yet (policy ${l.policy})`);
  }
  return reasons;
}

/**
 * A listener's catalog events to its metrics and the log: a warning when the catalog stops answering (then one per
 * failed retry at debug level, at most one per 2 s), and when it answers again.
 */
function catalogEvents(
  policy: string,
  metrics: (e: CatalogEvent) => void,
  logger: SidecarOptions['logger'],
): (e: CatalogEvent) => void {
  return (e) => {
    metrics(e);
    if (e.type === 'catalog.recovered')
      logger?.info({ policy, downMs: e.downMs }, 'catalog connection answers again: statements are checked again');
    else if (e.first)
      logger?.warn(
        { policy, cause: e.cause, err: e.error },
        'catalog unavailable: statements that need a catalog check (masked sessions, names the snapshot does not know) are refused (53000) until it answers',
      );
    else logger?.debug({ policy, cause: e.cause, err: e.error }, 'catalog still unavailable');
  };
}

/** The longest a login waits at start for live control to read back whether its policy is suspended. */
const LIVE_STATE_WAIT_MS = 5000;

/** A listener's policy as control and presence subjects name it. */
function policyRefOf(l: GovernedSidecar['listeners'][number]) {
  const p = l.hooks.policy();
  return p ? controlPolicyRef(p.policy.name, p.policy.namespace) : undefined;
}

/** One listener as the control channel sees it. */
function controlListener(
  l: GovernedSidecar['listeners'][number],
  endIfSuspended: (l: GovernedSidecar['listeners'][number]) => number,
): ControlListener {
  return {
    policy: () => policyRefOf(l),
    decisionKeys: () => l.hooks.policy()?.policy.spec.approval.decisionKeys ?? [],
    sessionIds: () => l.sidecar.sessionIds(),
    hasSession: (id) => l.sidecar.sessionIds().includes(id),
    terminate: (m) =>
      l.sidecar.killSession(
        m.session,
        {
          code: SQLSTATE.adminShutdown,
          message: `terminating connection due to administrator command: ended by ${m.by} through pgwarden: ${m.reason}`,
        },
        `terminated by ${m.by} (control ${m.id}): ${m.reason}`,
      )
        ? 1
        : 0,
    suspend(m) {
      l.hooks.setSuspension(m);
      return m ? endIfSuspended(l) : 0;
    },
    suspension: () => l.hooks.suspension(),
  };
}

/**
 * Audit (withAudit, applied by startSidecar around these hooks) reads the policy's `audit` settings through
 * `policy()`; a wrapper such as masking does not forward it, so it is added here when missing.
 */
function withPolicyView(wrapped: ProxyHooks, hooks: PolicyHooks): ProxyHooks {
  const w = wrapped as ProxyHooks & { policy?: unknown };
  if (typeof w.policy !== 'function') Object.assign(w, { policy: () => hooks.policy() });
  return w;
}
