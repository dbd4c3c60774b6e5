import { EventEmitter } from 'node:events';
import {
  AckPolicy,
  type ConsumerConfig,
  type ConsumerMessages,
  DeliverPolicy,
  type JsMsg,
  jetstream,
  jetstreamManager,
} from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { APPROVALS_STREAM, type NatsUserFiles, parseApprovalRequest, parseApprovalSubject } from '@pgwarden/policy';
import { closeWithin, connectCollectorNats } from '../ingest/nats-connect.js';
import type { ApprovalState } from './approval-book.js';
import { type NoticeOptions, noticeBody, signatureHeaders } from './approval-notice.js';
import { ensureApprovalsStream } from './approval-queue.js';
import {
  afterAttempt,
  DEFAULT_RETRY,
  type NotificationOutcome,
  type RetryPolicy,
  skipReason,
} from './notification-delivery.js';
import { postWebhook } from './webhook-post.js';

const NANOS_PER_MS = 1_000_000;
export const NOTIFIER_DURABLE = 'pgwarden-approval-notifier';
export const NOTIFIER_SUBJECTS = 'pgwarden.approval.request.>';
/** A stopping notifier waits this long at most for NATS to take its last acks. */
const CLOSE_DRAIN_MS = 2000;

export interface ApprovalNotifierOptions {
  nats: { url: string; userFiles?: NatsUserFiles };
  /** Where to post: the URL is a secret, never logged, never in an event (only `origin` is). */
  webhook: NoticeOptions & { url: URL; signingSecret?: string };
  /** What the approval queue knows of an id (undefined: not seen yet): decided or closed ones are not announced. */
  stateOf?(id: string): ApprovalState | undefined;
  /**
   * Whether the approval queue has replayed its stream: until then the notifier takes nothing, so that after a
   * restart it does not announce requests decided meanwhile. Default: always.
   */
  bookLoaded?(): boolean;
  /** Durable consumer every replica shares (default pgwarden-approval-notifier). */
  durable?: string;
  /** A delivery not acknowledged within this is given to a replica again (default 30 s; above `timeoutMs`). */
  ackWaitMs?: number;
  /** One POST's deadline (default 10 s). */
  timeoutMs?: number;
  retry?: Partial<RetryPolicy>;
  now?(): number;
}

export interface NotificationReport {
  id: string;
  attempt: number;
  /** Why it failed, is retried or skipped: an HTTP status, a transport error's code, `expired`… never the URL. */
  reason?: string;
  /** The retry's delay. */
  delayMs?: number;
}

export interface ApprovalNotifierEvents {
  status: [status: string];
  notified: [outcome: NotificationOutcome, report: NotificationReport];
}

/**
 * Announces held statements to a webhook, once per request however many collector replicas run: they share one
 * durable pull consumer on `pgwarden.approval.request.>` with explicit acks, so JetStream hands each request to
 * one of them (https://docs.nats.io/nats-concepts/jetstream/consumers). A request is acknowledged once its notice
 * is sent, failed for good, or not needed; a failure worth retrying is negatively acknowledged with a delay, and
 * the stream delivers it again (to any replica) after it.
 */
export class ApprovalNotifier extends EventEmitter<ApprovalNotifierEvents> {
  private nc: NatsConnection | null = null;
  private messages: ConsumerMessages | null = null;
  private running = false;
  private loop: Promise<void> | null = null;
  private readonly stopping = new AbortController();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly retry: RetryPolicy;
  private consuming = false;
  private up = false;

  constructor(private readonly opts: ApprovalNotifierOptions) {
    super();
    this.retry = { ...DEFAULT_RETRY, ...opts.retry };
  }

  /** Following its consumer (false before the first setup, while NATS is away, and after close). */
  get ready(): boolean {
    return this.up && this.consuming && this.nc !== null && !this.nc.isClosed();
  }

  start(): void {
    this.running = true;
    this.loop = this.connectAndRun();
  }

  /**
   * Stops at once: no more pulls, posts in flight aborted and their requests handed back to the stream (a nak
   * without delay, so another replica takes them now), NATS drained for 2 s at most.
   */
  async close(): Promise<void> {
    this.running = false;
    this.messages?.stop();
    this.stopping.abort();
    await Promise.all(this.inFlight);
    if (this.nc) await closeWithin(this.nc, CLOSE_DRAIN_MS);
    await this.loop;
    this.nc = null;
  }

  private async connectAndRun(): Promise<void> {
    const nc = await connectCollectorNats({
      url: this.opts.nats.url,
      name: 'pgwarden-collector-approval-notifier',
      userFiles: this.opts.nats.userFiles,
      running: () => this.running,
      onStatus: (s) => this.emit('status', s),
      onUp: (up) => {
        this.up = up;
      },
    });
    if (!nc) return;
    this.nc = nc;
    await this.run(nc);
  }

