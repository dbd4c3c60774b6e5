import type { ApprovalState } from './approval-book.js';

/**
 * What becomes of one delivery of a notice: the rules alone, no I/O (the notifier does the posting, acking and
 * metrics). Counted as pgwarden_collector_approval_notifications_total{kind, outcome}.
 */
export type NotificationOutcome = 'sent' | 'failed' | 'retried' | 'skipped';
export const NOTIFICATION_OUTCOMES: readonly NotificationOutcome[] = ['sent', 'failed', 'retried', 'skipped'];

/** `request`: a statement is held; `outcome`: the follow-up once its hold ended (approved, rejected, expired…). */
export type NoticeKind = 'request' | 'outcome';
export const NOTICE_KINDS: readonly NoticeKind[] = ['request', 'outcome'];

export interface RetryPolicy {
  /** Posts per notice at most, the first included. */
  maxAttempts: number;
  /** Delay before the second attempt; it doubles for each one after, up to `maxDelayMs`. */
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 8, baseDelayMs: 5000, maxDelayMs: 60_000 };

/**
 * How one POST ended: the receiver's status (and its Retry-After, in ms), or a transport error's short name;
 * `maybeDelivered` when that error came after the whole body was sent (a timeout waiting for the answer, a reset,
 * an abort): HTTP cannot tell whether the receiver acted on it.
 */
export type AttemptResult = { status: number; retryAfterMs?: number } | { error: string; maybeDelivered?: true };

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
 * remain and the request will not have expired by then (`expiresAt`; undefined for a follow-up, whose news does not
 * expire); anything else (a redirect, which is not followed, or another 4xx) will not get better by repeating it and
 * fails at once.
 */
export function afterAttempt(
  result: AttemptResult,
  attempt: number,
  expiresAt: string | undefined,
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
  if (expiresAt !== undefined && now + delayMs >= Date.parse(expiresAt))
    return { ack: true, outcome: 'failed', reason: `${reason} (the request expires before another attempt)` };
  return { ack: false, outcome: 'retried', delayMs, reason };
}

/** What this replica did with a request's notice. */
export interface RequestNoticeRecord {
  /**
   * An attempt was sent, or may have been: one that ended without an answer after its body went out (a timeout,
   * a reset, a stop) counts, as the receiver may show it, and so does an attempt after an earlier delivery went to
   * another replica (shownBefore). Once true it stays true.
   */
  sent: boolean;
  /** Its last attempt here was handed back to the stream: a retry is due, here or on another replica. */
  retrying?: boolean;
  /** The record that it was announced is in the stream (put there by this replica). */
  recorded?: boolean;
  /**
   * Deliveries 1 to this number of the request all came to this replica; absent once one went elsewhere, to a
   * replica that may have posted the notice and died before recording it (deliveredHere).
   */
  deliveredHere?: number;
  /** Its closing was followed up from the request's own redelivery (the follow-up of an unrecorded notice). */
  followedUp?: boolean;
}

/** RequestNoticeRecord.deliveredHere after delivery number `delivery` (1 for the first) came to this replica. */
export function deliveredHere(before: RequestNoticeRecord | undefined, delivery: number): number | undefined {
  return delivery === 1 || before?.deliveredHere === delivery - 1 ? delivery : undefined;
}

/**
 * Whether the request's notice may have been shown before this delivery: this replica sent one (or may have), or an
 * earlier delivery went to another replica. That one may have posted it and been killed before recording so, and
 * nothing in the stream tells (JetStream says how many deliveries there were, not how each ended).
 */
export function shownBefore(before: RequestNoticeRecord | undefined, delivery: number): boolean {
  return before?.sent === true || deliveredHere(before, delivery) === undefined;
}

export interface OutcomeFacts {
  /** The approval queue holds an earlier closing for this id: the sidecar's first one is what happened. */
  repeated: boolean;
  /** This replica's record of the request's notice; undefined when another replica (or an earlier run) took it. */
  request: RequestNoticeRecord | undefined;
  /**
   * The stream holds the record that the request's notice was sent (`pgwarden.approval.notified.<id>`), by any
   * replica, in this run or before a restart.
   */
  announced: boolean;
}

/**
 * Why a follow-up need not go out, or undefined: post it. Follow-ups are for requests that were announced: this
 * replica sent the notice, or the stream records that some replica did (before a restart too, so a closing that
 * came while the only replica restarted is still followed up). A request nobody announced (skipped, given up, a
 * retry not yet due when it closed: that retry then skips it) gets none here; but a request that comes back closed
 * after a delivery elsewhere, which may have been shown unrecorded, is followed up by that delivery instead
 * (`followedUp`), and its closing is not followed up twice.
 */
export function outcomeSkipReason(f: OutcomeFacts): string | undefined {
  if (f.repeated) return 'not the first closing';
  if (f.request?.followedUp) return 'followed up with its request';
  if (f.request?.sent || f.announced) return undefined;
  return 'request not announced';
}

/** RequestNoticeRecords of the newest `max` requests this replica handled (default 10,000, as the approval queue). */
export class RequestNoticeLog {
  private readonly records = new Map<string, RequestNoticeRecord>();
  constructor(private readonly max = 10_000) {}

  record(id: string, r: RequestNoticeRecord): void {
    this.records.delete(id);
    this.records.set(id, r);
    if (this.records.size > this.max) this.records.delete(this.records.keys().next().value as string);
  }

  get(id: string): RequestNoticeRecord | undefined {
    return this.records.get(id);
  }

  /** Its follow-up was handled: the record is of no more use. */
  forget(id: string): void {
    this.records.delete(id);
  }
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
