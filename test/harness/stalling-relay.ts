import { connect, createServer, type Server, type Socket } from 'node:net';

/** One relayed connection: the accepted socket and, once forwarding began, the one to the target. */
interface Pair {
  client: Socket;
  upstream?: Socket;
  frozen: boolean;
  /** Each chunk is delivered this much later, either way (slow()); in order, whatever the delay was when sent. */
  delayMs: number;
  /** When the last delayed chunk of each direction is due (to keep later chunks behind it). */
  due: { up: number; down: number };
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
      const pair: Pair = { client, frozen: this.holdNew, delayMs: 0, due: { up: 0, down: 0 } };
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
    upstream.on('data', (chunk: Buffer) => this.deliver(pair, 'down', chunk));
    pair.client.on('data', (chunk: Buffer) => this.deliver(pair, 'up', chunk));
    pair.client.resume();
  }

  private deliver(pair: Pair, way: 'up' | 'down', chunk: Buffer): void {
    const to = way === 'up' ? pair.upstream : pair.client;
    const now = Date.now();
    if (pair.delayMs === 0 && pair.due[way] <= now) {
      to?.write(chunk);
      return;
    }
    const at = Math.max(now + pair.delayMs, pair.due[way]);
    pair.due[way] = at;
    setTimeout(() => {
      if (!to?.destroyed) to?.write(chunk);
    }, at - now);
  }

  /**
   * Delays every chunk of the connections whose leg to the target has one of `ports` by `ms`, each way (a query's
   * round trip then takes 2 × ms longer); 0 ends it. A slow network or server rather than a dead one: everything
   * arrives, late.
   */
  slow(ports: readonly number[], ms: number): void {
    for (const p of this.pairs)
      if (p.upstream?.localPort !== undefined && ports.includes(p.upstream.localPort)) p.delayMs = ms;
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
