import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer, connect as tlsConnect } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { makeCertificates } from '../../../test/harness/index.js';
import { readChunks } from './socket-reader.js';

/** A connected pair of plain TCP sockets on loopback: `accepted` came from a net.Server, as the proxy's clients do. */
async function socketPair(): Promise<{ accepted: Socket; dialled: Socket; server: Server }> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  const acceptedP = once(server, 'connection');
  const dialled = new Socket();
  dialled.connect(port, '127.0.0.1');
  await once(dialled, 'connect');
  const [accepted] = (await acceptedP) as [Socket];
  return { accepted, dialled, server };
}

const cleanup: (() => void)[] = [];

async function pairClosedAfterTest(): Promise<{ accepted: Socket; dialled: Socket }> {
  const { accepted, dialled, server } = await socketPair();
  cleanup.push(() => {
    accepted.destroy();
    dialled.destroy();
    server.close();
  });
  return { accepted, dialled };
}
afterEach(() => {
  for (const f of cleanup.splice(0)) f();
});

/** Writes `parts` one after the other, each after the reader has seen the previous one (so reads follow writes). */
async function sendAndCollect(
  reader: Socket,
  writer: Socket,
  parts: Buffer[],
): Promise<{ chunks: Buffer[]; mode: string }> {
  const chunks: Buffer[] = [];
  let seen = 0;
  let wake: (() => void) | undefined;
  const mode = readChunks(reader, (c) => {
    chunks.push(c);
    seen += c.length;
    wake?.();
  });
  let sent = 0;
  for (const p of parts) {
    writer.write(p);
    sent += p.length;
    while (seen < sent) await new Promise<void>((r) => (wake = r));
  }
  return { chunks, mode };
}

describe('readChunks', () => {
  it('reads an accepted socket and a dialled one through a reused buffer on this Node', async () => {
    const { accepted, dialled } = await pairClosedAfterTest();
    const a = await sendAndCollect(accepted, dialled, [Buffer.from('hello')]);
    const b = await sendAndCollect(dialled, accepted, [Buffer.from('world')]);
    expect([a.mode, b.mode]).toEqual(['user-buffer', 'user-buffer']);
    expect(Buffer.concat(a.chunks).toString()).toBe('hello');
    expect(Buffer.concat(b.chunks).toString()).toBe('world');
  });

  it('never overwrites a chunk the consumer kept, small or large, across many reads', async () => {
    const { accepted, dialled } = await pairClosedAfterTest();
    // Sizes around the pool's threshold (4 KiB), the hand-over threshold (32 KiB) and the 64 KiB read buffer, and small
    // ones after large ones
    // (a handed-over buffer must not be read into again).
    const sizes = [
      1, 5, 4095, 4096, 4097, 100, 32_767, 32_768, 65536, 7, 20_000, 70_000, 3, 200_000, 50, 1_000_000, 12,
    ];
    const parts = sizes.map((n) => randomBytes(n));
    const { chunks, mode } = await sendAndCollect(accepted, dialled, parts);
    expect(mode).toBe('user-buffer');
    // Every chunk was kept until now: if the reader had reused memory a chunk still points at, this differs.
    expect(Buffer.concat(chunks).equals(Buffer.concat(parts))).toBe(true);
  });

  it('keeps pause and resume working: no chunk arrives while paused, nothing is lost after resume', async () => {
    const { accepted, dialled } = await pairClosedAfterTest();
    const chunks: Buffer[] = [];
    let first: (() => void) | undefined;
    readChunks(accepted, (c) => {
      chunks.push(c);
      accepted.pause(); // as the relay does when the other side's write buffer is full
      first?.();
    });
    dialled.write('one');
    await new Promise<void>((r) => (first = r));
    const whilePaused = chunks.length;
    dialled.write('two');
    await new Promise((r) => setTimeout(r, 100));
    expect(chunks.length).toBe(whilePaused);
    const more = new Promise<void>((r) => (first = r));
    accepted.resume();
    await more;
    expect(Buffer.concat(chunks).toString()).toBe('onetwo');
  });

  it("still emits 'end' and 'close' when the peer closes", async () => {
    const { accepted, dialled } = await pairClosedAfterTest();
    const chunks: Buffer[] = [];
    readChunks(accepted, (c) => chunks.push(c));
    const ended = once(accepted, 'end');
    const closed = once(accepted, 'close');
    dialled.end('bye');
    await ended;
    await closed;
    expect(Buffer.concat(chunks).toString()).toBe('bye');
  });

  it("falls back to 'data' events for TLS sockets and for a socket that already has a reader", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgwarden-reader-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const certs = makeCertificates(dir);
    const server = createTlsServer({ cert: readFileSync(certs.certFile), key: readFileSync(certs.keyFile) }, (s) =>
      s.end('over tls'),
    );
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as { port: number };
    const tls = tlsConnect({ port, host: '127.0.0.1', servername: 'localhost', ca: certs.ca });
    cleanup.push(() => {
      tls.destroy();
      server.close();
    });
    const chunks: Buffer[] = [];
    expect(readChunks(tls, (c) => chunks.push(c))).toBe('data-event');
    await once(tls, 'end');
    expect(Buffer.concat(chunks).toString()).toBe('over tls');

    const pair = await pairClosedAfterTest();
    pair.accepted.on('data', () => {});
    expect(readChunks(pair.accepted, () => {})).toBe('data-event');
  });
});
