import { isUtf8 } from 'node:buffer';
import { EventEmitter } from 'node:events';
import { subjectToken } from '@pgwarden/policy';
import { readCanonicalEvent } from '../chain/canonical-event.js';
import { schemaV1Rules } from '../chain/chain-rules.js';
import type { ChainFinding } from '../chain/verify-chain.js';
import { type AuditEvent, parseEvent } from '../event.js';
import type { AuditStore, IngestOutcome } from '../store/audit-store.js';
import type { CopyRows } from '../store/copy-rows.js';
import type { IngestItem } from '../store/ingest-writer.js';

/** One event as a source delivered it; `ack` is called only after the event is durably stored (or rejected). */
export interface Delivery {
  /** The message body: JSON text, bytes, or an already parsed value. */
  body: string | Uint8Array | unknown;
  ack?: () => void;
  source: string;
  /**
   * The namespace token of the NATS subject it came on (`pgwarden.audit.<namespace>.<policy>`): the event must be
   * of that namespace. With one NATS user per namespace (whose permissions allow only its own subjects), this is
   * what keeps one namespace's sidecars from writing events for another's.
   */
  subjectNamespace?: string;
}

/** What became of a delivery: newly stored, already stored (redelivery), or kept in audit_rejected. */
export type DeliveryOutcome = 'stored' | 'duplicate' | 'rejected';

export interface IngestQueueOptions {
  maxBatch?: number;
  /** How long a partial batch may wait for more events before it is written. */
  maxDelayMs?: number;
  /** Queue length beyond which `waitForRoom()` holds sources back. */
  highWater?: number;
}

export interface IngestQueueEvents {
  stored: [events: AuditEvent[], outcome: IngestOutcome];
  finding: [finding: ChainFinding];
  rejected: [reason: string];
  /** A write failed and will be retried; the error message carries no secrets. */
  retry: [error: Error, attempt: number];
}

const decoder = new TextDecoder();
const BOM_FIRST_BYTE = 0xef;
const noop = () => {};
/** Events parsed between two turns of the event loop (some 0.5 ms of work). */
const PREPARE_SLICE = 64;
const yieldToIo = () => new Promise<void>((resolve) => setImmediate(resolve));

export interface QueueItem {
  d: Delivery;
  done: (o: DeliveryOutcome) => void;
  fail: (e: Error) => void;
}

/** A parsed batch: `owners[i]` is the delivery `items[i]` came from; `rows` its COPY rows, if built ahead. */
interface Prepared {
  items: IngestItem[];
  owners: QueueItem[];
  rows: CopyRows | undefined;
}

/**
 * Batches deliveries from any source into store transactions, one at a time, and acknowledges each delivery
 * only after its batch committed. A failed write is retried (with backoff) until it succeeds or the queue
 * stops: sources redeliver what was never acknowledged, and the store's idempotency absorbs the repeats.
 */
export class IngestQueue extends EventEmitter<IngestQueueEvents> {
  private readonly queue = new ItemFifo();
  private readonly maxBatch: number;
  private readonly maxDelayMs: number;
  private readonly highWater: number;
  private flushing: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private roomWaiters: (() => void)[] = [];
  private stopped = false;

  constructor(
    private readonly store: AuditStore,
    opts: IngestQueueOptions = {},
  ) {
    super();
    this.maxBatch = opts.maxBatch ?? 1000;
    this.maxDelayMs = opts.maxDelayMs ?? 20;
    this.highWater = opts.highWater ?? this.maxBatch * 4;
  }

  get length(): number {
    return this.queue.length;
  }

  /** Enqueues one delivery; the promise settles once it is stored (or rejected as invalid). */
  push(d: Delivery): Promise<DeliveryOutcome> {
    if (this.stopped) return Promise.reject(new Error('ingest queue stopped'));
    return new Promise<DeliveryOutcome>((done, fail) => {
      this.queue.push({ d, done, fail });
      if (this.queue.length >= this.maxBatch) this.kick();
      else this.timer ??= setTimeout(() => this.kick(), this.maxDelayMs);
    });
  }

  /**
   * Enqueues without a promise per event (the NATS path: the ack callback is the only completion signal),
   * sparing a promise and two closures per message.
   */
  enqueue(d: Delivery): void {
    if (this.stopped) return; // never acknowledged: the source redelivers it to the next collector
    this.queue.push({ d, done: noop, fail: noop });
    if (this.queue.length >= this.maxBatch) this.kick();
    else this.timer ??= setTimeout(() => this.kick(), this.maxDelayMs);
  }

