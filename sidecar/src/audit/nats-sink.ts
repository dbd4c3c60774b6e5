import { randomUUID } from 'node:crypto';
import type { NatsConnection } from '@nats-io/transport-node';
import type { AuditGap, NatsUserFiles } from '@pgwarden/policy';
import { auditSubject } from '@pgwarden/policy';
import type { Registry } from 'prom-client';
import { type AuditMetrics, auditMetrics } from './audit-metrics.js';
import { type AuditSink, type AuditSinkStats, eventJson, type GapListener } from './audit-sink.js';
import { type AuditStreamLimits, DEFAULT_STREAM_LIMITS } from './audit-stream.js';
import { DiskSpool, type DiskSpoolOptions, type SpoolPos } from './disk-spool.js';
import { DropTracker, nowMicros } from './drop-tracker.js';
import { AuditError, SpoolWriteError } from './errors.js';
import { type Batch, DEFAULT_BATCH_LIMITS, JetStreamPublisher } from './jetstream-publisher.js';
import { messageId } from './message-id.js';
import { NatsLink } from './nats-link.js';
import { type UndeliveredAudit, UndeliveredTally, undeliveredMessage } from './undelivered-events.js';

export interface NatsSinkOptions {
  /** host:port list (nats:// scheme optional). */
  servers: string[];
  /** Disk spool; without it events wait in memory only and a full queue drops. */
  spool?: DiskSpoolOptions;
  /** Events held in memory awaiting an ack before the sink spills to the spool. Default 10000. */
  maxQueue?: number;
  /**
   * The same bound in characters of event JSON (about bytes: the text is mostly one-byte strings). Default
   * MAX_QUEUE_CHARS. Without a spool, events past either bound are dropped and the sink is not ready.
   */
  maxQueueChars?: number;
  /** Publishes awaiting their ack at once. Default 512. */
  maxInFlight?: number;
  /** An ack slower than this counts as a failure: the window spills to the spool and is retried. Default 5000. */
  publishTimeoutMs?: number;
  /** How long events may wait to be written to NATS together (see JetStreamPublisher). Default 5. */
  publishLingerMs?: number;
  /** Events per JetStream message at most (1: one message per event, as before batching). Default 64. */
  maxBatchEvents?: number;
  stream?: Partial<AuditStreamLimits>;
  credsFile?: string;
  /** NATS user/password files (a mounted Secret); see NatsLinkOptions. */
  userFiles?: NatsUserFiles;
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
  registry?: Registry;
  log?: (level: 'info' | 'warn' | 'error', msg: string, err?: unknown) => void;
  /**
   * How long close() goes on delivering what is still undelivered, NATS up or not (it may come back within it).
   * Default 5000.
   */
  drainTimeoutMs?: number;
  /**
   * Called by close() when events are still undelivered once the drain is over, naming them (positions only); and,
   * with `drainingMs`, as a drain starts while NATS is unreachable (what it is about to try to deliver, for a container
   * killed before the drain ends). Without it they are logged through `log` (at error, and at warn for a start).
   */
  onUndelivered?: (report: UndeliveredAudit, drainingMs?: number) => void;
}

/** Below NATS's default max_payload (1 MiB) with room for headers (a UTF-16 unit is at most 3 UTF-8 bytes). */
const MAX_EVENT_BYTES = 1_000_000;

/**
 * Default bound on the event text waiting in memory for its ack. 10000 events of ~1 KB fit well below it; 10000 with
 * result samples (`captureResults: rows`, up to 64 KiB each) would be ~640 MB, past the sidecar container's 256 MiB
 * limit: the OOM kill would take every unacknowledged event with it (docs/operations.md).
 */
export const MAX_QUEUE_CHARS = 32 * 1024 * 1024;

const PENDING = 0;
const INFLIGHT = 1;
const ACKED = 2;

interface Entry {
  subject: string;
  msgID: string;
  data: string;
  state: number;
  /** Where the entry ends in the spool, once it is there. */
  end?: SpoolPos;
  session?: string;
  seq?: number;
  /** The JetStream message it was sent in; a re-send repeats that message (same id, so it deduplicates). */
  batch?: Batch<Entry>;
}

/** What a window slot below `head` holds once its entry is acknowledged (see advance). */
const RELEASED: Entry = Object.freeze({ subject: '', msgID: '', data: '', state: ACKED }) as Entry;

