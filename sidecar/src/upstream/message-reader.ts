import type { Socket } from 'node:net';
import { LARGE_MESSAGE_LIMIT } from '../protocol/codes.js';
import { UpstreamError } from './errors.js';

/** One whole backend message: `buf` holds type byte, length word and body. */
export interface RawMessage {
  type: number;
  buf: Buffer;
}

/**
 * Reads whole messages from a socket with promises, for the short startup/authentication exchange only (the relay
 * uses the zero-copy Framer). `detach()` hands back whatever arrived after the last message read.
 */
export class MessageReader {
  private buf: Buffer = Buffer.alloc(0);
  private waiter: { resolve: (m: RawMessage) => void; reject: (e: Error) => void } | null = null;
  private byteWaiter: { resolve: (b: number) => void; reject: (e: Error) => void } | null = null;
  private error: Error | null = null;
  private readonly socket: Socket;
  private readonly what: string;
  private readonly onData = (chunk: Buffer) => {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    this.pump();
  };
  private readonly onEnd = (err?: Error) => {
    this.error ??= new UpstreamError('PGW_UPSTREAM_CLOSED', `${this.what} closed the connection unexpectedly`, {
      cause: err,
    });
    this.pump();
  };

  constructor(socket: Socket, what: string) {
    this.socket = socket;
    this.what = what;
    socket.on('data', this.onData);
    socket.on('error', this.onEnd);
    socket.on('close', this.onEnd);
  }

  /** Puts bytes back in front (what a previous reader left over). */
  unshift(bytes: Buffer): void {
    this.buf = this.buf.length === 0 ? bytes : Buffer.concat([bytes, this.buf]);
  }

  next(): Promise<RawMessage> {
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
      this.pump();
    });
  }

  /** Reads a single byte (the answer to SSLRequest). */
  byte(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.byteWaiter = { resolve, reject };
      this.pump();
    });
  }

  detach(): Buffer {
    this.socket.off('data', this.onData);
    this.socket.off('error', this.onEnd);
    this.socket.off('close', this.onEnd);
    return this.buf;
  }

  private pump(): void {
    const bw = this.byteWaiter;
    if (bw) {
      if (this.buf.length > 0) {
        const b = this.buf[0];
        this.buf = this.buf.subarray(1);
        this.byteWaiter = null;
        bw.resolve(b);
      } else if (this.error) {
        this.byteWaiter = null;
        bw.reject(this.error);
      }
      return;
    }
    const w = this.waiter;
    if (!w) return;
    if (this.buf.length >= 5) {
      const len = this.buf.readInt32BE(1);
      if (len < 4 || len > LARGE_MESSAGE_LIMIT) {
        this.waiter = null;
        // Text where a message header belongs: something else answers on that address (an HTTP server, a proxy).
        const head = this.buf.subarray(0, 12);
        const text = head.every((c) => c >= 0x20 && c < 0x7f)
          ? ` (it began ${JSON.stringify(head.toString('latin1'))})`
          : '';
        w.reject(
          new UpstreamError(
            'PGW_UPSTREAM_PROTOCOL',
            `${this.what} sent an invalid message length${text}: is it a PostgreSQL server?`,
          ),
        );
        return;
      }
      if (this.buf.length >= len + 1) {
        const msg = this.buf.subarray(0, len + 1);
        this.buf = this.buf.subarray(len + 1);
        this.waiter = null;
        w.resolve({ type: msg[0], buf: msg });
        return;
      }
    }
    if (this.error) {
      this.waiter = null;
      w.reject(this.error);
    }
  }
}