  /** Resolves when the queue is below its high-water mark: sources await this to apply back-pressure. */
  waitForRoom(): Promise<void> {
    if (this.queue.length < this.highWater) return Promise.resolve();
    return new Promise((r) => this.roomWaiters.push(r));
  }

  /** Writes everything queued, then stops accepting. */
  async stop(): Promise<void> {
    this.stopped = true;
    while (this.queue.length > 0 || this.flushing) {
      this.kick();
      await this.flushing;
    }
  }

  private kick(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.flushing ??= this.flushLoop().finally(() => {
      this.flushing = null;
      if (this.queue.length > 0) this.kick();
    });
  }

  /**
   * Parses a batch, hashes its events and builds its COPY rows: CPU work done while the previous batch is in the
   * store. It yields to the event loop every PREPARE_SLICE events, so that batch's transaction steps (each a round
   * trip) are not held up behind the whole of this one: otherwise PostgreSQL waits for the collector, then the
   * collector for it.
   */
  private async prepare(batch: QueueItem[]): Promise<Prepared> {
    const items: IngestItem[] = [];
    const owners: QueueItem[] = [];
    const rows = this.store.copyRows();
    const schemaV1 = this.store.rules === schemaV1Rules;
    let done = 0;
    const finishSlice = () => {
      const slice = items.slice(done);
      this.store.prehash(slice);
      rows?.add(slice);
      done = items.length;
    };
    for (let i = 0; i < batch.length; i++) {
      const item = batch[i];
      try {
        const decoded = decode(item.d.body, schemaV1);
        const ns = item.d.subjectNamespace;
        if (ns !== undefined && subjectToken(decoded.event.identity?.namespace) !== ns)
          throw new Error(
            `event of namespace ${JSON.stringify(decoded.event.identity?.namespace ?? null)} arrived on the subject of namespace ${JSON.stringify(ns)}`,
          );
        items.push(decoded);
        owners.push(item);
      } catch (err) {
        await this.rejectOne(item, (err as Error).message);
      }
      if (i % PREPARE_SLICE === PREPARE_SLICE - 1 && i < batch.length - 1) {
        finishSlice();
        await yieldToIo();
      }
    }
    finishSlice();
    return { items, owners, rows };
  }

  private take(): QueueItem[] {
    const batch = this.queue.take(this.maxBatch);
    if (this.queue.length < this.highWater) for (const w of this.roomWaiters.splice(0)) w();
    return batch;
  }

  /**
   * One transaction at a time (the store serialises them anyway), with the next batch prepared meanwhile and its
   * transaction started as soon as the previous one committed, before that one's deliveries are acknowledged.
   */
  private async flushLoop(): Promise<void> {
    let current = await this.prepareNext();
    let writing = current && this.writeWithRetry(current);
    while (current && writing) {
      const next = await this.prepareNext();
      const outcome = await writing;
      if (!outcome) {
        for (const item of [...current.owners, ...(next?.owners ?? [])])
          item.fail(new Error('ingest queue stopped before the event was stored'));
        return;
      }
      writing = next && this.writeWithRetry(next);
      // Its first statement goes out before this batch's acknowledgements and listeners run.
      if (writing) await yieldToIo();
      this.settle(current, outcome);
      for (const f of outcome.findings) this.emit('finding', f);
      this.emit('stored', outcome.inserted, outcome);
      current = next;
      if (!current) {
        current = await this.prepareNext();
        writing = current && this.writeWithRetry(current);
      }
    }
  }

  private prepareNext(): Promise<Prepared | null> | null {
    return this.queue.length > 0 ? this.prepare(this.take()) : null;
  }

  /** Acknowledges a stored batch; only deliveries with a promise (`push`) are told which outcome was theirs. */
  private settle({ items, owners }: Prepared, outcome: IngestOutcome): void {
    let fresh: Set<AuditEvent> | undefined;
    let refused: Set<AuditEvent> | undefined;
    for (let i = 0; i < owners.length; i++) {
      const item = owners[i];
      item.d.ack?.();
      if (item.done === noop) continue;
      fresh ??= new Set(outcome.inserted);
      refused ??= new Set(outcome.rejectedEvents);
      const event = items[i].event;
      item.done(fresh.delete(event) ? 'stored' : refused.has(event) ? 'rejected' : 'duplicate');
    }
  }