/**
 * JetStream sink. One ordered log: a memory window of unacknowledged entries (head = oldest) and, behind it,
 * the disk spool. While the spool holds anything, new events are appended to it (never to memory), and the
 * window is a read-ahead of the spool; so delivery is oldest-first across outages and restarts. Publishes are
 * pipelined up to maxInFlight events, several events of a subject per message (JetStreamPublisher); an event
 * counts as delivered only when its message's PubAck arrives. After any failure sending pauses, waits for the
 * in-flight ones to settle and resumes from the oldest unacknowledged entry (message ids `<session>.<seq>`, or
 * `<session>.<seq>+<count>` for a batch re-sent as it was, make re-sends idempotent; the collector also
 * deduplicates by event id what a batch formed differently after a restart repeats).
 */
export class NatsAuditSink implements AuditSink {
  private readonly opts: Required<
    Omit<
      NatsSinkOptions,
      'spool' | 'registry' | 'log' | 'stream' | 'credsFile' | 'userFiles' | 'tls' | 'maxBatchEvents' | 'onUndelivered'
    >
  >;
  private readonly limits: AuditStreamLimits;
  private readonly spool?: DiskSpool;
  private readonly metrics: AuditMetrics;
  private readonly drops = new DropTracker();
  private readonly log: NonNullable<NatsSinkOptions['log']>;
  private readonly onUndelivered: NatsSinkOptions['onUndelivered'];
  private readonly spoolDir: string | undefined;
  private window: Entry[] = [];
  private head = 0;
  /** Characters of event text in the window from `head` on (released slots hold none). */
  private windowChars = 0;
  private sendIdx = 0;
  private spoolMode = false;
  private spoolBroken = false;
  private toSpool: Entry[] = [];
  private flushScheduled = false;
  private connected = false;
  private paused = false;
  private resumeTimer?: NodeJS.Timeout;
  private cursorTimer?: NodeJS.Timeout;
  private closing = false;
  private gapListener?: GapListener;
  private idleWaiters: (() => void)[] = [];
  private readonly counts = { published: 0, spooled: 0, dropped: 0, failures: 0 };
  private consecutiveFailures = 0;
  /** Gap reports handed to the listener but not yet turned into events (keeps whenIdle honest). */
  private gapsDue = 0;
  private readonly link: NatsLink;
  private nc?: NatsConnection;
  private readonly publisher: JetStreamPublisher<Entry>;
  private readonly gaugeTimer: NodeJS.Timeout;
  private readonly subjects = new SubjectReader();
  private readonly upListeners = new Set<(nc: NatsConnection) => void>();

  constructor(options: NatsSinkOptions) {
    this.opts = {
      servers: options.servers,
      maxQueue: options.maxQueue ?? 10_000,
      maxQueueChars: options.maxQueueChars ?? MAX_QUEUE_CHARS,
      maxInFlight: options.maxInFlight ?? 512,
      publishTimeoutMs: options.publishTimeoutMs ?? 5000,
      publishLingerMs: options.publishLingerMs ?? 5,
      drainTimeoutMs: options.drainTimeoutMs ?? 5000,
    };
    this.onUndelivered = options.onUndelivered;
    this.spoolDir = options.spool?.dir;
    this.limits = { ...DEFAULT_STREAM_LIMITS, ...options.stream };
    this.metrics = auditMetrics(options.registry);
    this.log = options.log ?? (() => {});
    if (options.spool) {
      this.spool = new DiskSpool({
        ...options.spool,
        onSyncError: (err) => this.spoolSyncFailed(err),
        onSyncRecovered: () => this.spoolSyncRecovered(),
        onRecordError: (err) =>
          this.log(
            'error',
            'audit spool at-risk record cannot be created or written: the spool is not durable until it can ' +
              '(a failed sync and a restart could lose events undeclared); trying again every second',
            err,
          ),
        onRecordRecovered: () => this.recordRecovered(),
      });
      // A spool left by a previous run is drained before anything new (its events are older).
      this.spoolMode = !this.spool.empty;
    }
    this.gaugeTimer = setInterval(() => this.sampleGauges(), 1000);
    this.gaugeTimer.unref();
    this.publisher = new JetStreamPublisher<Entry>(
      this.opts.publishTimeoutMs,
      (items) => this.acked(items),
      (err) => this.failed(err),
      this.opts.publishLingerMs,
      { maxEvents: options.maxBatchEvents ?? DEFAULT_BATCH_LIMITS.maxEvents },
      (items) => this.unsendable(items),
    );
    this.link = new NatsLink({
      servers: this.opts.servers,
      limits: this.limits,
      requestTimeoutMs: this.opts.publishTimeoutMs,
      credsFile: options.credsFile,
      userFiles: options.userFiles,
      tls: options.tls,
      up: (nc) => this.linkUp(nc),
      down: () => this.onDisconnected(),
      log: this.log,
    });
  }

