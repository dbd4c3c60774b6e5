import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer, connect as tlsConnect } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { makeCertificates } from '../../../test/harness/index.js';
import { type ReadStats, readChunks } from './socket-reader.js';

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

/**
 * Writes `parts` one after the other, each after the reader has seen the previous one (so reads follow writes).
 * `keep(i)` says whether the consumer keeps chunk i past its callback; a chunk not kept is copied at once (what a
 * consumer that does not keep it may rely on: its bytes as they were during the callback).
 */
async function sendAndCollect(
  reader: Socket,
  writer: Socket,
  parts: Buffer[],
  keep: (i: number) => boolean = () => true,
): Promise<{ chunks: Buffer[]; views: Buffer[]; copies: Buffer[]; mode: string; stats: ReadStats }> {
  const chunks: Buffer[] = [];
  const views: Buffer[] = [];
  const copies: Buffer[] = [];
  let seen = 0;
  let wake: (() => void) | undefined;
  let last = false;
  const { mode, stats } = readChunks(
    reader,
    (c) => {
      last = keep(chunks.length);
      chunks.push(Buffer.from(c));
      if (last) {
        views.push(c);
        copies.push(Buffer.from(c));
      }
      seen += c.length;
      wake?.();
    },
    () => last,
  );
  let sent = 0;
  for (const p of parts) {
    writer.write(p);
    sent += p.length;
    while (seen < sent) await new Promise<void>((r) => (wake = r));
  }
  return { chunks, views, copies, mode, stats };
}

