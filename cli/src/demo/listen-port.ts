import { createServer } from 'node:net';

/** True if nothing is bound to host:port right now (another process may still take it before we bind). */
export function portIsFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

/** The first free port in [first, first + span), or a kernel-chosen one when all are taken. */
export async function firstFreePort(host: string, first: number, span = 10): Promise<number> {
  for (let port = first; port < first + span && port <= 65535; port++) {
    if (await portIsFree(host, port)) return port;
  }
  return kernelPort(host);
}

export function kernelPort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}