  /**
   * The sink's NATS connection once it has been up (it reconnects by itself), for other traffic of the same sidecar
   * with the same credentials: the approval queue (governance/nats-approval-gate.ts).
   */
  natsConnection(): NatsConnection | undefined {
    return this.closing || this.nc?.isClosed() ? undefined : this.nc;
  }

  /**
   * Calls `listener` each time the connection is up and usable (at once when it is already): other traffic over it,
   * such as the control subscription (governance/nats-control.ts), reads back what it missed while it was down.
   */
  onConnected(listener: (nc: NatsConnection) => void): () => void {
    this.upListeners.add(listener);
    if (this.connected && this.nc && !this.nc.isClosed()) listener(this.nc);
    return () => this.upListeners.delete(listener);
  }

  emit(event: Record<string, unknown>): void {
    const session = event.session as { id?: string; seq?: number } | undefined;
    this.accept({
      subject: auditSubject(event),
      // Recorder events always carry id = <session>.<seq>; anything else still gets a unique message id.
      msgID: messageId(String(event.id ?? randomUUID()), event.hash),
      data: eventJson(event),
      state: PENDING,
      session: session?.id,
      seq: session?.seq,
    });
  }

  /**
   * A recorder event as its canonical JSON (id `<session>.<seq>`): offering this spares the recorder building an
   * event object per statement (statement-json.ts), which cost far more than reading the subject back here.
   */
  emitJson(json: string, session: string, seq: number): void {
    this.accept({
      subject: this.subjects.of(json),
      // The canonical JSON ends `"hash":"<64 hex>"}` (sealEventToJson, statement-json.ts).
      msgID: messageId(`${session}.${seq}`, json.slice(-66, -2)),
      data: json,
      state: PENDING,
      session,
      seq,
    });
  }

