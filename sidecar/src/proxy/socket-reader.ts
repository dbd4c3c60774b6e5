import { Socket, type SocketConstructorOpts } from 'node:net';

/**
 * Reads a socket's bytes into one buffer that is used again and again (Node's `onread` mechanism) instead of the
 * stream's default, which mallocs 64 KiB for every read(2), reallocates it to the bytes read and wraps it in a new
 * ArrayBuffer that only a GC frees. On the relay that is two reads per small transaction, and one per 64 KiB of a
 * large result: measured, the sidecar's CPU per transaction fell by ~13 % on pgbench -S -c 8 and by ~45 % on
 * 1000-row results (docs/benchmarks.md, fourteenth session).
 *
 * The chunk handed to `onChunk` is a view of that buffer. After `onChunk` returns, `keeps()` says whether anything
 * still points into it: a write the other socket has not handed to the kernel yet, input the framer holds while a
 * verdict is pending. If so, the buffer is given up to whoever holds it and the next read gets a new one; if not,
 * the next read overwrites it. A consumer must therefore copy what it keeps beyond the callback, or make `keeps()`
 * say so (session.ts). An earlier version copied every small read out and handed every large one over (sixth
 * session): the hand-overs, one per 64 KiB of a large result, made V8 run a full GC every ~100 ms. Here a buffer
 * is handed over only while the other side is backed up, which also pauses this socket.
 *
 * `net.connect` accepts `onread` but sockets a `net.Server` accepts do not, and the relay switches sockets over
 * only after the startup exchange; so the socket's own slots for it are set here (the symbols are found on a probe
 * socket that Node configured itself). A TLS socket works the same way: its handle (TLSWrap) is a stream like
 * TCP's and decrypts each record into the buffer it is given. Anything this cannot be sure of (a Node without those
 * slots or without `useUserBuffer` on the handle, bytes already buffered in the stream, another 'data' listener)
 * keeps the ordinary 'data' event, whose chunks are the consumer's to keep.
 * Pause/resume keep working: net.Socket stops and restarts the handle itself in this mode.
 */

export type ReadMode = 'reused-buffer' | 'data-event';

export const READ_BUFFER_BYTES = 64 * 1024;

interface OnreadSlots {
  buffer: symbol;
  callback: symbol;
  generator: symbol;
}

let slots: OnreadSlots | null | undefined;

function onreadSlots(): OnreadSlots | null {
  if (slots !== undefined) return slots;
  slots = null;
  try {
    const marker = Buffer.alloc(1);
    const callback = () => {};
    // The constructor takes `onread` (it is what net.connect passes on); @types/node lists it on connect only.
    const probe = new Socket({ onread: { buffer: marker, callback } } as SocketConstructorOpts);
    const record = probe as unknown as Record<symbol, unknown>;
    let buffer: symbol | undefined;
    let cb: symbol | undefined;
    let generator: symbol | undefined;
    for (const s of Object.getOwnPropertySymbols(probe)) {
      if (record[s] === marker) buffer = s;
      else if (record[s] === callback) cb = s;
      else if (s.description === 'kBufferGen' && record[s] === null) generator = s;
    }
    probe.destroy();
    if (buffer && cb && generator) slots = { buffer, callback: cb, generator };
  } catch {
    slots = null;
  }
  return slots;
}

interface UserBufferHandle {
  useUserBuffer?: (buf: Uint8Array) => void;
}

/** How often a socket's read buffer was used again and how often it was given up (for tests). */
export interface ReadStats {
  reads: number;
  handedOver: number;
}

/**
 * Delivers the socket's bytes to `onChunk` through a reused read buffer where that is safe (see above); `keeps` is
 * asked after each chunk. Returns the mode chosen and, in 'reused-buffer' mode, live counters.
 */
export interface ReadResult {
  mode: ReadMode;
  stats: ReadStats;
}

export function readChunks(socket: Socket, onChunk: (chunk: Buffer) => void, keeps: () => boolean): ReadResult {
  const stats: ReadStats = { reads: 0, handedOver: 0 };
  const s = onreadSlots();
  const handle = (socket as unknown as { _handle: UserBufferHandle | null })._handle;
  if (
    s === null ||
    handle === null ||
    typeof handle.useUserBuffer !== 'function' ||
    socket.readableLength > 0 ||
    socket.listenerCount('data') > 0
  ) {
    socket.on('data', onChunk);
    return { mode: 'data-event', stats };
  }
  let buf = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
  let kept = false;
  const record = socket as unknown as Record<symbol, unknown>;
  record[s.buffer] = buf;
  record[s.callback] = (n: number, b: Buffer) => {
    stats.reads++;
    try {
      onChunk(b.subarray(0, n));
      kept = keeps();
    } catch (err) {
      // Whatever onChunk queued before it threw may still point into the buffer, and Node takes the next one only
      // from a read callback that completes (its tick queue included): so give it up, and throw from setImmediate,
      // outside the read, where it surfaces as the uncaught exception it would have been.
      kept = true;
      setImmediate(() => {
        throw err;
      });
    }
  };
  // Called by Node after every read: a new buffer only when something still points into the last one.
  record[s.generator] = () => {
    if (!kept) return undefined;
    kept = false;
    stats.handedOver++;
    buf = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
    return buf;
  };
  handle.useUserBuffer(buf);
  return { mode: 'reused-buffer', stats };
}
