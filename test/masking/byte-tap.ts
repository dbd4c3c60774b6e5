import { connect, createServer, type Server, type Socket } from 'node:net';

/**
 * A TCP relay between a client and the sidecar that keeps every byte the sidecar sends to the client, so a test
 * can assert over exactly what a client received (all message types, all formats), not over a driver's view.
 */
export class ByteTap {
  private server: Server | undefined;
  private received: Buffer[] = [];
  private readonly sockets = new Set<Socket>();
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  async start(): Promise<void> {
    this.server = createServer((client) => {
      const upstream = connect(this.target.port, this.target.host);
      this.sockets.add(client).add(upstream);
      upstream.on('data', (chunk: Buffer) => {
        this.received.push(Buffer.from(chunk));
        client.write(chunk);
      });
      client.on('data', (chunk: Buffer) => upstream.write(chunk));
      const end = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('close', end).on('error', end);
      upstream.on('close', end).on('error', end);
    });
    await new Promise<void>((resolve) => this.server?.listen(0, '127.0.0.1', resolve));
    const addr = this.server.address();
    this.port = typeof addr === 'object' && addr ? addr.port : 0;
  }

  /** Everything received since the last take(). */
  take(): Buffer {
    const out = Buffer.concat(this.received);
    this.received = [];
    return out;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

/** The planted value and its simple transforms an extraction might produce. */
export function leakVariants(value: string): string[] {
  const b = Buffer.from(value, 'utf8');
  return [
    value,
    value.toUpperCase(),
    value.toLowerCase(),
    [...value].reverse().join(''),
    b.toString('base64').replace(/=+$/, ''),
    b.toString('hex'),
    b.toString('hex').toUpperCase(),
    // Its digits alone (an SSN or card number cast to a number: `replace(ssn, '-', '')::int`), when there are enough
    // of them not to turn up by chance.
    ...(value.replace(/\D/g, '').length >= 8 ? [value.replace(/\D/g, '')] : []),
  ];
}

/** The planted values (or transforms of them) found in `bytes`. */
export function findLeaks(bytes: Buffer, planted: readonly string[]): string[] {
  const hay = bytes.toString('latin1');
  const hits: string[] = [];
  for (const p of planted) {
    for (const v of leakVariants(p)) {
      if (hay.includes(Buffer.from(v, 'utf8').toString('latin1'))) hits.push(`${p} as ${JSON.stringify(v)}`);
    }
  }
  return hits;
}
