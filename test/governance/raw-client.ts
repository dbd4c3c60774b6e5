import { connect, type Socket } from 'node:net';
import { parse, serialize } from 'pg-protocol';

type BackendMessage = { name: string; [k: string]: any };

/**
 * A minimal frontend speaking the wire protocol directly, for what `pg` cannot send: FunctionCall, re-Parse of a
 * name, pipelines without Sync. https://www.postgresql.org/docs/current/protocol-message-formats.html
 */
export class RawClient {
  private readonly inbox: BackendMessage[] = [];
  private waiters: (() => void)[] = [];

  private constructor(private readonly socket: Socket) {
    void parse(socket, (msg) => {
      this.inbox.push(msg as unknown as BackendMessage);
      for (const w of this.waiters.splice(0)) w();
    });
  }

  static async connect(
    port: number,
    params: Record<string, string> = { user: 'agent', database: 'app' },
    password?: string,
  ): Promise<RawClient> {
    const socket = connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const c = new RawClient(socket);
    socket.write(serialize.startup(params));
    const first = await c.next();
    if (first.name === 'authenticationCleartextPassword') socket.write(serialize.password(password ?? ''));
    else c.inbox.unshift(first);
    await c.until('readyForQuery');
    return c;
  }

  send(...bufs: Buffer[]): void {
    this.socket.write(Buffer.concat(bufs));
  }

  /** FunctionCall ('F'): function OID, no arguments, text result. */
  static functionCall(oid: number): Buffer {
    const b = Buffer.alloc(1 + 4 + 4 + 2 + 2 + 2);
    b.write('F', 0);
    b.writeInt32BE(b.length - 1, 1);
    b.writeInt32BE(oid, 5);
    return b; // arg format count 0, arg count 0, result format 0 (zero-filled)
  }

  async next(timeoutMs = 5000): Promise<BackendMessage> {
    const t0 = Date.now();
    while (this.inbox.length === 0) {
      if (Date.now() - t0 > timeoutMs) throw new Error('no message from the sidecar');
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 50);
      });
    }
    return this.inbox.shift()!;
  }

  /** Reads messages up to and including the first named `name`; returns them all. */
  async until(name: string): Promise<BackendMessage[]> {
    const got: BackendMessage[] = [];
    for (;;) {
      const m = await this.next();
      got.push(m);
      if (m.name === name) return got;
    }
  }

  end(): void {
    this.socket.end(serialize.end());
  }
}

export { serialize };