describe('readChunks', () => {
  it('reads an accepted socket and a dialled one through a reused buffer on this Node', async () => {
    const { accepted, dialled } = await pairClosedAfterTest();
    const a = await sendAndCollect(accepted, dialled, [Buffer.from('hello')]);
    const b = await sendAndCollect(dialled, accepted, [Buffer.from('world')]);
    expect([a.mode, b.mode]).toEqual(['reused-buffer', 'reused-buffer']);
    expect(Buffer.concat(a.chunks).toString()).toBe('hello');
    expect(Buffer.concat(b.chunks).toString()).toBe('world');
  });

  it('uses one buffer for every read nobody keeps, so reads allocate nothing', async () => {
    const { accepted, dialled } = await pairClosedAfterTest();
    const parts = Array.from({ length: 50 }, (_, i) => randomBytes(1 + ((i * 7919) % 3000)));
    const { chunks, mode, stats } = await sendAndCollect(accepted, dialled, parts, () => false);
    expect(mode).toBe('reused-buffer');
    expect(Buffer.concat(chunks).equals(Buffer.concat(parts))).toBe(true);
    expect(stats.reads).toBeGreaterThanOrEqual(50);
    expect(stats.handedOver).toBe(0);
  });

  it('never overwrites a chunk the consumer said it keeps, small or large, across many reads', async () => {
    const { accepted, dialled } = await pairClosedAfterTest();
    // Small and large reads, kept and not kept in turn: a kept view must still hold its bytes at the end, however
    // many reads (into the same buffer or new ones) came after it.
    const sizes = [
      1, 5, 4095, 4096, 4097, 100, 32_767, 32_768, 65536, 7, 20_000, 70_000, 3, 200_000, 50, 1_000_000, 12,
    ];
    const parts = sizes.map((n) => randomBytes(n));
    const { chunks, views, copies, stats } = await sendAndCollect(accepted, dialled, parts, (i) => i % 3 === 0);
    expect(Buffer.concat(chunks).equals(Buffer.concat(parts))).toBe(true);
    expect(views.length).toBeGreaterThan(3);
    for (let i = 0; i < views.length; i++) expect(views[i].equals(copies[i])).toBe(true);
    expect(stats.handedOver).toBe(views.length);
    expect(stats.reads).toBeGreaterThan(stats.handedOver);
  });

  it('a consumer that throws still gets its kept chunk handed over', async () => {
    const { accepted, dialled } = await pairClosedAfterTest();
    const views: Buffer[] = [];
    const copies: Buffer[] = [];
    let got = 0;
    let wake: (() => void) | undefined;
    const errors: unknown[] = [];
    const onError = (e: unknown) => errors.push(e);
    process.on('uncaughtException', onError);
    cleanup.push(() => process.off('uncaughtException', onError));
    const { stats } = readChunks(
      accepted,
      (c) => {
        got += c.length;
        views.push(c);
        copies.push(Buffer.from(c));
        wake?.();
        throw new Error('consumer failed');
      },
      () => true,
    );
    dialled.write(randomBytes(1000));
    while (got < 1000) await new Promise<void>((r) => (wake = r));
    dialled.write(randomBytes(1000));
    while (got < 2000) await new Promise<void>((r) => (wake = r));
    for (let i = 0; i < views.length; i++) expect(views[i].equals(copies[i])).toBe(true);
    expect(stats.handedOver).toBe(stats.reads);
    // Each error still surfaces, as an uncaught exception outside the read.
    while (errors.length < stats.reads) await new Promise((r) => setImmediate(r));
    expect(errors.map((e) => (e as Error).message)).toEqual(Array(stats.reads).fill('consumer failed'));
  });

  it('keeps pause and resume working: no chunk arrives while paused, nothing is lost after resume', async () => {
    const { accepted, dialled } = await pairClosedAfterTest();
    const chunks: Buffer[] = [];
    let first: (() => void) | undefined;
    readChunks(
      accepted,
      (c) => {
        chunks.push(Buffer.from(c));
        accepted.pause(); // as the relay does when the other side's write buffer is full
        first?.();
      },
      () => false,
    );
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
    readChunks(
      accepted,
      (c) => chunks.push(Buffer.from(c)),
      () => false,
    );
    const ended = once(accepted, 'end');
    const closed = once(accepted, 'close');
    dialled.end('bye');
    await ended;
    await closed;
    expect(Buffer.concat(chunks).toString()).toBe('bye');
  });

  it('reads a TLS socket over a connected TCP one (as the upstream after SSLRequest) through a reused buffer', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgwarden-reader-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const certs = makeCertificates(dir);
    // Records of every size up to TLS's 16 KiB, many per read, and more data than the read buffer holds.
    const parts = Array.from({ length: 60 }, (_, i) => randomBytes(1 + ((i * 7919) % 40_000)));
    const server = createTlsServer({ cert: readFileSync(certs.certFile), key: readFileSync(certs.keyFile) }, (s) => {
      for (const p of parts) s.write(p);
      s.end();
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as { port: number };
    const raw = new Socket();
    raw.connect(port, '127.0.0.1');
    await once(raw, 'connect');
    const tls = tlsConnect({ socket: raw, servername: 'localhost', ca: certs.ca });
    cleanup.push(() => {
      tls.destroy();
      server.close();
    });
    await once(tls, 'secureConnect');
    const chunks: Buffer[] = [];
    const views: Buffer[] = [];
    const copies: Buffer[] = [];
    let last = false;
    const { mode, stats } = readChunks(
      tls,
      (c) => {
        last = chunks.length % 4 === 0;
        chunks.push(Buffer.from(c));
        if (last) {
          views.push(c);
          copies.push(Buffer.from(c));
        }
      },
      () => last,
    );
    expect(mode).toBe('reused-buffer');
    await once(tls, 'end');
    expect(Buffer.concat(chunks).equals(Buffer.concat(parts))).toBe(true);
    for (let i = 0; i < views.length; i++) expect(views[i].equals(copies[i])).toBe(true);
    expect(stats.handedOver).toBe(views.length);
    expect(stats.reads).toBeGreaterThan(2 * stats.handedOver);
  });

  it("falls back to 'data' events for a socket that already has a reader", async () => {
    const pair = await pairClosedAfterTest();
    pair.accepted.on('data', () => {});
    expect(
      readChunks(
        pair.accepted,
        () => {},
        () => false,
      ).mode,
    ).toBe('data-event');
  });
});
