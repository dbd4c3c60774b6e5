import type { Socket } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { B, LARGE_MESSAGE_LIMIT } from '../protocol/codes.js';
import { Framer, PASS } from '../protocol/framer.js';
import { msg, RawClient } from '../testing/raw-client.js';
import { type Fixture, startFixture } from '../testing/sidecar-fixture.js';

// Live memory, not garbage awaiting collection: sample after a full GC (exposed at run time for this file).
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/**
 * Samples live external memory (Buffers) after a full GC; returns the peak above the starting point when stopped.
 * A full GC stops the whole worker, the in-process sidecar included, and takes long on a big heap (other files'
 * modules stay loaded: isolate is off). A fixed 100 ms interval let back-to-back collections starve the copy on a slow
 * CI machine (60 s timeout); the pause after each sample is four times what it took, so GC stays under a fifth of the time.
 */
function sampleLiveBuffers(): () => number {
  gc();
  const base = process.memoryUsage().arrayBuffers;
  let peak = 0;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const sample = () => {
    const t0 = performance.now();
    gc();
    peak = Math.max(peak, process.memoryUsage().arrayBuffers - base);
    if (!stopped) timer = setTimeout(sample, Math.max(100, 4 * (performance.now() - t0)));
  };
  timer = setTimeout(sample, 100);
  return () => {
    stopped = true;
    clearTimeout(timer);
    return peak;
  };
}

const SIZE = 65 * 1024 * 1024; // over the 64 MiB mark, well under PostgreSQL's 1 GB message limit

/** Writes `total` bytes of 'a' as one CopyData message, 1 MiB at a time, honouring backpressure. */
async function sendBigCopyData(socket: Socket, total: number): Promise<void> {
  const head = Buffer.alloc(5);
  head[0] = 0x64;
  head.writeInt32BE(4 + total + 1, 1);
  socket.write(head);
  const piece = Buffer.alloc(1024 * 1024, 'a');
  for (let sent = 0; sent < total; sent += piece.length) {
    if (!socket.write(piece.subarray(0, Math.min(piece.length, total - sent))))
      await new Promise((r) => socket.once('drain', r));
  }
  socket.write(Buffer.from('\n'));
}

/** Reads the socket until ReadyForQuery, counting message types and bytes without keeping them. */
function countUntilReady(socket: Socket): Promise<{ types: string[]; bytes: number }> {
  return new Promise((resolve) => {
    const types: string[] = [];
    let bytes = 0;
    const f = new Framer({
      limit: () => LARGE_MESSAGE_LIMIT,
      header: (t) => {
        types.push(String.fromCharCode(t));
        if (t === B.ReadyForQuery) {
          socket.off('data', onData);
          setImmediate(() => resolve({ types, bytes }));
        }
        return PASS;
      },
      whole: () => true,
      pass: (_b, s, e) => {
        bytes += e - s;
      },
    });
    const onData = (chunk: Buffer) => f.push(chunk);
    socket.on('data', onData);
  });
}

describe('large messages stream through with bounded memory', () => {
  let fx: Fixture;
  beforeAll(async () => {
    fx = await startFixture();
  });
  afterAll(() => fx.sidecar.close(500));

  it(`copies ${SIZE >> 20} MiB in as one CopyData and reads it back as one DataRow`, async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    client.send(msg.query('DROP TABLE IF EXISTS big_t; CREATE TABLE big_t (v text)'));
    await client.untilReady();
    client.send(msg.query('COPY big_t FROM STDIN'));
    await client.until(B.CopyInResponse);
    // From here on the test reads the socket itself: the RawClient's reader would assemble whole messages.
    client.socket.removeAllListeners('data');
    const stop = sampleLiveBuffers();
    let peak = 0;
    try {
      const copied = countUntilReady(client.socket);
      await sendBigCopyData(client.socket, SIZE);
      client.socket.write(msg.copyDone());
      expect((await copied).types).toEqual(['C', 'Z']);
      const read = countUntilReady(client.socket);
      client.socket.write(msg.query('SELECT v FROM big_t'));
      const r = await read;
      expect(r.types).toEqual(['T', 'D', 'C', 'Z']);
      expect(r.bytes).toBeGreaterThan(SIZE);
    } finally {
      peak = stop();
    }
    // Whole-message buffering would hold at least SIZE bytes at once (measured: 95 MB for an 80 MiB message);
    // streaming stays well below it: 1–20 MB on a quiet machine, the test client's own buffers included, and up to
    // 40 MB seen while the rest of `make test` loaded both cores (socket buffers fill before backpressure bites).
    expect(peak).toBeLessThan(SIZE * 0.8);
    client.close();
  }, 60_000);

  it('stops reading the upstream while the client does not read (backpressure)', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    client.socket.removeAllListeners('data');
    client.socket.pause();
    client.socket.write(msg.query("SELECT repeat('x', 1000) FROM generate_series(1, 100000)")); // ~100 MB of rows
    const stop = sampleLiveBuffers();
    await new Promise((r) => setTimeout(r, 1500));
    const peak = stop();
    // Without backpressure the sidecar would buffer the result at loopback speed (about 100 MB in 1.5 s).
    expect(peak).toBeLessThan(16 * 1024 * 1024);
    const done = countUntilReady(client.socket);
    client.socket.resume();
    const r = await done;
    expect(r.types.filter((t) => t === 'D')).toHaveLength(100_000);
    expect(r.types.slice(-2)).toEqual(['C', 'Z']);
    client.close();
  }, 60_000);
});
