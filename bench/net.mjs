// Loopback port helpers for the benchmark's child processes.
import { connect, createServer } from 'node:net';

/** Asks the kernel for a free loopback port (racy by nature; fine for a single-user benchmark). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves once host:port accepts TCP connections; rejects after timeoutMs or when `alive()` turns false. */
export async function waitForPort(port, { host = '127.0.0.1', timeoutMs = 20_000, alive = () => true } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const s = connect({ port, host });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (!alive()) throw new Error(`process meant to listen on ${host}:${port} exited`);
    if (Date.now() > deadline) throw new Error(`nothing listening on ${host}:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
