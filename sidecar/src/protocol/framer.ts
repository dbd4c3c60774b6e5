import { LARGE_MESSAGE_LIMIT, MAX_STARTUP_PACKET } from './codes.js';
import { ProtocolError } from './errors.js';

/**
 * A streaming framer for PostgreSQL protocol messages in either direction. Messages are `type byte + int32 length
 * (counting itself) + body`; before the StartupMessage, packets are `int32 length + int32 code + body` with no type
 * byte (https://www.postgresql.org/docs/current/protocol-overview.html#PROTOCOL-MESSAGE-CONCEPTS).
 *
 * The framer never copies bytes it only forwards: untouched messages leave as spans of the chunk they arrived in,
 * consecutive untouched messages as ONE span, and a message larger than a chunk streams through piece by piece (so a
 * 1 GB CopyData or Bind is never held whole). Only messages the handler asks for whole (`WHOLE`) are assembled into
 * one buffer when they straddle chunks. The handler sees every header, so it can count rows or track the pipeline.
 */

/** Forward the message's bytes untouched as they arrive. */
export const PASS = 0;
/** Deliver the message whole to `handler.whole`. */
export const WHOLE = 1;
/** Consume the message and forward nothing. */
export const DROP = 2;
/** The handler needs more of this message in one buffer before it can decide (at most what `avail` can grow to). */
export const NEED_MORE = 3;
/**
 * Forward the message as it arrives, as PASS does, and show its pieces to `handler.scan` first, from its type byte
 * on, until that has read what it needs (a Bind's names, which may be longer than any buffer worth waiting for).
 */
export const SCAN = 4;

export interface FramerHandler {
  /** Largest allowed length word for a message type; a negative value means the type is invalid here. */
  limit(type: number): number;
  /**
   * Decides a message's fate from its header. `buf[pos, pos + avail)` holds the first `avail` bytes of the message
   * (type byte included); return NEED_MORE to be asked again once more of it is buffered.
   */
  header(type: number, length: number, buf: Buffer, pos: number, avail: number): number;
  /**
   * A whole message, type byte included, in `buf[start, end)`. Return true to forward its original bytes, false to
   * forward nothing, or a Buffer to forward in its place. The bytes may be a view of a read buffer that the next read
   * overwrites: a handler that keeps them past the call must copy them or suspend the framer (holdsInput).
   */
  whole(type: number, buf: Buffer, start: number, end: number): boolean | Buffer;
  /** Bytes to forward, in order. */
  pass(buf: Buffer, start: number, end: number): void;
  /**
   * The next piece `buf[start, end)` of a message answered SCAN (the first starts at its type byte); `last`: the
   * message ends with it. Return true once nothing more of the message needs to be seen.
   */
  scan?(buf: Buffer, start: number, end: number, last: boolean): boolean;
  /** A message answered DROP has been consumed completely. */
  dropped?(type: number): void;
  /** A startup-phase packet, length word included, while `framer.startup` is true. */
  startup?(buf: Buffer, start: number, end: number): void;
}

export class Framer {
  /** True while the next packet is an untyped startup packet (client side, before the StartupMessage). */
  startup: boolean;
  /**
   * Messages of this type are passed without asking the handler, only counted (see `takeCounted`); -1 = none.
   * Lets a handler skip its per-message call for runs of DataRows it does not need to see one by one.
   */
  countType = -1;
  private counted = 0;
  private countedBytes = 0;
  private handler: FramerHandler;
  private stash: Buffer | null = null;
  private collect: Buffer | null = null;
  private collectPos = 0;
  private collectType = 0;
  /** When the message being assembled last grew (performance.now()): a client that stalls mid-statement shows here. */
  collectAt = 0;
  private dropType = 0;
  private passLeft = 0;
  /** The message being passed was answered SCAN and the handler still reads it. */
  private scanning = false;
  private dropLeft = 0;
  private suspended = false;
  private backlog: Buffer[] = [];
  private failed = false;
  private runBuf: Buffer | null = null;
  private runStart = 0;
  private runEnd = 0;

