import { connect, createServer } from 'node:net';

/**
 * Ports handed out for a server a test (or a child process it starts) binds later. The kernel's port 0 would pick
 * from the ephemeral range (net.ipv4.ip_local_port_range, 32768–60999 by default), where every other test's port-0
 * listeners and every outgoing connection's source port also land, so a port found free there could be taken before
 * the caller binds it (it happened: a sidecar's port went to another test's listener). Ports below that range are
 * never handed out by the kernel; each vitest worker (VITEST_POOL_ID) takes its own slice of them, and a worker
 * walks its slice instead of reusing a port soon, so two tests of this run never get the same port. A port some
 * other program holds is skipped (checked by binding it).
 */
const RANGE_START = 10_000;
const SLICE = 1_000;
const SLICES = 22; // 10000–31999: below the kernel's ephemeral range
const slot = (Number(process.env.VITEST_POOL_ID ?? 0) || 0) % SLICES;
let next = Math.floor(Math.random() * SLICE);

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen({ port, host: '127.0.0.1', exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

/** A loopback port nothing listens on, from this worker's slice (above); the caller binds it. */
export async function freePort(): Promise<number> {
  for (let tries = 0; tries < SLICE; tries++) {
    const port = RANGE_START + slot * SLICE + (next++ % SLICE);
    if (await canBind(port)) return port;
  }
  throw new Error(`no free port in ${RANGE_START + slot * SLICE}–${RANGE_START + (slot + 1) * SLICE - 1}`);
}

/** Resolves once something accepts TCP connections on host:port, or rejects after timeoutMs. */
export async function waitForPort(port: number, host = '127.0.0.1', timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ port, host });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listening on ${host}:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
