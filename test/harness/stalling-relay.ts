import { connect, createServer, type Server, type Socket } from 'node:net';

/** One relayed connection: the accepted socket and, once forwarding began, the one to the target. */
interface Pair {
  client: Socket;
  upstream?: Socket;
  frozen: boolean;
}

/**
 * A TCP relay that can stop forwarding on command, as a network that black-holes packets would: chosen connections
 * (by the local port of their leg to the target, which PostgreSQL reports as pg_stat_activity.client_port) stop
 * carrying bytes either way, and connections accepted meanwhile are held without reaching the target. Nothing is
 * closed or refused, so only a timer on the far side notices. thaw() lets everything flow again.
 */
export class StallingRelay {
  private server: Server | undefined;
  private readonly pairs = new Set<Pair>();
  private holdNew = false;
  /** Connections accepted since start, and how many of them were held at accept by freeze(). */
  accepted = 0;
  held = 0;
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  async start(): Promise<void> {
    this.server = createServer((client) => {
      this.accepted++;
      const pair: Pair = { client, frozen: this.holdNew };
      if (pair.frozen) this.held++;
      this.pairs.add(pair);
      client.on('error', () => undefined);
      client.on('close', () => {
        pair.upstream?.destroy();
        this.pairs.delete(pair);
      });
      if (pair.frozen) client.pause();
      else this.forward(pair);
    });
    await new Promise<void>((resolve) => this.server?.listen(0, '127.0.0.1', resolve));
    const addr = this.server.address();
    this.port = typeof addr === 'object' && addr ? addr.port : 0;
  }

  private forward(pair: Pair): void {
    const upstream = connect(this.target.port, this.target.host);
    pair.upstream = upstream;
    upstream.on('error', () => undefined);
    upstream.on('close', () => pair.client.destroy());
    upstream.on('data', (chunk: Buffer) => pair.client.write(chunk));
    pair.client.on('data', (chunk: Buffer) => upstream.write(chunk));
    pair.client.resume();
  }

  /** Local ports of the open legs to the target (pg_stat_activity.client_port of their backends). */
  upstreamPorts(): number[] {
    return [...this.pairs].flatMap((p) => (p.upstream?.localPort ? [p.upstream.localPort] : []));
  }

  /** Stops the connections whose leg to the target has one of `ports`, and holds every connection accepted from now. */
  freeze(ports: readonly number[]): void {
    this.holdNew = true;
    for (const p of this.pairs) {
      if (p.upstream?.localPort === undefined || !ports.includes(p.upstream.localPort)) continue;
      p.frozen = true;
      p.client.pause();
      p.upstream.pause();
    }
  }

  /** Forwards again: what the frozen connections sent meanwhile is delivered, held ones reach the target now. */
  thaw(): void {
    this.holdNew = false;
    for (const p of this.pairs) {
      if (!p.frozen) continue;
      p.frozen = false;
      if (p.upstream) {
        p.client.resume();
        p.upstream.resume();
      } else if (!p.client.destroyed) this.forward(p);
    }
  }

  async stop(): Promise<void> {
    for (const p of this.pairs) {
      p.client.destroy();
      p.upstream?.destroy();
    }
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