  private accept(entry: Entry): void {
    if (this.closing) {
      this.drop(entry, 'closed');
      return;
    }
    // NATS refuses messages over max_payload (1 MiB by default); one would block the ordered log forever.
    if (entry.data.length > MAX_EVENT_BYTES / 3 && Buffer.byteLength(entry.data) > MAX_EVENT_BYTES) {
      this.drop(entry, 'too_large');
      return;
    }
    if (!this.spool) {
      if (!this.windowHasRoom()) {
        this.drop(entry, 'queue_full');
        return;
      }
      this.windowChars += entry.data.length;
      this.window.push(entry);
      this.accepted();
      this.pump();
      return;
    }
    if (!this.spoolMode && this.connected && this.windowHasRoom()) {
      this.windowChars += entry.data.length;
      this.window.push(entry);
      this.accepted();
      this.pump();
      return;
    }
    if (!this.spoolMode) this.spill();
    this.toSpool.push(entry);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flushSpool());
    }
  }

  flush(): void {
    if (this.toSpool.length > 0) this.flushSpool();
  }

  private windowHasRoom(): boolean {
    return this.window.length - this.head < this.opts.maxQueue && this.windowChars < this.opts.maxQueueChars;
  }

  ready(): boolean {
    // Paused: a publish failed or went unacknowledged for publishTimeoutMs (a server that stopped answering keeps its
    // socket open until ~30 s of missed pings). Without a spool every event accepted then waits in memory, where a
    // crash loses it: not ready until the link is checked and up again.
    const direct = this.connected && !this.paused && this.windowHasRoom();
    // In direct mode new events do not touch the disk: a spool write that failed earlier (disk full) must not
    // keep refusing statements once NATS takes them again. The next spill finds out whether the disk has room.
    // A spool whose last fdatasync failed may have lost what it held: not durable until a later sync succeeds.
    // Nor is one without its at-risk record (what a failed sync may have lost would go undeclared after a restart).
    return this.spool
      ? (!this.spoolMode && direct) ||
          (!this.spoolBroken && !this.spool.syncFailed && !this.spool.full && this.spool.recordProblem === undefined)
      : direct;
  }

  notReadyCause(): string | undefined {
    return this.ready() ? undefined : this.spool?.recordProblem;
  }

  /** The at-risk record works again; one that opened late may hold what a run before left undeclared. */
  private recordRecovered(): void {
    this.log('info', 'audit spool at-risk record written again');
    if (this.gapListener && this.spool?.carriedRisk && !this.spool.syncFailed) {
      const gap = this.spool.takeSyncGap();
      if (gap) this.reportGap(gap);
    }
  }

  private spoolSyncFailed(err: Error): void {
    this.metrics.fsyncFailures.inc({ sink: 'nats' });
    if (!this.spool?.syncFailed) this.log('error', 'audit spool fdatasync failed: spooled events may be lost', err);
  }

  /** The spool's syncs work again: name what the failed ones may have lost, in an event that can now be kept. */
  private spoolSyncRecovered(): void {
    this.log('info', 'audit spool fdatasync succeeded again');
    const gap = this.spool?.takeSyncGap();
    if (gap) this.reportGap(gap);
  }

  /** Gauges are sampled once a second instead of on every event (scrapes come every 15 s or so). */
  private sampleGauges(): void {
    this.metrics.queued.set({ sink: 'nats' }, this.window.length - this.head + this.toSpool.length);
    this.metrics.spoolBytes.set({ sink: 'nats' }, this.spool?.bytes ?? 0);
    this.metrics.ready.set({ sink: 'nats' }, this.ready() ? 1 : 0);
  }

  onGap(listener: GapListener): void {
    this.gapListener = listener;
    // A run before this one left events at risk undeclared (it stopped before its spool syncs recovered).
    if (this.spool?.carriedRisk && !this.spool.syncFailed) {
      const gap = this.spool.takeSyncGap();
      if (gap) this.reportGap(gap);
    }
  }

  stats(): AuditSinkStats {
    return {
      kind: 'nats',
      connected: this.connected,
      mode: this.spoolMode ? 'spool' : 'direct',
      queued: this.window.length - this.head + this.toSpool.length,
      inflight: this.publisher.inflight,
      spoolBytes: this.spool?.bytes ?? 0,
      ...this.counts,
    };
  }

  /** Resolves once everything emitted so far is acknowledged by JetStream (or rejects after timeoutMs). */
  whenIdle(timeoutMs = 30_000): Promise<void> {
    if (this.idle()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(
        () => reject(new AuditError('AUDIT_NATS', `audit sink not idle after ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.idleWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  /**
   * Delivers what is left for up to `timeoutMs` (drainTimeoutMs by default), also while NATS is away, since it may
   * come back meanwhile; then spools what memory still holds, and names whatever is still undelivered
   * (onUndelivered): the spool survives a restart of the container, not the deletion of its pod.
   */
  async close(timeoutMs = this.opts.drainTimeoutMs): Promise<void> {
    if (this.closing) return;
    this.flushSpool();
    if (!this.idle() && timeoutMs > 0) {
      // During an outage, a line now: the pod's grace period may run out before the drain does, and then nothing else
      // gets logged. (Connected, the last acks are usually a few milliseconds away: no line for every stop.)
      if ((!this.connected || this.paused) && !this.reportUndelivered(timeoutMs)) {
        this.log(
          'warn',
          `audit: events not yet delivered at shutdown (NATS unreachable); delivering them for up to ${timeoutMs} ms`,
        );
      }
      await this.whenIdle(timeoutMs).catch(() => {});
      // Emitted during the drain and not yet written: after `closing` nothing is.
      this.flushSpool();
    }
    this.closing = true;
    this.connected = false;
    clearTimeout(this.resumeTimer);
    clearTimeout(this.cursorTimer);
    this.publisher.close();
    clearInterval(this.gaugeTimer);
    // Whatever memory still holds goes to disk so the next start delivers it.
    if (this.spool && !this.spoolMode) this.spill();
    if (!this.idle() || this.drops.pending > 0) this.reportUndelivered();
    this.spool?.close();
    await this.spool?.closed();
    await this.link.close();
  }

  /**
   * Names, by position, what close() leaves undelivered, and the earlier drops no audit.gap has declared yet; with
   * `drainingMs`, what a drain starting now is about to try to deliver (the drops are left for the end). False when
   * there is nothing to name.
   */
  private reportUndelivered(drainingMs?: number): boolean {
    const tally = new UndeliveredTally();
    // Acknowledged out of order (a later message's ack came first): delivered, although the spool cursor is behind.
    const acked = new Set<string>();
    for (let i = this.head; i < this.window.length; i++) {
      const e = this.window[i];
      if (e.state === ACKED) {
        if (e.end !== undefined) acked.add(e.msgID);
      } else if (e.end === undefined) {
        const p = e.session === undefined ? positionOf(e.data) : e;
        tally.add('memory', p.session, p.seq);
      }
    }
    try {
      this.spool?.forEachPending((id) => {
        if (id === undefined || !acked.has(id)) tally.addSpooled(id);
      });
    } catch (err) {
      this.log('error', 'audit spool could not be read to name what it holds', err);
    }
    const draining = drainingMs !== undefined;
    if (tally.count === 0 && (draining || this.drops.pending === 0)) return false;
    const report = tally.report(this.spool ? this.spoolDir : undefined, draining ? undefined : this.drops.take());
    if (this.onUndelivered) this.onUndelivered(report, drainingMs);
    else this.log(draining ? 'warn' : 'error', `${undeliveredMessage(report, drainingMs)}: ${JSON.stringify(report)}`);
    return true;
  }

  private idle(): boolean {
    return (
      this.gapsDue === 0 &&
      this.window.length === this.head &&
      this.toSpool.length === 0 &&
      (!this.spool || this.spool.empty)
    );
  }

  /** Direct → spool mode: the unacknowledged window goes to disk in order; new events follow it there. */
  private spill(): void {
    if (!this.spool || this.spoolMode) return;
    this.spoolMode = true;
    // Entries read from the spool (they have an end) are on disk already, ahead of everything newer.
    const live = this.window.slice(this.head).filter((e) => e.state !== ACKED && e.end === undefined);
    if (live.length === 0) return;
    const ends = this.appendToSpool(live);
    for (let i = 0; i < ends.length; i++) live[i].end = ends[i];
    if (ends.length > 0) this.spool.markRead(ends[ends.length - 1]);
    // Entries that did not fit stay in memory only: still delivered unless the process dies first.
  }

  private flushSpool(): void {
    this.flushScheduled = false;
    if (this.toSpool.length === 0) return;
    const batch = this.toSpool;
    this.toSpool = [];
    const ends = this.appendToSpool(batch);
    for (let i = ends.length; i < batch.length; i++) this.drop(batch[i], this.spoolBroken ? 'spool_io' : 'spool_full');
    if (ends.length > 0) this.accepted();
    this.pump();
  }

  private appendToSpool(entries: Entry[]): readonly SpoolPos[] {
    let ends: readonly SpoolPos[];
    try {
      ends = this.spool!.append(entries);
      this.spoolBroken = false;
    } catch (err) {
      if (!this.spoolBroken) this.log('error', 'audit spool write failed', err);
      this.spoolBroken = true;
      // The records a failed write left whole are in the spool and will be read back: spooled, not dropped.
      ends = err instanceof SpoolWriteError ? err.written : [];
    }
    this.counts.spooled += ends.length;
    this.metrics.spooled.inc({ sink: 'nats' }, ends.length);
    return ends;
  }

  private drop(entry: Entry, cause: string): void {
    this.counts.dropped++;
    this.metrics.dropped.inc({ sink: 'nats', cause });
    this.drops.record(entry.session, entry.seq, cause, nowMicros());
  }

  /** An event was made durable (or queued for delivery) after drops: report the gap, outside this call stack. */
  private accepted(): void {
    if (this.drops.pending === 0 || !this.gapListener) return;
    this.reportGap(this.drops.take()!);
  }

  private reportGap(gap: AuditGap): void {
    const listener = this.gapListener;
    if (!listener) return;
    this.gapsDue++;
    queueMicrotask(() => {
      this.gapsDue--;
      listener(gap);
    });
  }

  private pump(): void {
    if (this.spoolMode) this.refill();
    if (!this.connected || this.paused) return;
    while (this.publisher.inflight < this.opts.maxInFlight && this.sendIdx < this.window.length) {
      const e = this.window[this.sendIdx++];
      if (e.state === PENDING) this.send(e);
    }
  }

  private refill(): void {
    const room = Math.min(this.opts.maxQueue, 4 * this.opts.maxInFlight) - (this.window.length - this.head);
    if (room > 0 && this.windowChars < this.opts.maxQueueChars && this.spool && !this.spool.readAll) {
      try {
        let damaged = 0;
        for (const r of this.spool.read(room)) {
          if (r.damaged) {
            // Which event it held is unknown: the gap counts it without naming a session. It stays in the window,
            // as acknowledged, so that the cursor moves past it in order.
            damaged++;
            const lost: Entry = { subject: '', msgID: '', data: '', state: ACKED, end: r.end };
            this.drop(lost, 'spool_corrupt');
            this.window.push(lost);
            continue;
          }
          this.windowChars += r.data.length;
          this.window.push({ subject: r.subject, msgID: r.msgID, data: r.data, end: r.end, state: PENDING });
        }
        if (damaged > 0) {
          this.log('error', `audit spool: ${damaged} damaged line(s) skipped, declared lost (cause spool_corrupt)`);
          this.accepted();
          this.advance();
        }
      } catch (err) {
        this.log('error', 'audit spool read failed', err);
      }
    }
    // Every spooled event is in the window now, in order: new ones can follow them there directly. Waiting
    // instead for the spool to be fully acknowledged never ends under steady traffic (something newer is always
    // in flight), and every event would keep paying a disk write, an fsync and a read-back. Nor for a spool
    // that cannot be written (disk full): with NATS back, every new event would be dropped for nothing.
    if (this.spool?.readAll && this.toSpool.length === 0 && this.connected && !this.paused && this.windowHasRoom()) {
      this.spoolMode = false;
    }
  }

  private send(e: Entry): void {
    e.state = INFLIGHT;
    this.publisher.publish(e);
  }

  /** One message's events, all stored: only now do they leave the window (and the spool, via advance). */
  private acked(items: Entry[]): void {
    for (const e of items) e.state = ACKED;
    this.counts.published += items.length;
    this.consecutiveFailures = 0;
    this.metrics.published.inc({ sink: 'nats' }, items.length);
    this.advance();
    if (this.paused) this.maybeResume();
    else this.pump();
  }

  /** An event over the server's max_payload: it leaves the log as dropped, so the events behind it can go. */
  private unsendable(items: Entry[]): void {
    for (const e of items) {
      e.state = ACKED;
      // Read back from the spool, an entry carries only its text: the gap must still name its session and seq.
      if (e.session === undefined) Object.assign(e, positionOf(e.data));
      this.drop(e, 'too_large');
    }
    this.log('error', `audit event ${items[0].msgID} is over the NATS server's max_payload; dropped`);
    this.accepted();
    this.advance();
    if (this.paused) this.maybeResume();
    else this.pump();
  }

  /** Forget everything in flight (a later ack of it is ignored, a re-send deduplicates), spill, retry in order. */
  private failed(err: unknown): void {
    this.counts.failures++;
    this.consecutiveFailures++;
    this.forgetInflight();
    if (!this.paused) {
      this.paused = true;
      this.log('warn', 'audit publish failed; spooling and retrying', err);
      this.spill();
    }
    this.maybeResume();
  }

  private forgetInflight(): void {
    this.publisher.forget();
    for (let i = this.head; i < this.window.length; i++)
      if (this.window[i].state === INFLIGHT) this.window[i].state = PENDING;
    this.sendIdx = this.head;
  }

  /** Pops the acknowledged head of the window, moving the spool cursor with it. */
  private advance(): void {
    let end: SpoolPos | undefined;
    while (this.head < this.window.length && this.window[this.head].state === ACKED) {
      end = this.window[this.head].end ?? end;
      this.windowChars -= this.window[this.head].data.length;
      // Released now, not at the next compaction: a slot still pointing at an acknowledged event kept its
      // text alive through scavenges until V8 promoted it, and old-generation GC became the sink's largest cost.
      this.window[this.head] = RELEASED;
      this.head++;
    }
    if (this.sendIdx < this.head) this.sendIdx = this.head;
    if (this.head > 4096 && this.head * 2 > this.window.length) {
      this.window = this.window.slice(this.head);
      this.sendIdx -= this.head;
      this.head = 0;
    }
    if (end && this.spool) {
      this.spool.ack(end);
      this.scheduleCursorSave();
    }
    if (this.spoolMode && this.head === this.window.length && this.toSpool.length === 0 && this.spool?.empty) {
      this.spool.reset();
      this.spoolMode = false;
      this.metrics.spoolBytes.set({ sink: 'nats' }, 0);
    } else if (!this.spoolMode && end && this.spool?.empty) {
      // Back in direct mode (refill) and the last spooled event is now acknowledged: the segments can go.
      this.spool.reset();
      this.metrics.spoolBytes.set({ sink: 'nats' }, 0);
    }
    if (this.idleWaiters.length > 0 && this.idle()) for (const w of this.idleWaiters.splice(0)) w();
  }

  private scheduleCursorSave(): void {
    if (this.cursorTimer) return;
    this.cursorTimer = setTimeout(() => {
      this.cursorTimer = undefined;
      try {
        this.spool?.saveCursor();
      } catch (err) {
        this.log('warn', 'audit spool cursor not saved', err);
      }
    }, 100);
  }

  /** After a failure: once nothing is in flight, wait a moment and resend from the oldest unacknowledged entry. */
  private maybeResume(): void {
    if (!this.paused || this.publisher.inflight > 0 || this.resumeTimer || this.closing) return;
    const delay = Math.min(200 * 2 ** Math.min(this.consecutiveFailures, 4), 2000);
    this.resumeTimer = setTimeout(() => {
      this.resumeTimer = undefined;
      if (!this.connected) return; // the reconnect handler resumes
      // Re-check the stream first (deleted? JetStream restarting?); the link reports up, which resumes sending.
      this.link.recheck();
    }, delay);
  }

  /** The link is up and the stream exists: send from the oldest unacknowledged entry. */
  private linkUp(nc: NatsConnection): void {
    if (this.closing) return;
    this.nc = nc;
    this.publisher.attach(nc);
    this.connected = true;
    this.paused = false;
    this.sendIdx = this.head;
    this.pump();
    for (const l of this.upListeners) {
      try {
        l(nc);
      } catch (err) {
        this.log('warn', 'a NATS connection listener failed', err);
      }
    }
  }

  private onDisconnected(): void {
    if (!this.connected || this.closing) return;
    this.connected = false;
    // Publishes of the lost connection may or may not have been stored: forget them and resend all in order
    // after the reconnect (their message ids deduplicate), so nothing newer overtakes them in the stream.
    this.forgetInflight();
    this.log('warn', 'audit NATS disconnected; spooling');
    this.spill();
  }
}

/**
 * The subject (`identity.namespace`, `policy.name`) of an event given as canonical JSON. Keys are sorted, so the
 * top-level `identity` … `policy` members sit together just before `"prevHash":` (schema v1 requires it); only that
 * span is parsed, and its subject remembered, since a session repeats it statement after statement. A key pattern
 * with its quotes unescaped cannot occur inside a JSON string, so the search finds members, not text; anything
 * unexpected (no span, or one that does not parse alone) falls back to parsing the whole event.
 */
export class SubjectReader {
  private readonly known = new Map<string, string>();

  of(json: string): string {
    const from = json.indexOf('"identity":');
    const to = from < 0 ? -1 : json.indexOf(',"prevHash":', from);
    if (to < 0) return auditSubject(JSON.parse(json));
    const span = json.slice(from, to);
    let subject = this.known.get(span);
    if (subject === undefined) {
      try {
        subject = auditSubject(JSON.parse(`{${span}}`));
      } catch {
        return auditSubject(JSON.parse(json));
      }
      if (this.known.size >= 1024) this.known.clear();
      this.known.set(span, subject);
    }
    return subject;
  }
}

function positionOf(json: string): { session?: string; seq?: number } {
  try {
    const s = (JSON.parse(json) as { session?: { id?: unknown; seq?: unknown } }).session;
    return typeof s?.id === 'string' && typeof s.seq === 'number' ? { session: s.id, seq: s.seq } : {};
  } catch {
    return {};
  }
}
