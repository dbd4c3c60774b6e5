import { describe, expect, it } from 'vitest';
import { SignInRate, signInRateOf } from './sign-in-rate.js';

describe('the sign-in token bucket', () => {
  it('grants a burst, then one per interval, and says how long to wait; each client has its own', () => {
    let now = 1_000_000;
    const rate = new SignInRate({ burst: 3, perMinute: 6 }, () => now);
    expect([1, 2, 3, 4].map(() => rate.take('a'))).toEqual([0, 0, 0, 10]);
    expect(rate.take('b')).toBe(0);
    now += 4_000;
    expect(rate.take('a')).toBe(6);
    now += 6_000;
    expect([rate.take('a'), rate.take('a')]).toEqual([0, 10]);
    // Idle long enough, a client has its whole burst again, never more.
    now += 3_600_000;
    expect([1, 2, 3, 4].map(() => rate.take('a'))).toEqual([0, 0, 0, 10]);
  });

  it('past 10,000 clients forgets those whose bucket is full again first', () => {
    let now = 0;
    const rate = new SignInRate({ burst: 2, perMinute: 1 }, () => now);
    rate.take('busy');
    rate.take('busy');
    // Known since, so the least recently used: only its bucket not being full keeps it.
    for (let i = 0; i < 9_999; i++) rate.take(`idle-${i}`);
    now += 60_000; // the idle ones are full again, the busy one is not
    rate.take('new-1');
    rate.take('new-2');
    // Still remembered with the one token it earned since: the flood of addresses did not refill its bucket.
    expect(rate.take('busy')).toBe(0);
    expect(rate.take('busy')).toBeGreaterThan(0);
  });

  it('takes what is set, the defaults for the rest, and refuses a burst or refill out of bounds', () => {
    expect(signInRateOf()).toEqual({ burst: 20, perMinute: 10 });
    expect(signInRateOf({ burst: 5 })).toEqual({ burst: 5, perMinute: 10 });
    expect(signInRateOf({ perMinute: 0.5 })).toEqual({ burst: 20, perMinute: 0.5 });
    expect(signInRateOf({ burst: 1000, perMinute: 6000 })).toEqual({ burst: 1000, perMinute: 6000 });
    for (const bad of [{ burst: 0 }, { burst: 2.5 }, { burst: 1001 }, { burst: Number.NaN }])
      expect(() => signInRateOf(bad), JSON.stringify(bad)).toThrow(
        /--sign-in-burst\) must be a whole number from 1 to 1000/,
      );
    // 0 would never refill; Infinity would be no limit at all.
    for (const bad of [
      { perMinute: 0 },
      { perMinute: -1 },
      { perMinute: 6001 },
      { perMinute: Number.POSITIVE_INFINITY },
    ])
      expect(() => signInRateOf(bad), String(bad.perMinute)).toThrow(/--sign-in-per-minute\) must be above 0/);
  });
});
