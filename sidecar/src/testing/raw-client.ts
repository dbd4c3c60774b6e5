import { connect, type Socket } from 'node:net';
import { decodeErrorFields } from '../protocol/backend-messages.js';
import { startupMessage } from '../protocol/frontend-messages.js';
import { MessageReader, type RawMessage } from '../upstream/message-reader.js';

/** A bare protocol client for tests that need to see every message (client libraries hide some). */
export class RawClient {
  readonly socket: Socket;
  private readonly reader: MessageReader;

  private constructor(socket: Socket) {
    this.socket = socket;
    this.reader = new MessageReader(socket, 'sidecar');
  }

  /** Wraps a connected socket, e.g. an authenticated session straight to PostgreSQL (upstream/connect.ts). */
  static fromSocket(socket: Socket): RawClient {
    return new RawClient(socket);
  }

  static async open(port: number): Promise<RawClient> {
    const socket = connect({ host: '127.0.0.1', port });
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    return new RawClient(socket);
  }

  /** Opens, sends a StartupMessage and reads up to the first ReadyForQuery (or the error). */
  static async startup(
    port: number,
    params: Record<string, string> = { user: 'agent', database: 'app' },
  ): Promise<{ client: RawClient; messages: RawMessage[] }> {
    const client = await RawClient.open(port);
    client.send(startupMessage(params));
    return { client, messages: await client.until(0x5a) };
  }

  send(...bufs: Buffer[]): void {
    this.socket.write(Buffer.concat(bufs));
  }

  /** One byte (the answer to SSLRequest/GSSENCRequest). */
  byte(): Promise<number> {
    return this.reader.byte();
  }

  next(): Promise<RawMessage> {
    return this.reader.next();
  }

  /** Reads messages up to and including the first of `type` (or an ErrorResponse when `stopOnError`). */
  async until(type: number, stopOnFatal = true): Promise<RawMessage[]> {
    const out: RawMessage[] = [];
    for (;;) {
      const m = await this.reader.next();
      out.push(m);
      if (m.type === type) return out;
      if (stopOnFatal && m.type === 0x45 && decodeErrorFields(m.buf, 0, m.buf.length).get('S') === 'FATAL') return out;
    }
  }

  /** Reads `n` ReadyForQuery messages' worth of responses. */
  async untilReady(n = 1): Promise<RawMessage[]> {
    const out: RawMessage[] = [];
    for (let i = 0; i < n; i++) out.push(...(await this.until(0x5a)));
    return out;
  }

  /** Resolves when the server closes the connection. */
  closed(): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.destroyed || this.socket.readableEnded) resolve();
      else this.socket.once('close', () => resolve());
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Letters of the message types, e.g. "1 2 T D C Z", for compact assertions. */
export function types(messages: RawMessage[]): string {
  return messages.map((m) => String.fromCharCode(m.type)).join(' ');
}

export function errorOf(m: RawMessage): Map<string, string> {
  return decodeErrorFields(m.buf, 0, m.buf.length);
}

/** A frontend message of `type` with `parts` as its body (strings given as bytes, e.g. in another encoding). */
export function typed(type: string, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  const head = Buffer.alloc(5);
  head[0] = type.charCodeAt(0);
  head.writeInt32BE(4 + body.length, 1);
  return Buffer.concat([head, body]);
}
const cstr = (s: string) => Buffer.from(`${s}\0`, 'utf8');
const i16 = (n: number) => {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n, 0);
  return b;
};
const i32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n, 0);
  return b;
};

/** Frontend message builders for tests (text parameters, text results). */
export const msg = {
  parse: (name: string, sql: string) => typed('P', cstr(name), cstr(sql), i16(0)),
  bind: (portal: string, statement: string, params: Array<string | null> = []) =>
    typed(
      'B',
      cstr(portal),
      cstr(statement),
      i16(0),
      i16(params.length),
      ...params.map((p) => (p === null ? i32(-1) : Buffer.concat([i32(Buffer.byteLength(p)), Buffer.from(p)]))),
      i16(0),
    ),
  describe: (kind: 'S' | 'P', name: string) => typed('D', Buffer.from(kind), cstr(name)),
  execute: (portal: string, maxRows = 0) => typed('E', cstr(portal), i32(maxRows)),
  close: (kind: 'S' | 'P', name: string) => typed('C', Buffer.from(kind), cstr(name)),
  sync: () => typed('S'),
  flush: () => typed('H'),
  query: (sql: string) => typed('Q', cstr(sql)),
  copyData: (data: Buffer | string) => typed('d', Buffer.from(data)),
  copyDone: () => typed('c'),
  copyFail: (why: string) => typed('f', cstr(why)),
  functionCall: (oid: number, args: string[]) =>
    typed(
      'F',
      i32(oid),
      i16(0),
      i16(args.length),
      ...args.map((a) => Buffer.concat([i32(Buffer.byteLength(a)), Buffer.from(a)])),
      i16(0),
    ),
  terminate: () => typed('X'),
};

/** Text columns of a DataRow message. */
export function rowOf(m: RawMessage): Array<string | null> {
  const n = m.buf.readInt16BE(5);
  const out: Array<string | null> = [];
  let pos = 7;
  for (let i = 0; i < n; i++) {
    const len = m.buf.readInt32BE(pos);
    pos += 4;
    out.push(len < 0 ? null : m.buf.toString('utf8', pos, pos + len));
    if (len > 0) pos += len;
  }
  return out;
}

/** CommandComplete tag. */
export function tagOf(m: RawMessage): string {
  return m.buf.toString('utf8', 5, m.buf.length - 1);
}
