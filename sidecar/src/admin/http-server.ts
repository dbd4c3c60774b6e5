import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { isLoopbackHost } from '@pgwarden/policy';
import type { SidecarMetrics } from './metrics.js';

export interface AdminOptions {
  host: string;
  port: number;
  metrics: SidecarMetrics;
  /** Resolves to the reasons the sidecar is not ready (empty = ready). */
  readiness: () => Promise<string[]>;
}

/**
 * Admin HTTP: `/healthz` (the process serves), `/readyz` (upstream reachable, policy loaded, audit durable) and
 * `/metrics` (Prometheus text format). Bind it to loopback or the pod IP; it exposes no secrets.
 */
export async function startAdminServer(
  opts: AdminOptions,
): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      // The reasons name the database host and quote PostgreSQL's errors: shown to callers on this machine (kubectl
      // exec, a local curl) and logged, while kubelet and the rest of the cluster, who reach the pod IP, see the
      // verdict only.
      const local = isLoopbackHost(req.socket.remoteAddress);
      opts.readiness().then(
        (reasons) => {
          const body =
            reasons.length === 0
              ? 'ready\n'
              : local
                ? `not ready: ${reasons.join('; ')}\n`
                : `not ready (${reasons.length} check${reasons.length === 1 ? '' : 's'} failing; the reasons are shown on 127.0.0.1 and in the log)\n`;
          res.writeHead(reasons.length === 0 ? 200 : 503, { 'content-type': 'text/plain' }).end(body);
        },
        (err) =>
          res
            .writeHead(503, { 'content-type': 'text/plain' })
            .end(local ? `not ready: ${err instanceof Error ? err.message : err}\n` : 'not ready\n'),
      );
    } else if (path === '/metrics') {
      opts.metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': opts.metrics.registry.contentType }).end(text),
        () => res.writeHead(500).end(),
      );
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    server,
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}
