import { CollectorError } from '../errors.js';

/** How many sign-ins one client may start: a burst, then one more every `60 / perMinute` seconds. */
export interface SignInRateOptions {
  burst: number;
  perMinute: number;
}

export const DEFAULT_SIGN_IN_RATE: SignInRateOptions = { burst: 20, perMinute: 10 };
/** Bounds of the settings (--sign-in-burst, --sign-in-per-minute): the store keeps 1,000 sign-ins in flight. */
export const MAX_SIGN_IN_BURST = 1000;
export const MAX_SIGN_IN_PER_MINUTE = 6000;

/**
 * The rate from what was set, the defaults for the rest; throws COLLECTOR_BAD_CONFIG for a burst that is no whole
 * number from 1 to MAX_SIGN_IN_BURST, or a refill that is not above 0 and at most MAX_SIGN_IN_PER_MINUTE (0 would
 * never refill: a client's first burst would be its last sign-ins).
 */
export function signInRateOf(set: Partial<SignInRateOptions> = {}): SignInRateOptions {
  const rate = { ...DEFAULT_SIGN_IN_RATE, ...set };
  if (!Number.isInteger(rate.burst) || rate.burst < 1 || rate.burst > MAX_SIGN_IN_BURST)
    throw new CollectorError(
      'COLLECTOR_BAD_CONFIG',
      `the sign-in burst (--sign-in-burst) must be a whole number from 1 to ${MAX_SIGN_IN_BURST}, not ${rate.burst}`,
    );
  if (!Number.isFinite(rate.perMinute) || rate.perMinute <= 0 || rate.perMinute > MAX_SIGN_IN_PER_MINUTE)
    throw new CollectorError(
      'COLLECTOR_BAD_CONFIG',
      `the sign-in rate (--sign-in-per-minute) must be above 0 and at most ${MAX_SIGN_IN_PER_MINUTE}, not ${rate.perMinute}`,
    );
  return rate;
}

/** Clients remembered at most: past this the ones with a full bucket (idle) go, then the longest known. */
const MAX_CLIENTS = 10_000;

/**
 * A token bucket per client key (client-address.ts's `rateKey`) for `/auth/login` and `/auth/callback`: one client
 * starting sign-ins in a loop gets 429 instead of filling the store's table of sign-ins in flight. Per replica and
 * in memory: N replicas give a client N buckets, which bounds a flood just the same.
 */
export class SignInRate {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly opts: SignInRateOptions = DEFAULT_SIGN_IN_RATE,
    private readonly now: () => number = Date.now,
  ) {}

  /** Takes one token for `key`: 0 when granted, else the seconds until the next one. */
  take(key: string): number {
    const now = this.now();
    const perMs = this.opts.perMinute / 60_000;
    const b = this.buckets.get(key);
    const tokens = b ? Math.min(this.opts.burst, b.tokens + (now - b.at) * perMs) : this.opts.burst;
    if (tokens < 1) {
      if (b) Object.assign(b, { tokens, at: now });
      return Math.max(1, Math.ceil((1 - tokens) / perMs / 1000));
    }
    this.buckets.delete(key); // re-inserted last: the Map's order is then least recently used first
    this.buckets.set(key, { tokens: tokens - 1, at: now });
    if (this.buckets.size > MAX_CLIENTS) this.forget(now, perMs);
    return 0;
  }

  private forget(now: number, perMs: number): void {
    for (const [k, b] of this.buckets) if (b.tokens + (now - b.at) * perMs >= this.opts.burst) this.buckets.delete(k);
    for (const k of this.buckets.keys()) {
      // Down to 90%, so that a flood of new clients pays for this walk once per thousand of them, not each time.
      if (this.buckets.size <= MAX_CLIENTS * 0.9) break;
      this.buckets.delete(k);
    }
  }
}
