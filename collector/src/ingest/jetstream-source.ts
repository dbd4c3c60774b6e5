import {
  AckPolicy,
  type ConsumerMessages,
  DeliverPolicy,
  DiscardPolicy,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  StorageType,
} from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { NatsUserFiles } from '@pgwarden/policy';
import type { IngestQueue } from './ingest-queue.js';
import { JetStreamAcks } from './jetstream-acks.js';
import { addStreamIfMissing, connectCollectorNats } from './nats-connect.js';

export const AUDIT_STREAM = 'PGWARDEN_AUDIT';
export const AUDIT_SUBJECTS = 'pgwarden.audit.>';

export interface JetStreamSourceOptions {
  url: string;
  /** Durable consumer name: restarts resume where the last acknowledged message left off. */
  durable?: string;
  /**
   * Messages the server may have outstanding (delivered, unacknowledged) at once: the bound on what the ingest
   * queue holds from NATS (see `setup`). A message carries up to MAX_EVENTS_PER_MESSAGE events. Default 4096.
   */
  maxAckPending?: number;
  /** Prefetch size of each pull. */
  pullBatch?: number;
  /** How long a delivered, unacknowledged message waits before redelivery (default 60 s). */
  ackWaitMs?: number;
  /** The collector's NATS user (files username/password of a mounted Secret), read at each connect. */
  userFiles?: NatsUserFiles;
  onStatus?: (status: string) => void;
}

const NANOS_PER_MS = 1_000_000;

/** The most events a sidecar puts in one message (its batch limit); bounds what one delivery adds to the queue. */
export const MAX_EVENTS_PER_MESSAGE = 64;

const NEWLINE = 10;

/**
 * The events of one message body: a sidecar sends one event as its JSON text, or several as JSON lines joined by
 * '\n' (a `Pgwarden-Batch: <count>` header marks those; docs/audit.md). Event JSON never holds a raw newline, so
 * the lines are the events; empty lines are skipped. The parts are views into `body`, not copies.
 */
export function splitEvents(body: Uint8Array): Uint8Array[] {
  let nl = body.indexOf(NEWLINE);
  if (nl < 0) return [body];
  const out: Uint8Array[] = [];
  let start = 0;
  while (nl >= 0) {
    if (nl > start) out.push(body.subarray(start, nl));
    start = nl + 1;
    nl = body.indexOf(NEWLINE, start);
  }
  if (start < body.length) out.push(body.subarray(start));
  // Nothing but newlines: hand it on whole, to be rejected (and kept) as what it is.
  return out.length > 0 ? out : [body];
}

/**
 * Creates the audit stream if missing, with the same shape the sidecar creates: file storage, all
 * `pgwarden.audit.>` subjects, a duplicate window so `<session>.<seq>` message ids deduplicate retries
 * (https://docs.nats.io/using-nats/developer/develop_jetstream/model_deep_dive#message-deduplication).
 */
export function ensureStream(jsm: JetStreamManager): Promise<void> {
  // Same limits the sidecar applies when it creates the stream (30 days, 2-minute duplicate window), so whichever
  // side starts first, the other finds nothing to reconcile.
  return addStreamIfMissing(jsm, {
    name: AUDIT_STREAM,
    subjects: [AUDIT_SUBJECTS],
    storage: StorageType.File,
    max_age: 30 * 86_400_000 * NANOS_PER_MS,
    max_bytes: -1,
    duplicate_window: 120_000 * NANOS_PER_MS,
    discard: DiscardPolicy.New,
  });
}

/** An ack callback holding only the reply subject: a message queued for ingest need not keep its JsMsg alive. */
const ackVia = (acks: JetStreamAcks, reply: string) => () => acks.ack(reply);

/**
 * A durable pull consumer with explicit acks feeding the ingest queue. Each message is acknowledged only after
 * all its events committed to the store; anything unacknowledged is redelivered after `ack_wait`, and the store
 * drops the repeat by event id (https://docs.nats.io/nats-concepts/jetstream/consumers#ackpolicy).
 */
export class JetStreamSource {
  private nc: NatsConnection | null = null;
  private messages: ConsumerMessages | null = null;
  private running = false;
  private loop: Promise<void> | null = null;

  constructor(
    private readonly queue: IngestQueue,
    private readonly opts: JetStreamSourceOptions,
  ) {}

  private up = false;
  private consuming = false;

  /**
   * True while connected and the stream and durable consumer exist (false during reconnects and before the first
   * setup finished): readiness must not report a collector whose stream a sidecar could not publish to yet.
   */
  get connected(): boolean {
    return this.up && this.consuming && this.nc !== null && !this.nc.isClosed();
  }

  /**
   * Starts connecting and consuming in the background: a collector whose NATS is not up yet still serves its API
   * (readiness reports nats: false) and starts consuming once the server answers.
   */
  start(): void {
    this.running = true;
    this.loop = this.connectAndRun();
  }