  constructor(handler: FramerHandler, opts: { startup?: boolean } = {}) {
    this.handler = handler;
    this.startup = opts.startup ?? false;
  }

  /** Switches to another handler (startup → relay); framing state carries over. */
  setHandler(handler: FramerHandler): void {
    this.handler = handler;
  }

  /** Feeds the next chunk. Throws ProtocolError on a malformed stream (the framer then ignores further input). */
  push(chunk: Buffer): void {
    if (this.failed) return;
    if (this.suspended) {
      this.backlog.push(chunk);
      return;
    }
    this.run(chunk);
  }

  /** Stops delivering after the current message (e.g. a verdict is pending); input is queued until `resume`. */
  suspend(): void {
    this.suspended = true;
  }

  get isSuspended(): boolean {
    return this.suspended;
  }

  /** Continues with queued input. Throws like `push`. */
  resume(): void {
    if (!this.suspended || this.failed) return;
    this.suspended = false;
    while (!this.suspended && this.backlog.length > 0) this.run(this.backlog.shift()!);
  }

  /** Messages (and their bytes) passed under `countType` since the last call. */
  takeCounted(): [number, number] {
    const out: [number, number] = [this.counted, this.countedBytes];
    this.counted = 0;
    this.countedBytes = 0;
    return out;
  }

  /**
   * True while the framer holds on to input it was pushed: suspended (the handler may keep the message it stopped
   * at) or with queued chunks. A caller that reuses its read buffer must not overwrite it then (socket-reader.ts).
   */
  holdsInput(): boolean {
    return this.suspended || this.backlog.length > 0;
  }

  /** Bytes queued while suspended (for backpressure decisions). */
  backlogBytes(): number {
    let n = 0;
    for (const b of this.backlog) n += b.length;
    return n;
  }

  private run(chunk: Buffer): void {
    let buf = chunk;
    if (this.stash !== null) {
      buf = Buffer.concat([this.stash, chunk]);
      this.stash = null;
    }
    try {
      this.process(buf);
    } catch (err) {
      this.failed = true;
      this.runBuf = null;
      throw err;
    }
    this.flush();
  }

  /**
   * Hands the run of passed messages collected so far to the handler: a handler that writes something of its own in
   * the middle of a chunk calls this first, so that it lands after them.
   */
  flush(): void {
    if (this.runBuf !== null) {
      const b = this.runBuf;
      this.runBuf = null;
      this.handler.pass(b, this.runStart, this.runEnd);
    }
  }

  private extendRun(buf: Buffer, start: number, end: number): void {
    if (this.runBuf === buf && this.runEnd === start) {
      this.runEnd = end;
      return;
    }
    this.flush();
    this.runBuf = buf;
    this.runStart = start;
    this.runEnd = end;
  }

  /** Forwards or replaces a whole message per the handler's answer; returns false when the framer got suspended. */
  private deliver(type: number, buf: Buffer, start: number, end: number): void {
    const out = this.handler.whole(type, buf, start, end);
    if (out === true) this.extendRun(buf, start, end);
    else if (out !== false) {
      this.flush();
      this.handler.pass(out, 0, out.length);
    }
  }

  private suspendWith(buf: Buffer, i: number): boolean {
    if (!this.suspended) return false;
    this.flush();
    if (i < buf.length) this.backlog.unshift(buf.subarray(i));
    return true;
  }

