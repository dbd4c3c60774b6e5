import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import type { Verdict } from '../proxy/hooks.js';
import { limitedStatements, RateLimiter, RateLimitMetrics, rateLimitedVerdict } from './rate-limit.js';

/** A clock the test moves by hand. */
function clock() {
  let t = 1000;
  return {
    now: () => t,
    advance: (ms: number) => {
      t += ms;
    },
  };
}

describe('RateLimiter (guardrails.rateLimit token bucket)', () => {
  it('deny: a burst runs at once, the next is refused with the wait it would need, and the refill admits again', () => {
    const c = clock();
    const l = new RateLimiter({ statementsPerSecond: 10, burst: 3, onExceed: 'deny', maxDelay: '5s' }, c.now);
    expect([l.take(1), l.take(1), l.take(1)]).toEqual([{ waitMs: 0 }, { waitMs: 0 }, { waitMs: 0 }]);
    expect(l.take(1)).toEqual({ refused: true, waitMs: 100 });
    // A refusal reserves nothing: after 100 ms exactly one token is back.
    c.advance(100);
    expect(l.take(1)).toEqual({ waitMs: 0 });
    expect(l.take(1)).toMatchObject({ refused: true });
    // Never more than the burst, however long the quiet spell.
    c.advance(60_000);
    for (let i = 0; i < 3; i++) expect(l.take(1)).toEqual({ waitMs: 0 });
    expect(l.take(1)).toMatchObject({ refused: true });
  });

  it('delay: statements over the burst wait their turn in order, and one that would wait past maxDelay is refused', () => {
    const c = clock();
    const l = new RateLimiter({ statementsPerSecond: 20, burst: 1, onExceed: 'delay', maxDelay: '200ms' }, c.now);
    expect(l.take(1)).toEqual({ waitMs: 0 });
    expect(l.take(1)).toEqual({ waitMs: 50 });
    expect(l.take(1)).toEqual({ waitMs: 100 });
    expect(l.take(1)).toEqual({ waitMs: 150 });
    expect(l.take(1)).toEqual({ waitMs: 200 });
    // 250 ms > maxDelay: refused, and it does not push the statements after it further back.
    expect(l.take(1)).toEqual({ refused: true, waitMs: 250 });
    c.advance(200);
    expect(l.take(1)).toEqual({ waitMs: 50 });
  });

  it('scope policy: a pod takes its share of the budget, and the share follows the count of pods', () => {
    const c = clock();
    const spec = {
      statementsPerSecond: 12,
      burst: 6,
      onExceed: 'deny' as const,
      maxDelay: '5s',
      scope: 'policy' as const,
    };
    const l = new RateLimiter(spec, c.now);
    l.share(3);
    expect([l.perSecond, l.burst, l.sharedBy]).toEqual([4, 2, 3]);
    // The balance shrinks to the new burst at once: no pod keeps more than its share.
    expect([l.take(1), l.take(1)]).toEqual([{ waitMs: 0 }, { waitMs: 0 }]);
    expect(l.take(1)).toEqual({ refused: true, waitMs: 250 });
    c.advance(250);
    expect(l.take(1)).toEqual({ waitMs: 0 });
    // A pod left: the share grows back.
    l.share(2);
    expect([l.perSecond, l.burst]).toEqual([6, 3]);
    c.advance(1000);
    for (let i = 0; i < 3; i++) expect(l.take(1)).toEqual({ waitMs: 0 });
    expect(l.take(1)).toMatchObject({ refused: true });
    // More pods than burst: each keeps one.
    l.share(10);
    expect([l.perSecond, l.burst]).toEqual([1.2, 1]);
    expect(rateLimitedVerdict(l, { action: 'allow' }, 500).message).toBe(
      "pgwarden: statement rate limit exceeded (guardrails.rateLimit: 1.2 statements/s, burst 1 (this pod's share: the policy's budget is split among 10 pods))",
    );
  });

  it('a request of more statements than the burst takes the whole burst instead of being refused for ever', () => {
    const c = clock();
    const l = new RateLimiter({ statementsPerSecond: 1, burst: 2, onExceed: 'deny', maxDelay: '5s' }, c.now);
    expect(l.take(5)).toEqual({ waitMs: 0 });
    expect(l.take(1)).toEqual({ refused: true, waitMs: 1000 });
  });

  it('the burst defaults to the rate rounded up (at least 1), maxDelay to 5s; the key changes with any setting', () => {
    const a = new RateLimiter({ statementsPerSecond: 2.5, onExceed: 'delay', maxDelay: '5s' });
    expect([a.burst, a.maxDelayMs, a.delay]).toEqual([3, 5000, true]);
    expect(new RateLimiter({ statementsPerSecond: 0.01, onExceed: 'deny', maxDelay: '1m' }).burst).toBe(1);
    const b = new RateLimiter({ statementsPerSecond: 2.5, burst: 3, onExceed: 'delay', maxDelay: '5s' });
    expect(b.key).not.toBe(a.key);
  });

  it('transaction control never counts: COMMIT and ROLLBACK must always get through', () => {
    const v = (kinds: (string | undefined)[]): Verdict => ({
      action: 'allow',
      statements: kinds.map((kind) => ({ text: 'x', kind })),
    });
    expect(limitedStatements(v(['select']))).toBe(1);
    expect(limitedStatements(v(['transaction']))).toBe(0);
    expect(limitedStatements(v(['transaction', 'update', 'update', 'transaction']))).toBe(2);
    // No analysis (e.g. a verdict without details) counts as one statement.
    expect(limitedStatements({ action: 'allow' })).toBe(1);
  });

  it('the denial is SQLSTATE 53400, names the guardrail and says when to retry; metrics count both outcomes', async () => {
    const deny = new RateLimiter({ statementsPerSecond: 5, burst: 10, onExceed: 'deny', maxDelay: '5s' });
    const v = rateLimitedVerdict(deny, { action: 'allow', policy: { name: 'p', hash: 'h' } }, 149.2);
    expect(v).toMatchObject({
      action: 'deny',
      code: '53400',
      rule: 'guardrails.rateLimit',
      reason: 'rate_limited',
      message: 'pgwarden: statement rate limit exceeded (guardrails.rateLimit: 5 statements/s, burst 10)',
      hint: 'Retry in 150 ms or later.',
      policy: { name: 'p', hash: 'h' },
    });
    const delay = new RateLimiter({ statementsPerSecond: 5, burst: 1, onExceed: 'delay', maxDelay: '1s' });
    expect(rateLimitedVerdict(delay, { action: 'allow' }, 1200)).toMatchObject({
      code: '53400',
      message: expect.stringMatching(/it would wait 1200 ms, longer than maxDelay 1000 ms$/),
    });

    const registry = new Registry();
    const m = new RateLimitMetrics();
    m.register(registry);
    m.register(registry); // a second listener of the same process registers the same metrics once
    const policy = { name: 'p', hash: 'h' };
    m.onEvent({ type: 'statement.rate_limited', session: 's', policy, outcome: 'denied', waitMs: 10 });
    m.onEvent({ type: 'statement.rate_limited', session: 's', policy, outcome: 'delayed', waitMs: 300 });
    m.onEvent({ type: 'statement.rate_limited', session: 's', policy, outcome: 'delayed', waitMs: 30 });
    const text = await registry.metrics();
    expect(text).toMatch(/^pgwarden_rate_limited_total\{outcome="denied"\} 1$/m);
    expect(text).toMatch(/^pgwarden_rate_limited_total\{outcome="delayed"\} 2$/m);
    expect(text).toMatch(/^pgwarden_rate_limit_wait_seconds_count 2$/m);
    expect(text).toMatch(/^pgwarden_rate_limit_wait_seconds_bucket\{le="0.05"\} 1$/m);
  });
});