  /**
   * Supervises the consumer like the collector's other ones: any end (a server restart that lost it, the stream or
   * consumer deleted) rebuilds it after a pause; the client itself re-pulls across plain reconnects.
   */
  private async run(nc: NatsConnection): Promise<void> {
    while (this.running && !nc.isClosed()) {
      try {
        while (this.running && this.opts.bookLoaded && !this.opts.bookLoaded()) await pause(100);
        if (!this.running) break;
        this.messages = await this.follow(nc);
        if (!this.running) {
          this.messages.stop();
          break;
        }
        this.consuming = true;
        this.emit('status', 'consuming');
        const ended = await this.messages.closed();
        if (ended instanceof Error) throw ended;
      } catch (err) {
        if (!this.running) break;
        this.emit('status', `approval notifier consumer error: ${(err as Error).message}`);
      }
      this.consuming = false;
      if (this.running) await pause(500);
    }
    this.consuming = false;
  }

  private async follow(nc: NatsConnection): Promise<ConsumerMessages> {
    const jsm = await jetstreamManager(nc);
    await ensureApprovalsStream(jsm);
    const durable = this.opts.durable ?? NOTIFIER_DURABLE;
    const config: Partial<ConsumerConfig> & { durable_name: string } = {
      durable_name: durable,
      ack_policy: AckPolicy.Explicit,
      // Created on the first start with notifications on: requests already in the stream are not announced.
      deliver_policy: DeliverPolicy.New,
      filter_subject: NOTIFIER_SUBJECTS,
      ack_wait: (this.opts.ackWaitMs ?? 30_000) * NANOS_PER_MS,
      // Requests out at once across every replica, waiting retries included: bounds the posts in flight.
      max_ack_pending: 256,
    };
    try {
      const info = await jsm.consumers.info(APPROVALS_STREAM, durable);
      if (info.config.ack_wait !== config.ack_wait || info.config.max_ack_pending !== config.max_ack_pending)
        await jsm.consumers.update(APPROVALS_STREAM, durable, {
          ack_wait: config.ack_wait,
          max_ack_pending: config.max_ack_pending,
        });
    } catch (err) {
      if ((err as Error).name !== 'ConsumerNotFoundError') throw err;
      // Two replicas creating it at once with the same configuration both succeed.
      await jsm.consumers.add(APPROVALS_STREAM, config);
    }
    const consumer = await jetstream(nc).consumers.get(APPROVALS_STREAM, durable);
    return consumer.consume({
      // One request pulled ahead at a time: one a stopping replica pulled but never started waits out ack_wait.
      max_messages: 1,
      // A deleted consumer or stream ends the consume, and run() creates them again.
      abort_on_missing_resource: true,
      callback: (m) => this.track(this.deliver(m)),
    });
  }

  private track(delivery: Promise<void>): void {
    // An ack on a connection that closed meanwhile throws: the request is redelivered after ack_wait anyway.
    const p = delivery.catch((err: Error) => {
      this.emit('status', `approval notice not acknowledged: ${err.message}`);
    });
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  private async deliver(m: JsMsg): Promise<void> {
    const attempt = m.info.deliveryCount;
    const named = parseApprovalSubject(m.subject);
    const request = parseApprovalRequest(m.data);
    if (named?.kind !== 'request' || !request || request.id !== named.id) {
      m.ack();
      this.emit('notified', 'skipped', { id: named?.id ?? '?', attempt, reason: 'malformed request' });
      return;
    }
    const id = request.id;
    const now = this.now();
    const skip = skipReason(request.expiresAt, this.opts.stateOf?.(id), now);
    if (skip) {
      m.ack();
      this.emit('notified', 'skipped', { id, attempt, reason: skip });
      return;
    }
    if (attempt > this.retry.maxAttempts) {
      // Deliveries that ended in nothing (a replica stopped mid-post) count too: the bound holds across replicas.
      m.ack();
      this.emit('notified', 'failed', { id, attempt, reason: `gave up after ${this.retry.maxAttempts} attempts` });
      return;
    }
    const { webhook } = this.opts;
    const body = noticeBody(request, webhook, now);
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'user-agent': 'pgwarden-collector',
      ...(webhook.signingSecret ? signatureHeaders(webhook.signingSecret, body, Math.floor(now / 1000)) : {}),
    };
    const result = await postWebhook(webhook.url, body, headers, {
      timeoutMs: this.opts.timeoutMs,
      signal: this.stopping.signal,
    });
    if (this.stopping.signal.aborted && !('status' in result)) {
      // Stopping: handed back at once, for another replica (or this one's successor) to post.
      m.nak();
      return;
    }
    const step = afterAttempt(result, attempt, request.expiresAt, this.now(), this.retry);
    if (step.ack) m.ack();
    else m.nak(step.delayMs);
    this.emit('notified', step.outcome, {
      id,
      attempt,
      ...(step.reason ? { reason: step.reason } : {}),
      ...(step.ack ? {} : { delayMs: step.delayMs }),
    });
  }

  private now(): number {
    return this.opts.now ? this.opts.now() : Date.now();
  }
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
