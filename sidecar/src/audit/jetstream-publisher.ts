import { createInbox, headers, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { AuditError } from './errors.js';

export interface Publishable {
  subject: string;
  msgID: string;
  data: string;
  /** The message the item went out in last; set by the publisher so a re-send repeats it exactly. */
  batch?: Batch<this>;
}

/** Events of one subject sent as one JetStream message (see `messageOf`). */
export interface Batch<T> {
  subject: string;
  msgID: string;
  items: T[];
  /** The publisher epoch it was last sent in: members handed over again in that epoch are already on the way. */
  epoch: number;
}

export interface BatchLimits {
  /** Events per message at most. 1 turns batching off. */
  maxEvents: number;
  /** UTF-16 units of event JSON per message at most (≤ 3 bytes each: 256 Ki stays well under max_payload 1 MiB). */
  maxChars: number;
}

export const DEFAULT_BATCH_LIMITS: BatchLimits = { maxEvents: 64, maxChars: 256 * 1024 };

/** NATS's default max_payload, which the server's INFO may lower. */
const DEFAULT_MAX_PAYLOAD = 1024 * 1024;
/** Bytes kept free for the headers (Nats-Msg-Id of a session id and hash, the batch count). */
const HEADER_ROOM = 1024;

/** Marks a message holding more than one event; its value is the event count (= the body's line count). */
export const BATCH_HEADER = 'Pgwarden-Batch';

/**
 * The message for a batch: one event alone is sent exactly as it always was (its JSON, its own id), so
 * collectors that predate batching still read it; several are their JSON lines joined by '\n' (JSON.stringify
 * never writes a raw newline) under the id `<first event's id>+<count>`. A batch is formed once and re-sent as
 * it is, so that id repeats and JetStream's duplicate window drops a re-send that had in fact been stored.
 */
export function messageOf(b: Batch<Publishable>): { msgID: string; data: string; count: number } {
  if (b.items.length === 1) return { msgID: b.msgID, data: b.items[0].data, count: 1 };
  let data = b.items[0].data;
  for (let i = 1; i < b.items.length; i++) data += `\n${b.items[i].data}`;
  return { msgID: b.msgID, data, count: b.items.length };
}

/**
 * Pipelined JetStream publishing with acks, without one request (timer, promise, subscription lookup) per
 * message: each publish carries a reply subject on one wildcard subscription of ours, and JetStream answers it
 * with a PubAck or an error (https://docs.nats.io/reference/reference-protocols/nats_api_reference). The header
 * Nats-Msg-Id lets the stream drop re-sends within its duplicate window. `forget()` starts a new epoch: answers
 * to older publishes are ignored (their items get re-sent, and deduplicate).
 *
 * Publishes are held for `lingerMs` (0: until the event loop's check phase) and then sent together, the held
 * events of one subject as few messages as the batch limits allow: per message, nats-server stores, indexes and
 * acknowledges, and the client and server each write and wake up; per event that was most of the audit cost.
 * Holding never waits for more events than already arrived within the linger. A few milliseconds of delay on
 * the way to the stream costs the proxied statements nothing (they never wait for the ack).
 */
export class JetStreamPublisher<T extends Publishable> {
  private nc?: NatsConnection;
  private sub?: Subscription;
  private prefix = '';
  private epoch = 0;
  private nextToken = 0;
  private readonly awaiting = new Map<number, { batch: Batch<T>; sentAt: number }>();
  private inflightItems = 0;
  /** Items handed over but not yet sent (sent by `flush` when the linger ends). */
  private held: T[] = [];
  private flushTimer?: NodeJS.Immediate | NodeJS.Timeout;
  private sweepTimer?: NodeJS.Timeout;
  private readonly limits: BatchLimits;

  constructor(
    private readonly timeoutMs: number,
    /** The items of one message, in order, all stored by JetStream. */
    private readonly acked: (items: T[]) => void,
    private readonly failed: (err: unknown) => void,
    private readonly lingerMs = 0,
    limits: Partial<BatchLimits> = {},
    /** The items of one event that the server's max_payload can never take: the caller drops them. */
    private readonly tooLarge: (items: T[]) => void = () => {},
  ) {
    this.limits = { ...DEFAULT_BATCH_LIMITS, ...limits };
  }

  /** Items handed over and not yet acknowledged (a re-sent batch counts whole from its first member on). */
  get inflight(): number {
    return this.inflightItems;
  }

  /** Uses `nc` from now on; the ack subscription survives the client's own reconnects. */
  attach(nc: NatsConnection): void {
    this.nc = nc;
    if (!this.sub || this.sub.isClosed()) {
      this.prefix = createInbox();
      this.sub = nc.subscribe(`${this.prefix}.>`, {
        callback: (err, msg) => {
          if (!err) this.onReply(msg);
        },
      });
    }
    this.sweepTimer ??= setInterval(() => this.sweep(), Math.min(250, this.timeoutMs / 4));
    this.sweepTimer.unref();
  }

  /**
   * Counts as in flight at once (for the caller's bound); reaches the socket with the others held this turn.
   * An item sent before (in an epoch since forgotten) goes again in the same message as then, whole.
   */
  publish(item: T): void {
    const b = item.batch;
    if (b) {
      if (b.epoch === this.epoch) return;
      b.epoch = this.epoch;
      this.inflightItems += b.items.length;
    } else {
      this.inflightItems++;
    }
    this.held.push(item);
    this.flushTimer ??= this.lingerMs > 0 ? setTimeout(this.flush, this.lingerMs) : setImmediate(this.flush);
  }

  private readonly flush = (): void => {
    this.flushTimer = undefined;
    const items = this.held;
    this.held = [];
    for (const b of this.group(items)) {
      if (!this.send(b)) return;
    }
  };

  /** Held items as messages, in the order of their first item; new items join the open batch of their subject. */
  private group(items: T[]): Batch<T>[] {
    const out: Batch<T>[] = [];
    const fresh: Batch<T>[] = [];
    const open = new Map<string, { b: Batch<T>; chars: number }>();
    const { maxEvents } = this.limits;
    // A UTF-16 unit is at most 3 bytes of UTF-8: a batch within maxChars always fits the server's max_payload.
    const maxChars = Math.min(this.limits.maxChars, Math.floor((this.maxPayload() - HEADER_ROOM) / 3));
    for (const item of items) {
      if (item.batch) {
        out.push(item.batch);
        continue;
      }
      const o = open.get(item.subject);
      if (o && o.b.items.length < maxEvents && o.chars + item.data.length <= maxChars) {
        o.b.items.push(item);
        o.chars += item.data.length + 1;
        item.batch = o.b;
        continue;
      }
      const b: Batch<T> = { subject: item.subject, msgID: item.msgID, items: [item], epoch: this.epoch };
      item.batch = b;
      open.set(item.subject, { b, chars: item.data.length + 1 });
      out.push(b);
      fresh.push(b);
    }
    for (const b of fresh) if (b.items.length > 1) b.msgID += `+${b.items.length}`;
    return out;
  }

  private send(b: Batch<T>): boolean {
    const m = messageOf(b);
    const data = Buffer.from(m.data);
    // The client refuses a message over the server's max_payload (a server may be configured below NATS's 1 MiB
    // default): re-sent as it is, such a message would block the ordered log behind it for good.
    if (data.length + HEADER_ROOM > this.maxPayload()) {
      if (b.items.length === 1) {
        this.inflightItems -= 1;
        this.tooLarge(b.items);
        return true;
      }
      // Formed under a larger max_payload (the server changed since): regrouped when the caller resends.
      for (const item of b.items) item.batch = undefined;
      this.failed(new AuditError('AUDIT_NATS', `audit batch of ${data.length} bytes is over the server's max_payload`));
      return false;
    }
    const token = this.nextToken++;
    this.awaiting.set(token, { batch: b, sentAt: performance.now() });
    const h = headers();
    h.set('Nats-Msg-Id', m.msgID);
    if (m.count > 1) h.set(BATCH_HEADER, String(m.count));
    try {
      this.nc!.publish(b.subject, data, { reply: `${this.prefix}.${this.epoch}.${token}`, headers: h });
      return true;
    } catch (err) {
      // The rest are still held: failing forgets them all, and the caller resends in order.
      this.awaiting.delete(token);
      this.failed(err);
      return false;
    }
  }

  /** The connected server's max_payload (headers included); NATS's default before the first INFO. */
  private maxPayload(): number {
    return this.nc?.info?.max_payload ?? DEFAULT_MAX_PAYLOAD;
  }

  /** Forget everything in flight: later answers to it are ignored. */
  forget(): void {
    this.epoch++;
    this.awaiting.clear();
    this.inflightItems = 0;
    this.held = [];
  }

  close(): void {
    clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
    if (this.lingerMs > 0) clearTimeout(this.flushTimer as NodeJS.Timeout | undefined);
    else clearImmediate(this.flushTimer as NodeJS.Immediate | undefined);
    this.flushTimer = undefined;
    this.held = [];
  }

  private onReply(msg: Msg): void {
    const tail = msg.subject.slice(this.prefix.length + 1);
    const dot = tail.indexOf('.');
    if (Number(tail.slice(0, dot)) !== this.epoch) return;
    const token = Number(tail.slice(dot + 1));
    const pending = this.awaiting.get(token);
    if (!pending) return;
    this.awaiting.delete(token);
    const body = msg.data.length > 0 ? msg.string() : '';
    // A 503 status (no responders: stream missing) arrives with no body; API errors as {"error":{...}}.
    if (msg.headers?.hasError || body === '' || body.includes('"error"')) {
      const why = `${msg.headers?.code ?? ''} ${body.slice(0, 200)}`;
      this.failed(new AuditError('AUDIT_NATS', `JetStream refused an audit event: ${why}`));
      return;
    }
    this.inflightItems -= pending.batch.items.length;
    this.acked(pending.batch.items);
  }

  /** A publish unanswered after timeoutMs fails (the caller forgets the epoch and retries in order). */
  private sweep(): void {
    const limit = performance.now() - this.timeoutMs;
    // Map order is send order: only the oldest needs a look.
    for (const p of this.awaiting.values()) {
      if (p.sentAt < limit) this.failed(new AuditError('AUDIT_NATS', 'JetStream ack timed out'));
      break;
    }
  }
}
