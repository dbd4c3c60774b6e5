import { describe, expect, it } from 'vitest';
import {
  afterAttempt,
  deliveredHere,
  type OutcomeFacts,
  outcomeSkipReason,
  parseRetryAfter,
  RequestNoticeLog,
  type RetryPolicy,
  shownBefore,
  skipReason,
} from './notification-delivery.js';

const NOW = Date.parse('2026-11-30T12:00:00Z');
const IN_10_MIN = new Date(NOW + 600_000).toISOString();
const RETRY: RetryPolicy = { maxAttempts: 5, baseDelayMs: 1000, maxDelayMs: 8000 };

describe('notification delivery rules', () => {
  it('skips requests that expired, or that the queue knows were decided or closed', () => {
    expect(skipReason(IN_10_MIN, undefined, NOW)).toBeUndefined();
    expect(skipReason(IN_10_MIN, 'pending', NOW)).toBeUndefined();
    expect(skipReason(new Date(NOW).toISOString(), undefined, NOW)).toBe('expired');
    expect(skipReason(IN_10_MIN, 'decided', NOW)).toBe('already decided');
    expect(skipReason(IN_10_MIN, 'withdrawn', NOW)).toBe('already withdrawn');
  });

  it('acks a 2xx as sent; fails a redirect or a 4xx at once, except 408 and 429', () => {
    for (const status of [200, 202, 204])
      expect(afterAttempt({ status }, 1, IN_10_MIN, NOW, RETRY).outcome).toBe('sent');
    for (const status of [301, 302, 400, 401, 403, 404, 410])
      expect(afterAttempt({ status }, 1, IN_10_MIN, NOW, RETRY)).toEqual({
        ack: true,
        outcome: 'failed',
        reason: `HTTP ${status} (not retried)`,
      });
    for (const result of [
      { status: 408 },
      { status: 429 },
      { status: 500 },
      { status: 503 },
      { error: 'ECONNREFUSED' },
    ])
      expect(afterAttempt(result, 1, IN_10_MIN, NOW, RETRY)).toMatchObject({ ack: false, outcome: 'retried' });
  });

  it('backs off exponentially within the cap, honours Retry-After, and gives up after the last attempt', () => {
    const delays = [1, 2, 3, 4].map((n) => (afterAttempt({ status: 500 }, n, IN_10_MIN, NOW, RETRY) as any).delayMs);
    expect(delays).toEqual([1000, 2000, 4000, 8000]);
    expect(afterAttempt({ status: 500 }, 5, IN_10_MIN, NOW, RETRY)).toEqual({
      ack: true,
      outcome: 'failed',
      reason: 'HTTP 500 (attempt 5 of 5)',
    });
    expect(afterAttempt({ status: 429, retryAfterMs: 6000 }, 1, IN_10_MIN, NOW, RETRY)).toMatchObject({
      delayMs: 6000,
    });
    expect(afterAttempt({ status: 429, retryAfterMs: 3_600_000 }, 1, IN_10_MIN, NOW, RETRY)).toMatchObject({
      delayMs: 8000,
    });
  });

  it('does not schedule an attempt after the request expires', () => {
    const soon = new Date(NOW + 1500).toISOString();
    expect(afterAttempt({ error: 'timed out after 10000 ms' }, 2, soon, NOW, RETRY)).toEqual({
      ack: true,
      outcome: 'failed',
      reason: 'timed out after 10000 ms (the request expires before another attempt)',
    });
  });

  it('retries a follow-up, which has no expiry, until its attempts run out', () => {
    expect(afterAttempt({ status: 503 }, 4, undefined, NOW, RETRY)).toEqual({
      ack: false,
      outcome: 'retried',
      delayMs: 8000,
      reason: 'HTTP 503',
    });
    expect(afterAttempt({ status: 503 }, 5, undefined, NOW, RETRY)).toMatchObject({ ack: true, outcome: 'failed' });
  });

  it('follows up what this replica or, as the stream records, any replica announced; nothing else', () => {
    const facts = (over: Partial<OutcomeFacts>): OutcomeFacts => ({
      repeated: false,
      request: undefined,
      announced: false,
      ...over,
    });
    expect(outcomeSkipReason(facts({ request: { sent: true } }))).toBeUndefined();
    // Sent by another replica, or by this one before a restart: the stream's record says so.
    expect(outcomeSkipReason(facts({ announced: true }))).toBeUndefined();
    // This replica's record is enough when recording in the stream failed.
    expect(outcomeSkipReason(facts({ request: { sent: true }, announced: false }))).toBeUndefined();
    // Skipped, given up, or still to be retried when it closed (that retry skips it): nobody was told.
    expect(outcomeSkipReason(facts({ request: { sent: false } }))).toBe('request not announced');
    expect(outcomeSkipReason(facts({}))).toBe('request not announced');
    expect(outcomeSkipReason(facts({ request: { sent: true }, repeated: true }))).toBe('not the first closing');
    expect(outcomeSkipReason(facts({ announced: true, repeated: true }))).toBe('not the first closing');
    // Followed up from the request's own redelivery: not twice, whatever the stream records by now.
    const followedUp = { sent: false, followedUp: true };
    expect(outcomeSkipReason(facts({ request: followedUp }))).toBe('followed up with its request');
    expect(outcomeSkipReason(facts({ request: followedUp, announced: true }))).toBe('followed up with its request');
  });

  it('counts a notice as maybe shown once a delivery of its request went to another replica', () => {
    // The first delivery, and each that follows one this replica handled, are accounted for here.
    expect(deliveredHere(undefined, 1)).toBe(1);
    expect(deliveredHere({ sent: false, retrying: true, deliveredHere: 1 }, 2)).toBe(2);
    expect(shownBefore(undefined, 1)).toBe(false);
    expect(shownBefore({ sent: false, retrying: true, deliveredHere: 1 }, 2)).toBe(false);
    // An earlier delivery this replica never saw (another replica's, or its own before a restart): a replica killed
    // after its POST leaves no trace, so the notice may have been shown.
    expect(deliveredHere(undefined, 2)).toBeUndefined();
    expect(shownBefore(undefined, 2)).toBe(true);
    expect(shownBefore({ sent: false, retrying: true, deliveredHere: 1 }, 3)).toBe(true);
    // Once unaccounted, always: the gap stays in the past of every later delivery.
    expect(deliveredHere({ sent: false, retrying: true }, 3)).toBeUndefined();
    expect(shownBefore({ sent: false, retrying: true }, 3)).toBe(true);
    // This replica's own POST that may have arrived.
    expect(shownBefore({ sent: true, retrying: true, deliveredHere: 1 }, 2)).toBe(true);
  });

  it('remembers the newest requests only', () => {
    const log = new RequestNoticeLog(2);
    log.record('a', { sent: true });
    log.record('b', { sent: false });
    log.record('a', { sent: false, retryAt: NOW });
    log.record('c', { sent: true });
    expect([log.get('a'), log.get('b'), log.get('c')]).toEqual([
      { sent: false, retryAt: NOW },
      undefined,
      { sent: true },
    ]);
    log.forget('a');
    expect(log.get('a')).toBeUndefined();
  });

  it('reads Retry-After as seconds or an HTTP date', () => {
    expect(parseRetryAfter('7', NOW)).toBe(7000);
    expect(parseRetryAfter(new Date(NOW + 30_000).toUTCString(), NOW)).toBe(30_000);
    expect(parseRetryAfter('soon', NOW)).toBeUndefined();
    expect(parseRetryAfter(undefined, NOW)).toBeUndefined();
  });
});