  private async connectAndRun(): Promise<void> {
    this.nc = await connectCollectorNats({
      url: this.opts.url,
      name: 'pgwarden-collector',
      userFiles: this.opts.userFiles,
      running: () => this.running,
      onStatus: this.opts.onStatus,
      onUp: (up) => {
        this.up = up;
      },
    });
    if (this.nc) await this.run();
  }

  private async setup(nc: NatsConnection): Promise<ConsumerMessages> {
    const jsm = await jetstreamManager(nc);
    await ensureStream(jsm);
    const durable = this.opts.durable ?? 'pgwarden-collector';
    const config = {
      durable_name: durable,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      filter_subject: AUDIT_SUBJECTS,
      ack_wait: (this.opts.ackWaitMs ?? 60_000) * NANOS_PER_MS,
      // In messages: a batch of the sidecar's holds up to 64 events, so this bounds the queue (and memory) at up to
      // 64× as many events; 4096 still lets single-event messages fill several ingest batches ahead of the store.
      max_ack_pending: this.opts.maxAckPending ?? 4096,
    };
    try {
      const info = await jsm.consumers.info(AUDIT_STREAM, durable);
      if (info.config.ack_wait !== config.ack_wait || info.config.max_ack_pending !== config.max_ack_pending) {
        await jsm.consumers.update(AUDIT_STREAM, durable, {
          ack_wait: config.ack_wait,
          max_ack_pending: config.max_ack_pending,
        });
      }
    } catch (err) {
      if ((err as Error).name !== 'ConsumerNotFoundError') throw err;
      await jsm.consumers.add(AUDIT_STREAM, config);
    }
    const consumer = await jetstream(nc).consumers.get(AUDIT_STREAM, durable);
    const limit = config.max_ack_pending * MAX_EVENTS_PER_MESSAGE;
    // A callback, not the async iterator: no promise and generator step per message. The iterator's back-pressure
    // (it pulls again only as it is read) is replaced by the server's: it delivers nothing beyond max_ack_pending
    // unacknowledged messages. Only redeliveries of messages still queued here (ack_wait expired while the store
    // was down) can exceed that; those are left unacknowledged, so the server offers them again later.
    const acks = new JetStreamAcks(nc);
    return consumer.consume({
      max_messages: this.opts.pullBatch ?? 1000,
      callback: (m) => {
        if (this.queue.length >= limit) return;
        // The ack subject (JsMsgImpl has it; the JsMsg interface does not declare it).
        const reply = (m as { reply?: string }).reply;
        this.deliver(m.data, reply ? ackVia(acks, reply) : () => m.ack(), subjectNamespaceOf(m.subject));
      },
    });
  }

  /**
   * Queues each event of a message on its own; the message is acknowledged once the last of them is stored or
   * rejected (a bad line lands in audit_rejected without holding back the others). Until then nothing of it is
   * acknowledged, and a redelivery repeats only what the store already drops by event id.
   */
  private deliver(body: Uint8Array, ack: () => void, subjectNamespace: string | undefined): void {
    const events = splitEvents(body);
    if (events.length === 1) {
      this.queue.enqueue({ body: events[0], ack, source: 'nats', subjectNamespace });
      return;
    }
    let left = events.length;
    const one = () => {
      if (--left === 0) ack();
    };
    for (const e of events) this.queue.enqueue({ body: e, ack: one, source: 'nats', subjectNamespace });
  }

  /** Supervises the consumer: any failure (server restart, deleted consumer) rebuilds it after a pause. */
  private async run(): Promise<void> {
    while (this.running && this.nc) {
      try {
        this.messages = await this.setup(this.nc);
        if (!this.running) {
          // stop() ran while the consumer was being set up: it had nothing to stop yet, so stop this one here,
          // or closed() below would wait forever (and stop() with it).
          this.messages.stop();
          break;
        }
        this.consuming = true;
        this.opts.onStatus?.('consuming');
        const ended = await this.messages.closed();
        if (ended instanceof Error) throw ended;
      } catch (err) {
        this.consuming = false;
        if (!this.running) break;
        this.opts.onStatus?.(`consumer error: ${(err as Error).message}`);
      }
      this.consuming = false;
      if (this.running) await new Promise((r) => setTimeout(r, 500));
    }
  }

  /** Stops pulling; messages already queued are still written and acknowledged until `close()`. */
  async stop(): Promise<void> {
    this.running = false;
    this.messages?.stop();
    await this.loop;
  }

  /** Flushes pending acknowledgements and closes the connection. */
  async close(): Promise<void> {
    await this.stop();
    await this.nc?.drain().catch(() => {});
    this.nc = null;
  }
}

/** `pgwarden.audit.<namespace>.<policy>` → `<namespace>`; undefined for any other subject (nothing to check). */
function subjectNamespaceOf(subject: string): string | undefined {
  const parts = subject.split('.');
  return parts.length === 4 && parts[0] === 'pgwarden' && parts[1] === 'audit' ? parts[2] : undefined;
}