  private async writeWithRetry({ items, rows }: Prepared): Promise<IngestOutcome | null> {
    for (let attempt = 1; ; attempt++) {
      try {
        // The rows built ahead serve the first attempt only (CopyRows.claim): a retry builds its own.
        return await this.store.ingest(items, rows);
      } catch (err) {
        this.emit('retry', err as Error, attempt);
        if (this.stopped && attempt >= 3) return null;
        await new Promise((r) => setTimeout(r, Math.min(5000, 100 * 2 ** Math.min(attempt, 6))));
      }
    }
  }

  private async rejectOne(item: { d: Delivery; done: (o: DeliveryOutcome) => void }, reason: string): Promise<void> {
    const raw =
      typeof item.d.body === 'string'
        ? item.d.body
        : item.d.body instanceof Uint8Array
          ? decoder.decode(item.d.body)
          : (JSON.stringify(item.d.body) ?? '');
    for (let attempt = 1; ; attempt++) {
      try {
        await this.store.reject(item.d.source, reason, raw.slice(0, 1_000_000));
        break;
      } catch (err) {
        this.emit('retry', err as Error, attempt);
        await new Promise((r) => setTimeout(r, Math.min(5000, 100 * 2 ** Math.min(attempt, 6))));
      }
    }
    this.emit('rejected', reason);
    item.d.ack?.();
    item.done('rejected');
  }
}

/**
 * The event and the JSON text to store (the text as received when there was one), with its UTF-8 bytes when the
 * event was parsed from exactly those bytes (what IngestItem.utf8 promises). Throws on anything not an event.
 */
function decode(body: unknown, schemaV1: boolean): IngestItem {
  if (typeof body === 'string') {
    // A lone surrogate would not survive encoding to UTF-8: such text keeps only its string form.
    const utf8 = (body as unknown as { isWellFormed(): boolean }).isWellFormed() ? Buffer.from(body) : undefined;
    return { event: parseEvent(JSON.parse(body)), raw: body, utf8, hash: undefined };
  }
  if (body instanceof Uint8Array) {
    // The sidecar's canonical bytes (the usual case): fields read and hash computed in one pass, no JSON.parse.
    // Only under the schema-v1 chain rules, whose hash that is; other rules hash the whole parsed event.
    const read = schemaV1 ? readCanonicalEvent(body) : undefined;
    if (read) return new ReceivedItem(parseEvent(read.event), body, read.hash);
    const raw = decoder.decode(body);
    // Decoding is lossless only for valid UTF-8 without a byte order mark (which the decoder drops): otherwise the
    // bytes are not the text's encoding, and the store writes the decoded text instead.
    const utf8 = body[0] !== BOM_FIRST_BYTE && isUtf8(body) ? body : undefined;
    return { event: parseEvent(JSON.parse(raw)), raw, utf8, hash: undefined };
  }
  const raw = JSON.stringify(body);
  return { event: parseEvent(body), raw, utf8: undefined, hash: undefined };
}

/** An item read from canonical bytes: its text is decoded only if something needs it (the INSERT path, a reject). */
class ReceivedItem implements IngestItem {
  #raw: string | undefined;

  constructor(
    readonly event: AuditEvent,
    readonly utf8: Uint8Array,
    public hash: string | undefined,
  ) {}

  get raw(): string {
    this.#raw ??= decoder.decode(this.utf8);
    return this.#raw;
  }
}

/**
 * The queued items, oldest first. Taking a batch off the front costs the batch, not the queue: `splice(0, n)` moved
 * every item behind it, and with many events per message the server's max_ack_pending (which counts messages) lets
 * the queue hold 100k+ events.
 */
const RELEASED = Object.freeze({}) as QueueItem;

export class ItemFifo {
  private items: QueueItem[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: QueueItem): void {
    this.items.push(item);
  }

  /** Up to `n` items from the front, in order. */
  take(n: number): QueueItem[] {
    const start = this.head;
    const end = Math.min(start + n, this.items.length);
    const out = this.items.slice(start, end);
    if (end === this.items.length) {
      this.items = [];
      this.head = 0;
    } else {
      // Taken slots let go of their items now (they would otherwise live on until the next compaction).
      this.items.fill(RELEASED, start, end);
      this.head = end;
      if (end > 4096 && end * 2 > this.items.length) {
        this.items = this.items.slice(end);
        this.head = 0;
      }
    }
    return out;
  }
}
