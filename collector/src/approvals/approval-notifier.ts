import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { type JsMsg, jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import {
  APPROVALS_STREAM,
  type ApprovalNotifiedMessage,
  type ApprovalRequestMessage,
  approvalSubject,
  type NatsUserFiles,
  parseApprovalClosed,
  parseApprovalRequest,
  parseApprovalSubject,
  requestFitsSubject,
} from '@pgwarden/policy';
import { closeWithin, connectCollectorNats } from '../ingest/nats-connect.js';
import type { ApprovalEntry } from './approval-book.js';
import { type NoticeOptions, noticeBody, signatureHeaders } from './approval-notice.js';
import {
  afterAttempt,
  DEFAULT_RETRY,
  deliveredHere,
  type NoticeKind,
  type NotificationOutcome,
  outcomeSkipReason,
  RequestNoticeLog,
  type RetryPolicy,
  type Step,
  shownBefore,
  skipReason,
} from './notification-delivery.js';
import { outcomeNoticeBody } from './outcome-notice.js';
import { SharedConsumer } from './shared-consumer.js';
import { postWebhook } from './webhook-post.js';

export const NOTIFIER_DURABLE = 'pgwarden-approval-notifier';
export const NOTIFIER_SUBJECTS = 'pgwarden.approval.request.>';
export const OUTCOMES_DURABLE = 'pgwarden-approval-outcomes';
export const OUTCOMES_SUBJECTS = 'pgwarden.approval.closed.>';
/** A stopping notifier waits this long at most for NATS to take its last acks. */
const CLOSE_DRAIN_MS = 2000;

export interface ApprovalNotifierOptions {
  nats: { url: string; userFiles?: NatsUserFiles };
  /** Where to post: the URL is a secret, never logged, never in an event (only `origin` is). */
  webhook: NoticeOptions & { url: URL; signingSecret?: string };
  /** Follow each announced request up when its hold ends (default true). */
  outcomes?: boolean;
  /**
   * What the approval queue knows of an id (undefined: not seen yet): decided or closed requests are not announced,
   * and a follow-up names the request's policy and session.
   */
  entryOf?(id: string): ApprovalEntry | undefined;
  /**
   * Whether a closing on a subject naming this namespace may close request `id` (ApprovalBook.closingFits): a
   * follow-up never reports a closing from another namespace. Default: any.
   */
  closingFits?(id: string, subjectNamespace: string | undefined): boolean;
  /**
   * Whether an active grant covers this request: the approval queue approves it under that grant at once
   * (ApprovalBook.grantCovering), so nobody needs to be asked. Default: never.
   */
  coveredByGrant?(request: ApprovalRequestMessage): boolean;
  /**
   * Whether the approval queue has replayed its stream: until then the notifier takes nothing, so that after a
   * restart it does not announce requests decided meanwhile. Default: always.
   */
  bookLoaded?(): boolean;
  /**
   * Stream sequence of the last message the approval queue applied: a closing is judged once the queue has seen
   * everything before it, the record that its request was announced included. Default: no wait.
   */
  appliedSeq?(): number;
  /** Durable consumers every replica shares (defaults pgwarden-approval-notifier, pgwarden-approval-outcomes). */
  durable?: string;
  outcomesDurable?: string;
  /** A delivery not acknowledged within this is given to a replica again (default 30 s; above `timeoutMs`). */
  ackWaitMs?: number;
  /** One POST's deadline (default 10 s). */
  timeoutMs?: number;
  retry?: Partial<RetryPolicy>;
  now?(): number;
}

export interface NotificationReport {
  kind: NoticeKind;
  id: string;
  attempt: number;
  /** Why it failed, is retried or skipped: an HTTP status, a transport error's code, `expired`… never the URL. */
  reason?: string;
  /** The retry's delay. */
  delayMs?: number;
}

/**
 * Names one notice, the same at every attempt and from every replica: `approval.requested:<id>` or
 * `approval.closed:<id>` (the json body's `type` and `id`). A receiver drops a notice whose id it has seen.
 */
export const NOTICE_ID_HEADER = 'x-pgwarden-notice-id';
export const noticeIdOf = (kind: NoticeKind, id: string) =>
  `${kind === 'request' ? 'approval.requested' : 'approval.closed'}:${id}`;

/** How one delivery's POST went: its step (or handed back by a stopping replica), and whether it may have arrived. */
interface Posted {
  step: Step | 'handed back';
  maybeDelivered: boolean;
}

export interface ApprovalNotifierEvents {
  status: [status: string];
  notified: [outcome: NotificationOutcome, report: NotificationReport];
}

/**
 * Announces held statements to a webhook, and follows each up when its hold ends, once per message however many
 * collector replicas run: requests and closings each come through a durable consumer every replica shares
 * (SharedConsumer). A message is acknowledged once its notice is sent, failed for good, or not needed; a failure
 * worth retrying is negatively acknowledged with a delay, and the stream delivers it again (to any replica) after it.
 * At least once: a POST that ended without an answer may have arrived, and is retried (receivers dedupe on
 * NOTICE_ID_HEADER).
 */
export class ApprovalNotifier extends EventEmitter<ApprovalNotifierEvents> {
  private nc: NatsConnection | null = null;
  private running = false;
  private loop: Promise<void> | null = null;
  private readonly stopping = new AbortController();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly retry: RetryPolicy;
  private readonly consumers: SharedConsumer[];
  private readonly requestNotices = new RequestNoticeLog();
  /** Requests whose notice this replica is posting now: their closings wait, so a follow-up never overtakes one. */
  private readonly postingRequests = new Set<string>();
  /**
   * How long a closing waits for the record that its request was announced while some replica may still be posting
   * its notice: one POST, the record's publish, a margin.
   */
  private readonly announceWaitMs: number;
  /**
   * How often a message being worked on is reported in progress: a closing's waits and its POST can together
   * outlast the ack wait, and JetStream would then give it to a replica again, which posted it a second time.
   */
  private readonly workingEveryMs: number;
  private up = false;

  constructor(private readonly opts: ApprovalNotifierOptions) {
    super();
    this.retry = { ...DEFAULT_RETRY, ...opts.retry };
    const ackWaitMs = opts.ackWaitMs ?? 30_000;
    this.announceWaitMs = Math.max(0, Math.min((opts.timeoutMs ?? 10_000) + 6000, ackWaitMs - 5000));
    this.workingEveryMs = Math.max(100, Math.floor(ackWaitMs / 3));
    const hooks = {
      running: () => this.running,
      mayStart: () => !opts.bookLoaded || opts.bookLoaded(),
      status: (s: string) => this.emit('status', s),
    };
    this.consumers = [
      new SharedConsumer(
        { durable: opts.durable ?? NOTIFIER_DURABLE, filterSubject: NOTIFIER_SUBJECTS, ackWaitMs },
        { ...hooks, deliver: (m) => this.track(m, () => this.deliverRequest(m)) },
      ),
    ];
    if (opts.outcomes !== false)
      this.consumers.push(
        new SharedConsumer(
          { durable: opts.outcomesDurable ?? OUTCOMES_DURABLE, filterSubject: OUTCOMES_SUBJECTS, ackWaitMs },
          { ...hooks, deliver: (m) => this.track(m, () => this.deliverOutcome(m)) },
        ),
      );
  }

  /** Following its consumers (false before the first setup, while NATS is away, and after close). */
  get ready(): boolean {
    return this.up && this.consumers.every((c) => c.consuming) && this.nc !== null && !this.nc.isClosed();
  }

  start(): void {
    this.running = true;
    this.loop = this.connectAndRun();
  }

  /**
   * Stops at once: no more pulls, posts in flight aborted and their messages handed back to the stream (a nak
   * without delay, so another replica takes them now), NATS drained for 2 s at most.
   */
  async close(): Promise<void> {
    this.running = false;
    for (const c of this.consumers) c.stop();
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
    await Promise.all(this.consumers.map((c) => c.run(nc)));
  }

  private track(m: JsMsg, handle: () => Promise<void>): void {
    // In progress (+WPI) restarts the message's ack wait; a no-op once it is acked or naked. A replica that dies stops
    // sending it, and the message goes to another after one ack wait as before.
    const working = setInterval(() => {
      try {
        m.working();
      } catch {
        // The connection closed: the message is redelivered after ack_wait.
      }
    }, this.workingEveryMs);
    // An ack on a connection that closed meanwhile throws: the message is redelivered after ack_wait anyway.
    const p = handle()
      .catch((err: Error) => {
        this.emit('status', `approval notice not acknowledged: ${err.message}`);
      })
      .finally(() => clearInterval(working));
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  private async deliverRequest(m: JsMsg): Promise<void> {
    const named = parseApprovalSubject(m.subject);
    const request = parseApprovalRequest(m.data);
    if (named?.kind !== 'request' || !request || request.id !== named.id)
      return this.skip(m, 'request', named?.id ?? '?', 'malformed request');
    if (!requestFitsSubject(request, named.namespace))
      return this.skip(m, 'request', request.id, "on another namespace's subject");
    const id = request.id;
    const now = this.now();
    const entry = this.opts.entryOf?.(id);
    const skip = this.opts.coveredByGrant?.(request)
      ? 'covered by an active grant'
      : skipReason(request.expiresAt, entry?.state, now);
    const before = this.requestNotices.get(id);
    const delivery = m.info.deliveryCount;
    const here = deliveredHere(before, delivery);
    const shownEarlier = shownBefore(before, delivery);
    if (skip) {
      const recorded = before?.recorded || entry?.notifiedAt !== undefined;
      if (shownEarlier && !recorded && this.opts.outcomes !== false) return this.closeUnrecorded(m, id, skip, here);
      this.requestNotices.record(id, { sent: before?.sent ?? false, recorded: before?.recorded, deliveredHere: here });
      return this.skip(m, 'request', id, skip);
    }
    this.postingRequests.add(id);
    try {
      await this.post(
        m,
        'request',
        id,
        noticeBody(request, this.opts.webhook, now),
        request.expiresAt,
        async ({ step, maybeDelivered }) => {
          // At least once: a notice that may have reached the receiver, from here or from an earlier delivery
          // elsewhere (shownBefore), gets its follow-up, though a retry may show it twice.
          const sent = shownEarlier || maybeDelivered || (step !== 'handed back' && step.outcome === 'sent');
          const retrying = step === 'handed back' || !step.ack;
          this.requestNotices.record(id, { sent, retrying, recorded: before?.recorded, deliveredHere: here });
          if (!sent || before?.recorded) return true;
          // The request is acknowledged only once the record is in: acknowledged first, a replica that died between
          // the two left the stream saying nobody announced it, and its follow-up was lost. Not acknowledged, it
          // comes back (to any replica), is posted again and recorded.
          const recorded = await this.recordAnnounced(id, 'until recorded');
          this.requestNotices.record(id, { sent, retrying: retrying || !recorded, recorded, deliveredHere: here });
          return recorded;
        },
      );
    } finally {
      this.postingRequests.delete(id);
    }
  }

  /**
   * A request whose hold ended (or is ending: decided, expired, approved under a grant) without a record that it was
   * announced, though an earlier delivery may have shown it (shownBefore): a replica killed between its POST and the
   * record, whose request came back only after the ack wait. The closing's replica judged it not announced, or will;
   * the receiver may have shown the notice, and people would wait for its end. Closed in the queue: followed up
   * from here, under the follow-up's notice id, so a receiver that showed the notice gets its end and one that did
   * not gets a line that names the statement itself; with no record, a replica still judging the closing skips it
   * rather than posting it too. Not closed yet: recorded as announced, so whichever replica takes the closing
   * follows it up.
   */
  private async closeUnrecorded(m: JsMsg, id: string, skip: string, here: number | undefined): Promise<void> {
    // The closing may be in the stream and not yet in the queue: judged as still to close, its record would come
    // after the closing was skipped.
    await this.queueReaches(await this.lastStreamSeq());
    const entry = this.opts.entryOf?.(id);
    if (entry?.notifiedAt !== undefined) {
      this.requestNotices.record(id, { sent: true, recorded: true, deliveredHere: here });
      return this.skip(m, 'request', id, skip);
    }
    if (entry?.closed) {
      this.requestNotices.record(id, { sent: false, followedUp: true });
      const known = { request: entry.request, decision: entry.decision };
      await this.post(m, 'outcome', id, outcomeNoticeBody(entry.closed, known, this.opts.webhook), undefined);
      return;
    }
    this.requestNotices.record(id, { sent: true, retrying: true, deliveredHere: here });
    const recorded = await this.recordAnnounced(id, 'until recorded');
    this.requestNotices.record(id, { sent: true, retrying: !recorded, recorded, deliveredHere: here });
    if (recorded)
      return this.skip(m, 'request', id, `${skip}; recorded as announced, as an earlier delivery may have posted it`);
    m.nak(this.stopping.signal.aborted ? undefined : this.retry.baseDelayMs);
  }

  /** The approvals stream's last sequence now; 0 when NATS does not answer. */
  private async lastStreamSeq(): Promise<number> {
    const nc = this.nc;
    if (!nc || nc.isClosed()) return 0;
    try {
      const jsm = await jetstreamManager(nc, { timeout: 5000 });
      return (await jsm.streams.info(APPROVALS_STREAM)).state.last_seq;
    } catch {
      return 0;
    }
  }

  /**
   * Puts the record that `id` was announced in the stream, for the replica that takes its closing (this one after a
   * restart included). `once`: one try, best effort. `until recorded`: tries again for about one announcement wait,
   * while the message stays in progress; false when it is not in by then, or the replica is stopping.
   */
  private async recordAnnounced(id: string, mode: 'once' | 'until recorded' = 'once'): Promise<boolean> {
    const record: ApprovalNotifiedMessage = { v: 1, id, at: new Date(this.now()).toISOString() };
    const until = Date.now() + this.announceWaitMs;
    for (let delayMs = 200; ; delayMs = Math.min(delayMs * 2, 2000)) {
      const nc = this.nc;
      let failure = 'NATS is not connected';
      if (nc && !nc.isClosed())
        try {
          // msgID: a request posted twice (handed back, or a replica killed mid-ack) is recorded once.
          await jetstream(nc, { timeout: 5000 }).publish(approvalSubject('notified', id), JSON.stringify(record), {
            msgID: `notified-${id}`,
          });
          return true;
        } catch (err) {
          failure = (err as Error).message;
        }
      this.emit('status', `approval notice ${id} sent but not recorded in the stream: ${failure}`);
      if (mode === 'once' || !this.running || Date.now() + delayMs >= until) return false;
      await sleep(delayMs, undefined, { signal: this.stopping.signal }).catch(() => {});
    }
  }

  /** Resolves once the approval queue has applied stream sequence `seq` (at most `waitMs`, or on close). */
  private async queueReaches(seq: number, waitMs = 5000): Promise<void> {
    const applied = this.opts.appliedSeq;
    if (!applied) return;
    const until = Date.now() + waitMs;
    while (applied() < seq && Date.now() < until && this.running) await sleep(20);
  }

  private async deliverOutcome(m: JsMsg): Promise<void> {
    const named = parseApprovalSubject(m.subject);
    const closed = parseApprovalClosed(m.data);
    if (named?.kind !== 'closed' || !closed || closed.id !== named.id)
      return this.skip(m, 'outcome', named?.id ?? '?', 'malformed closing');
    const { id } = closed;
    if (this.opts.closingFits && !this.opts.closingFits(id, named.namespace))
      return this.skip(m, 'outcome', id, "on another namespace's subject");
    // The record that the request was announced comes before its closing in the stream: wait until the queue has
    // applied everything up to this closing, so that it knows.
    if (!this.requestNotices.get(id)?.sent) await this.queueReaches(m.seq);
    // Judged at every delivery, a retry's too: what decides it is in the stream (the record below), so each replica
    // judges alike, and a closing a stopping replica handed back before judging it is judged by the next.
    const { entry, known } = await this.untilAnnouncedOrKnown(id, this.opts.entryOf?.(id));
    if (!known) {
      // Stopping before it could tell: handed back for the next replica to judge. Acknowledged as not announced, the
      // follow-up of a request announced meanwhile would be lost.
      m.nak();
      return;
    }
    const mine = this.requestNotices.get(id);
    const skip = outcomeSkipReason({
      repeated: entry?.closed !== undefined && JSON.stringify(entry.closed) !== JSON.stringify(closed),
      request: mine,
      announced: entry?.notifiedAt !== undefined,
    });
    if (skip) {
      this.requestNotices.forget(id);
      return this.skip(m, 'outcome', id, skip);
    }
    // Posted on this replica's word alone (its record did not reach the stream): the record again, so that a retry
    // on another replica judges it announced too.
    if (mine?.sent && entry?.notifiedAt === undefined) await this.recordAnnounced(id);
    const body = outcomeNoticeBody(closed, { request: entry?.request, decision: entry?.decision }, this.opts.webhook);
    const { step } = await this.post(m, 'outcome', id, body, undefined);
    if (step !== 'handed back' && step.ack) this.requestNotices.forget(id);
  }

  /**
   * A hold can end while its notice is still being posted (a slow receiver, a retry), so its closing can reach the
   * stream before the record that the request was announced. Until that record is in the queue, wait
   * (announceWaitMs at most) unless it is known: this replica sent the notice (or may have), or handled it last
   * without a retry to come (so knows it was not), or the request was approved under a grant (never announced).
   * And while this replica is posting the notice, wait for that POST: a follow-up does not overtake its notice.
   * `known` false: stopped before it could tell.
   */
  private async untilAnnouncedOrKnown(id: string, entry: ApprovalEntry | undefined) {
    const until = Date.now() + this.announceWaitMs;
    for (let e = entry, waited = false; ; e = this.opts.entryOf?.(id), waited = true) {
      const mine = this.requestNotices.get(id);
      const known =
        e?.notifiedAt !== undefined || mine?.sent || (mine && !mine.retrying) || e?.decision?.under !== undefined;
      if (known && !this.postingRequests.has(id)) return { entry: e, known: true };
      if (!this.running) return { entry: e, known: false };
      if (Date.now() >= until) return { entry: e, known: true };
      // Says why a follow-up is late, and that this replica holds the closing (one that JetStream gave out but a
      // stopping replica had not taken yet is not handed back: it comes back after the ack wait).
      if (!waited)
        this.emit('status', `closing ${id} waits up to ${this.announceWaitMs} ms to learn whether it was announced`);
      await sleep(200);
    }
  }

  private skip(m: JsMsg, kind: NoticeKind, id: string, reason: string): void {
    m.ack();
    this.emit('notified', 'skipped', { kind, id, attempt: m.info.deliveryCount, reason });
  }

  /** Posts `body` for `m`, then acks or naks it by the retry rules; `expiresAt`: no retry past it. */
  private async post(
    m: JsMsg,
    kind: NoticeKind,
    id: string,
    body: string,
    expiresAt: string | undefined,
    /** Runs after the POST, before `m` is settled; false hands `m` back (a nak) instead of acknowledging it. */
    beforeSettle?: (posted: Posted) => Promise<boolean>,
  ): Promise<Posted> {
    const attempt = m.info.deliveryCount;
    if (attempt > this.retry.maxAttempts) {
      // Deliveries that ended in nothing (a replica stopped mid-post) count too: the bound holds across replicas.
      m.ack();
      const reason = `gave up after ${this.retry.maxAttempts} attempts`;
      this.emit('notified', 'failed', { kind, id, attempt, reason });
      return { step: { ack: true, outcome: 'failed', reason }, maybeDelivered: false };
    }
    const { webhook } = this.opts;
    const now = this.now();
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'user-agent': 'pgwarden-collector',
      [NOTICE_ID_HEADER]: noticeIdOf(kind, id),
      ...(webhook.signingSecret ? signatureHeaders(webhook.signingSecret, body, Math.floor(now / 1000)) : {}),
    };
    const result = await postWebhook(webhook.url, body, headers, {
      timeoutMs: this.opts.timeoutMs,
      signal: this.stopping.signal,
    });
    const maybeDelivered = 'maybeDelivered' in result && result.maybeDelivered === true;
    if (this.stopping.signal.aborted && !('status' in result)) {
      // Stopping: handed back at once, for another replica (or this one's successor) to post.
      await beforeSettle?.({ step: 'handed back', maybeDelivered });
      m.nak();
      return { step: 'handed back', maybeDelivered };
    }
    const step = afterAttempt(result, attempt, expiresAt, this.now(), this.retry);
    // Posted, but its record is not in the stream: handed back, to be posted again (at once by another replica when
    // this one stops); the attempt counts against the retry bound like any other.
    if (beforeSettle && !(await beforeSettle({ step, maybeDelivered })))
      m.nak(this.stopping.signal.aborted ? undefined : this.retry.baseDelayMs);
    else if (step.ack) m.ack();
    else m.nak(step.delayMs);
    this.emit('notified', step.outcome, {
      kind,
      id,
      attempt,
      ...(step.reason ? { reason: step.reason } : {}),
      ...(step.ack ? {} : { delayMs: step.delayMs }),
    });
    return { step, maybeDelivered };
  }

  private now(): number {
    return this.opts.now ? this.opts.now() : Date.now();
  }
}
