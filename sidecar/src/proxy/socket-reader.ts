import { Socket, type SocketConstructorOpts } from 'node:net';
import { TLSSocket } from 'node:tls';

/**
 * Reads a socket's bytes into one buffer kept for the socket's lifetime (Node's `onread` mechanism) instead of the
 * stream's default, which mallocs 64 KiB for every read(2), reallocates it to the bytes read and wraps it in a new
 * ArrayBuffer that only a GC frees. On the relay that is two reads per small transaction; measured with a bare pipe
 * under pgbench -S -c 8 it was ~4–6 µs of the pipe's ~40 µs CPU per transaction (docs/benchmarks.md).
 *
 * Chunks handed to `onChunk` are the consumer's to keep (the framer keeps partial messages, writes may be queued):
 * a read under half of the read buffer is copied out (into Node's shared pool when under 4 KiB, so no malloc; else
 * into a buffer of its own size), a larger one hands the read buffer itself over and the next read gets a fresh one.
 * So nothing the consumer holds is ever overwritten, and a kept chunk pins at most twice its size. The price is one
 * 64 KiB buffer per socket for the socket's lifetime (128 KiB per session).
 *
 * `net.connect` accepts `onread` but sockets a `net.Server` accepts do not, and the relay switches an upstream
 * socket over only after the startup exchange; so the socket's own slots for it are set here (the symbols are
 * found on a probe socket that Node configured itself). Anything this cannot be sure of (TLS sockets, a Node
 * without those slots, bytes already buffered in the stream) keeps the ordinary 'data' event.
 * Pause/resume keep working: net.Socket stops and restarts the handle itself in this mode.
 */

export type ReadMode = 'user-buffer' | 'data-event';

const READ_BUFFER_BYTES = 64 * 1024;
/** Reads below this size are copied out of the read buffer; larger ones take it with them. */
const COPY_BELOW = READ_BUFFER_BYTES / 2;

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

/** Delivers the socket's bytes to `onChunk`, through a reused read buffer where that is safe (see above). */
export function readChunks(socket: Socket, onChunk: (chunk: Buffer) => void): ReadMode {
  const s = onreadSlots();
  const handle = (socket as unknown as { _handle: UserBufferHandle | null })._handle;
  if (
    s === null ||
    socket instanceof TLSSocket ||
    handle === null ||
    typeof handle.useUserBuffer !== 'function' ||
    socket.readableLength > 0 ||
    socket.listenerCount('data') > 0
  ) {
    socket.on('data', onChunk);
    return 'data-event';
  }
  let buf = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
  let handedOver = false;
  const record = socket as unknown as Record<symbol, unknown>;
  record[s.buffer] = buf;
  record[s.callback] = (n: number, b: Buffer) => {
    let chunk: Buffer;
    if (n < COPY_BELOW) {
      chunk = Buffer.allocUnsafe(n); // a slice of Node's pool below Buffer.poolSize / 2
      b.copy(chunk, 0, 0, n);
    } else {
      chunk = b.subarray(0, n);
      handedOver = true;
    }
    onChunk(chunk);
  };
  // Called by Node after every read: a new buffer only when the last one was handed over.
  record[s.generator] = () => {
    if (!handedOver) return undefined;
    handedOver = false;
    buf = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
    return buf;
  };
  handle.useUserBuffer(buf);
  return 'user-buffer';
}