  private process(buf: Buffer): void {
    const n = buf.length;
    let i = 0;
    while (i < n) {
      if (this.passLeft > 0) {
        const take = Math.min(this.passLeft, n - i);
        if (this.scanning && this.handler.scan!(buf, i, i + take, take === this.passLeft)) this.scanning = false;
        this.extendRun(buf, i, i + take);
        this.passLeft -= take;
        i += take;
        continue;
      }
      if (this.dropLeft > 0) {
        const take = Math.min(this.dropLeft, n - i);
        this.dropLeft -= take;
        i += take;
        if (this.dropLeft === 0 && this.handler.dropped) {
          this.flush();
          this.handler.dropped(this.dropType);
          if (this.suspendWith(buf, i)) return;
        }
        continue;
      }
      if (this.collect !== null) {
        const c = this.collect;
        const take = Math.min(c.length - this.collectPos, n - i);
        buf.copy(c, this.collectPos, i, i + take);
        this.collectPos += take;
        this.collectAt = performance.now();
        i += take;
        if (this.collectPos < c.length) continue;
        this.collect = null;
        if (this.collectType < 0) this.deliverStartup(c, 0, c.length);
        else this.deliver(this.collectType, c, 0, c.length);
        if (this.suspendWith(buf, i)) return;
        continue;
      }
      if (this.startup) {
        if (n - i < 4) {
          this.keep(buf, i);
          return;
        }
        const len = buf.readInt32BE(i);
        if (len < 8 || len > MAX_STARTUP_PACKET) {
          throw new ProtocolError('PGW_PROTO_STARTUP_LENGTH', `invalid length of startup packet: ${len}`);
        }
        if (n - i >= len) {
          this.deliverStartup(buf, i, i + len);
          i += len;
          if (this.suspendWith(buf, i)) return;
        } else {
          this.startCollect(-1, len, buf, i);
          i = n;
        }
        continue;
      }
      if (n - i < 5) {
        this.keep(buf, i);
        return;
      }
      const type = buf[i];
      const len = buf.readInt32BE(i + 1);
      if (type === this.countType && len >= 4 && len <= LARGE_MESSAGE_LIMIT) {
        // Counted pass: no handler call per message (a result's DataRows when nothing inspects them).
        this.counted++;
        this.countedBytes += len + 1;
        this.passLeft = len + 1;
        continue;
      }
      const limit = this.handler.limit(type);
      if (limit < 0) {
        throw new ProtocolError(
          'PGW_PROTO_MESSAGE_TYPE',
          `invalid message type 0x${type.toString(16).padStart(2, '0')}`,
        );
      }
      if (len < 4 || len > limit) {
        throw new ProtocolError(
          'PGW_PROTO_MESSAGE_LENGTH',
          `invalid message length ${len} for type "${String.fromCharCode(type)}"`,
        );
      }
      const total = len + 1;
      const avail = Math.min(total, n - i);
      const d = this.handler.header(type, len, buf, i, avail);
      if (d === PASS) {
        this.passLeft = total;
      } else if (d === SCAN) {
        this.passLeft = total;
        this.scanning = true;
      } else if (d === DROP) {
        this.dropLeft = total;
        this.dropType = type;
      } else if (d === NEED_MORE) {
        if (avail === total)
          throw new ProtocolError('PGW_PROTO_MESSAGE_MALFORMED', 'message handler wanted more than the message');
        this.keep(buf, i);
        return;
      } else if (avail === total) {
        this.deliver(type, buf, i, i + total);
        i += total;
        if (this.suspendWith(buf, i)) return;
      } else {
        this.startCollect(type, total, buf, i);
        i = n;
      }
    }
  }

  private deliverStartup(buf: Buffer, start: number, end: number): void {
    this.flush();
    this.startup = false;
    if (!this.handler.startup) throw new ProtocolError('PGW_PROTO_STARTUP_MALFORMED', 'unexpected startup packet');
    this.handler.startup(buf, start, end);
  }

  private startCollect(type: number, total: number, buf: Buffer, i: number): void {
    this.flush();
    const c = Buffer.allocUnsafe(total);
    buf.copy(c, 0, i);
    this.collect = c;
    this.collectPos = buf.length - i;
    this.collectType = type;
    this.collectAt = performance.now();
  }

  /** Bytes of the message being assembled so far, and its size (0 and 0 when none is). */
  collecting(): [number, number] {
    return this.collect === null ? [0, 0] : [this.collectPos, this.collect.length];
  }

  /** The reader was paused by its owner, not by the peer: a message being assembled counts as growing from now. */
  touch(): void {
    if (this.collect !== null) this.collectAt = performance.now();
  }

  /** Keeps an incomplete header (or a header the handler wants more of) for the next chunk. */
  private keep(buf: Buffer, i: number): void {
    this.flush();
    this.stash = Buffer.from(buf.subarray(i));
  }
}
