#!/usr/bin/env node
// The sidecar's proxy without its audit trail: the same ProxySession, framing, statement tracking, allow-all
// hooks and metrics as `pgwarden sidecar`, but no audit events are built or written (startSidecar's
// statementEvents: false, which only hooks that emit their own events use). A benchmark leg only, so `make bench`
// can split the sidecar's cost into "proxying" (this leg against the bare pipe) and "auditing" (the sidecar leg
// against this one). Deliberately not a CLI flag: a sidecar that audits nothing is not something to ship.
// Usage: node bench/proxy-no-audit.mjs --listen 127.0.0.1:PORT --upstream HOST:PORT/DB --credentials-dir DIR
import { startSidecar } from '@pgwarden/sidecar';

function arg(flag) {
  const i = process.argv.indexOf(flag);
  const value = i > 0 ? process.argv[i + 1] : undefined;
  if (!value) {
    process.stderr.write(`proxy-no-audit: ${flag} is required\n`);
    process.exit(2);
  }
  return value;
}

const listen = /^(.+):(\d+)$/.exec(arg('--listen'));
const upstream = /^(.+):(\d+)\/(.+)$/.exec(arg('--upstream'));
if (!listen || !upstream) {
  process.stderr.write('proxy-no-audit: --listen host:port and --upstream host:port/db\n');
  process.exit(2);
}
const sidecar = await startSidecar({
  listen: { host: listen[1], port: Number(listen[2]) },
  upstream: { host: upstream[1], port: Number(upstream[2]), database: upstream[3], sslmode: 'disable' },
  credentials: { dir: arg('--credentials-dir') },
  statementEvents: false,
});
process.stdout.write(`proxy-no-audit listening on ${sidecar.host}:${sidecar.port}\n`);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => sidecar.close(2000).then(() => process.exit(0)));
