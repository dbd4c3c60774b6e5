import { type DatabaseAccessPolicySpec, parseDuration } from '@pgwarden/policy';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Verdict } from '../proxy/hooks.js';
import type { GovernanceEvent } from './governance-events.js';
import { registerOnce } from './governance-metrics.js';
import { SQLSTATE } from './sqlstate.js';

export type RateLimitSpec = NonNullable<DatabaseAccessPolicySpec['guardrails']['rateLimit']>;

/** What the bucket says about a statement: run now, run after `waitMs`, or refuse (deny mode, or a wait too long). */
export type Admission = { waitMs: number } | { refused: true; waitMs: number };

/**
 * A token bucket shared by every session of one listener: `burst` tokens, refilled continuously at
 * `statementsPerSecond`. In delay mode a statement that finds too few tokens reserves them anyway (the balance goes
 * negative) and waits until the refill covers it, so waiting statements run in arrival order at the configured rate;
 * one that would wait longer than `maxDelayMs` is refused and reserves nothing.
 */
export class RateLimiter {
  /** The rate and burst in force here: the policy's, divided by the pods sharing it (scope: policy). */
  perSecond: number;
  burst: number;
  /** How many pods share the policy's budget (1 with scope: pod). */
  sharedBy = 1;
  readonly delay: boolean;
  readonly maxDelayMs: number;
  /** The settings it was made from, to tell whether a reloaded policy changed them. */
  readonly key: string;
  private tokens: number;
  private at: number;

  private readonly fullPerSecond: number;
  private readonly fullBurst: number;

  constructor(
    spec: RateLimitSpec,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.fullPerSecond = spec.statementsPerSecond;
    this.fullBurst = spec.burst ?? Math.max(1, Math.ceil(spec.statementsPerSecond));
    this.perSecond = this.fullPerSecond;
    this.burst = this.fullBurst;
    this.delay = spec.onExceed === 'delay';
    this.maxDelayMs = parseDuration(spec.maxDelay) ?? 5000;
    this.key = rateLimitKey(spec);
    this.tokens = this.burst;
    this.at = this.now();
  }

  /**
   * scope: policy: this pod's share when `pods` pods serve the policy. The rate divides exactly; the burst rounds
   * down but stays at least 1, so with more pods than burst the pods together may burst a little over it.
   */
  share(pods: number): void {
    const n = Math.max(1, Math.floor(pods));
    if (n === this.sharedBy) return;
    this.take(0); // settle the balance at the old rate first
    this.sharedBy = n;
    this.perSecond = this.fullPerSecond / n;
    this.burst = Math.max(1, Math.floor(this.fullBurst / n));
    this.tokens = Math.min(this.tokens, this.burst);
  }

  /**
   * Takes `n` tokens for a statement (a multi-statement Query counts each statement, at most `burst`, so that no
   * request is refused for ever).
   */
  take(n: number): Admission {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.at) * this.perSecond) / 1000);
    this.at = t;
    const need = Math.min(n, this.burst);
    if (this.tokens >= need) {
      this.tokens -= need;
      return { waitMs: 0 };
    }
    const waitMs = ((need - this.tokens) * 1000) / this.perSecond;
    if (!this.delay || waitMs > this.maxDelayMs) return { refused: true, waitMs };
    this.tokens -= need;
    return { waitMs };
  }
}

const round2 = (n: number) => Math.round(n * 100) / 100;

export function rateLimitKey(spec: RateLimitSpec | undefined): string {
  return spec === undefined
    ? ''
    : JSON.stringify([spec.statementsPerSecond, spec.burst, spec.onExceed, spec.maxDelay, spec.scope]);
}

/** Statements of a verdict that count against the limit: all but transaction control, which must always get through. */
export function limitedStatements(v: Verdict): number {
  const st = v.statements;
  if (st === undefined || st.length === 0) return 1;
  let n = 0;
  for (const s of st) if (s.kind !== 'transaction') n++;
  return n;
}

/** The denial for a statement over the limit (SQLSTATE 53400, configuration_limit_exceeded). */
export function rateLimitedVerdict(limiter: RateLimiter, v: Verdict, waitMs: number): Verdict {
  const shared =
    limiter.sharedBy > 1 ? ` (this pod's share: the policy's budget is split among ${limiter.sharedBy} pods)` : '';
  const rate = `${round2(limiter.perSecond)} statements/s, burst ${limiter.burst}${shared}`;
  const message = limiter.delay
    ? `pgwarden: statement rate limit exceeded (guardrails.rateLimit: ${rate}): it would wait ${Math.ceil(waitMs)} ms, longer than maxDelay ${limiter.maxDelayMs} ms`
    : `pgwarden: statement rate limit exceeded (guardrails.rateLimit: ${rate})`;
  return {
    action: 'deny',
    code: SQLSTATE.configurationLimitExceeded,
    message,
    hint: `Retry in ${Math.max(1, Math.ceil(waitMs))} ms or later.`,
    rule: 'guardrails.rateLimit',
    reason: 'rate_limited',
    policy: v.policy,
    statements: v.statements,
  };
}

/** guardrails.rateLimit as metrics: statements denied or delayed, and how long the delayed ones waited. */
export class RateLimitMetrics {
  private readonly limited = new Counter({
    name: 'pgwarden_rate_limited_total',
    help: 'Statements over guardrails.rateLimit, by outcome (denied, delayed)',
    labelNames: ['outcome'],
    registers: [],
  });
  private readonly waited = new Histogram({
    name: 'pgwarden_rate_limit_wait_seconds',
    help: 'How long statements delayed by guardrails.rateLimit (onExceed: delay) waited for their turn',
    buckets: [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [],
  });

  private readonly sharing = new Gauge({
    name: 'pgwarden_rate_limit_pods',
    help: 'guardrails.rateLimit.scope policy: how many pods this sidecar counts as sharing the policy budget (itself included)',
    labelNames: ['policy'],
    registers: [],
  });

  /** scope: policy: the count presence last gave for a policy. */
  pods(policy: string, n: number): void {
    this.sharing.set({ policy }, n);
  }

  readonly onEvent = (e: GovernanceEvent): void => {
    if (e.type !== 'statement.rate_limited') return;
    this.limited.inc({ outcome: e.outcome });
    if (e.outcome === 'delayed') this.waited.observe(e.waitMs / 1000);
  };

  register(registry: Registry): void {
    registerOnce(registry, [
      ['pgwarden_rate_limited_total', this.limited],
      ['pgwarden_rate_limit_wait_seconds', this.waited],
      ['pgwarden_rate_limit_pods', this.sharing],
    ]);
  }
}
