import { createLocalJWKSet, errors, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import type { HttpsFetch } from './https-fetch.js';

export interface JwksCacheOptions {
  uri: string;
  /** Already wrapped in the failure back-off (withFailureBackoff): a failing endpoint is asked once per retry. */
  fetch: HttpsFetch;
  /** Minimum time between refetches triggered by an unknown `kid`. */
  cooldownMs: number;
  /** Shortest refresh interval, whatever the response's Cache-Control says (no-cache, max-age=0). */
  minRefreshMs: number;
  /** Longest refresh interval: a longer max-age, or none, is cut to this. */
  maxRefreshMs: number;
  /** While the identity provider cannot be asked, keys fetched this recently keep verifying; older ones do not. */
  maxStaleMs: number;
  /**
   * After a failed refresh, the next waits this long. withFailureBackoff covers transport, status and JSON failures;
   * this covers a JSON body that is not a key set, which would otherwise be fetched again at every login.
   */
  retryMs: number;
}

/** How long a JWKS response may be used (RFC 9111 §4.2.1: max-age minus the Age a cache in front already spent). */
export function freshnessMs(headers: Headers, minMs: number, maxMs: number): number {
  const cc = (headers.get('cache-control') ?? '').toLowerCase();
  let ms = maxMs;
  for (const part of cc.split(',')) {
    const d = part.trim();
    if (d === 'no-cache' || d === 'no-store') ms = 0;
    const m = /^max-age\s*=\s*"?(\d{1,10})"?$/.exec(d);
    if (m && ms !== 0) ms = Math.min(maxMs, Number(m[1]) * 1000);
  }
  const age = /^\d{1,10}$/.exec((headers.get('age') ?? '').trim());
  if (age) ms -= Number(age[0]) * 1000;
  return Math.max(minMs, Math.min(maxMs, ms));
}

/**
 * The issuer's key set, as jwtVerify's key function. jose's remote key set refreshes on a fixed age and ignores
 * the response's Cache-Control, so a key the identity provider stopped publishing stayed trusted for that whole age.
 * Here a refresh is due after the response's max-age, bounded by [minRefreshMs, maxRefreshMs], and replaces the
 * whole set: a key no longer listed stops verifying at the first login after the refresh is due. The refresh runs on
 * that login (concurrent logins share it) rather than on a timer, so an idle verifier asks nothing, and a login never
 * verifies against keys older than the refresh interval while the identity provider answers.
 */
export function createJwksCache(o: JwksCacheOptions): JWTVerifyGetKey {
  let local: ReturnType<typeof createLocalJWKSet> | undefined;
  let fetchedAt = Number.NEGATIVE_INFINITY;
  let refreshAfterMs = 0;
  let attemptedAt = Number.NEGATIVE_INFINITY;
  let pending: Promise<void> | undefined;
  let failedAt = Number.NEGATIVE_INFINITY;
  let failure: unknown;

  const fetchOnce = async (): Promise<void> => {
    attemptedAt = Date.now();
    try {
      const res = await o.fetch(o.uri);
      if (res.status !== 200) throw new errors.JOSEError('Expected 200 OK from the JSON Web Key Set HTTP response');
      local = createLocalJWKSet((await res.json()) as JSONWebKeySet);
      fetchedAt = Date.now();
      failedAt = Number.NEGATIVE_INFINITY;
      refreshAfterMs = freshnessMs(res.headers, o.minRefreshMs, o.maxRefreshMs);
    } catch (err) {
      failedAt = Date.now();
      failure = err;
      throw err;
    }
  };
  // Concurrent logins share one request; cleared when it settles, whatever it did.
  const reload = (): Promise<void> => {
    pending ??= fetchOnce().finally(() => {
      pending = undefined;
    });
    return pending;
  };

  return async (header, token) => {
    if (!local || Date.now() - fetchedAt >= refreshAfterMs) {
      try {
        if (Date.now() - failedAt < o.retryMs) throw failure;
        await reload();
      } catch (err) {
        // An identity provider that cannot be asked cannot say a key was withdrawn either: the keys held keep
        // verifying for a while, so a short outage does not lock every agent out, but not for ever.
        if (!local || Date.now() - fetchedAt >= o.maxStaleMs) throw err;
      }
    }
    const keys = local as NonNullable<typeof local>;
    try {
      return await keys(header, token);
    } catch (err) {
      // Key rotation: a kid the cached set lacks may be new. Counted from the last attempt, so made-up kids cannot
      // make the verifier ask more than once per cooldown; logins arriving while that fetch runs wait for it.
      if (!(err instanceof errors.JWKSNoMatchingKey)) throw err;
      if (pending) await pending;
      else if (Date.now() - attemptedAt >= o.cooldownMs) await reload();
      else throw err;
      return (local as NonNullable<typeof local>)(header, token);
    }
  };
}
