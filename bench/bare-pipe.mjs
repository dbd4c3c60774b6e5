#!/usr/bin/env node
// The reference Node.js proxy: accept a TCP connection, open one upstream, pipe bytes both ways untouched (streams'
// own reads; the sidecar's reused read buffers cost less, docs/benchmarks.md).
// Usage: node bench/bare-pipe.mjs --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT
import { connect, createServer } from 'node:net';

function hostPort(flag) {
  const i = process.argv.indexOf(flag);
  const value = i > 0 ? process.argv[i + 1] : undefined;
  const m = /^(.+):(\d+)$/.exec(value ?? '');
  if (!m) {
    process.stderr.write(`bare-pipe: ${flag} host:port is required\n`);
    process.exit(2);
  }
  return { host: m[1], port: Number(m[2]) };
}

const listen = hostPort('--listen');
const upstream = hostPort('--upstream');

const server = createServer({ noDelay: true }, (client) => {
  const server = connect({ ...upstream, noDelay: true });
  const close = () => {
    client.destroy();
    server.destroy();
  };
  client.on('error', close).on('close', close);
  server.on('error', close).on('close', close);
  client.pipe(server);
  server.pipe(client);
});
server.listen(listen.port, listen.host, () =>
  process.stdout.write(`bare-pipe listening on ${listen.host}:${listen.port}\n`),
);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => process.exit(0)));
