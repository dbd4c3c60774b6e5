import type { ApprovalState } from './approval-book.js';

/**
 * What becomes of one delivery of a held statement's notice: the rules alone, no I/O (the notifier does the
 * posting, acking and metrics). Counted as pgwarden_collector_approval_notifications_total{outcome}.
 */
export type NotificationOutcome = 'sent' | 'failed' | 'retried' | 'skipped';
export const NOTIFICATION_OUTCOMES: readonly NotificationOutcome[] = ['sent', 'failed', 'retried', 'skipped'];

export interface RetryPolicy {
  /** Posts per notice at most, the first included. */
  maxAttempts: number;
  /** Delay before the second attempt; it doubles for each one after, up to `maxDelayMs`. */
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 8, baseDelayMs: 5000, maxDelayMs: 60_000 };

/** How one POST ended: the receiver's status (and its Retry-After, in ms), or a transport error's short name. */
export type AttemptResult = { status: number; retryAfterMs?: number } | { error: string };

/** Acknowledge (done, whatever the outcome) or ask the stream to deliver it again after `delayMs`. */
export type Step =
  | { ack: true; outcome: Exclude<NotificationOutcome, 'retried'>; reason?: string }
  | { ack: false; outcome: 'retried'; delayMs: number; reason: string };

/**
 * Why a notice need not go out: its request expired, or the approval queue already knows it decided or closed
 * (`state`, undefined when the queue has not seen the request yet). Undefined: post it.
 */
export function skipReason(expiresAt: string, state: ApprovalState | undefined, now: number): string | undefined {
  if (Date.parse(expiresAt) <= now) return 'expired';
  if (state !== undefined && state !== 'pending') return `already ${state}`;
  return undefined;
}

/**
 * After attempt number `attempt` (1 for the first): a 2xx is sent; a network error, a timeout, 408, 429 or a 5xx is
 * tried again with an exponential backoff (at least what Retry-After asks, within `maxDelayMs`) while attempts
 * remain and the request will not have expired by then; anything else (a redirect, which is not followed, or
 * another 4xx) will not get better by repeating it and fails at once.
 */
export function afterAttempt(
  result: AttemptResult,
  attempt: number,
  expiresAt: string,
  now: number,
  retry: RetryPolicy,
): Step {
  if ('status' in result && result.status >= 200 && result.status < 300) return { ack: true, outcome: 'sent' };
  const reason = 'status' in result ? `HTTP ${result.status}` : result.error;
  if ('status' in result && !retryableStatus(result.status))
    return { ack: true, outcome: 'failed', reason: `${reason} (not retried)` };
  if (attempt >= retry.maxAttempts)
    return { ack: true, outcome: 'failed', reason: `${reason} (attempt ${attempt} of ${retry.maxAttempts})` };
  const backoff = Math.min(retry.maxDelayMs, retry.baseDelayMs * 2 ** (attempt - 1));
  const asked = 'status' in result ? Math.min(result.retryAfterMs ?? 0, retry.maxDelayMs) : 0;
  const delayMs = Math.max(backoff, asked);
  if (now + delayMs >= Date.parse(expiresAt))
    return { ack: true, outcome: 'failed', reason: `${reason} (the request expires before another attempt)` };
  return { ack: false, outcome: 'retried', delayMs, reason };
}

export function retryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

/**
 * A Retry-After header in ms: delay-seconds or an HTTP date (RFC 9110 §10.2.3); undefined when absent or unreadable.
 */
export function parseRetryAfter(header: string | undefined, now: number): number | undefined {
  if (!header) return undefined;
  const trimmed = header.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const at = Date.parse(trimmed);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}
