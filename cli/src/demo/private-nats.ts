import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { connect } from 'node:net';
import { delimiter, join } from 'node:path';
import { kernelPort } from './listen-port.js';

/**
 * Where the demo looks for nats-server: $PGWARDEN_NATS_SERVER, then Debian's /usr/sbin, then $PATH.
 * PGWARDEN_NATS_SERVER=off skips it (the demo then uses its in-process fallback).
 */
export function findNatsServer(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.PGWARDEN_NATS_SERVER === 'off') return undefined;
  const candidates = [
    env.PGWARDEN_NATS_SERVER,
    '/usr/sbin/nats-server',
    ...(env.PATH ?? '').split(delimiter).map((d) => (d ? join(d, 'nats-server') : '')),
  ];
  for (const c of candidates) {
    if (!c) continue;
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {
      // not there or not executable: try the next one
    }
  }
  return undefined;
}

export interface PrivateNats {
  url: string;
  stop(): Promise<void>;
}

/**
 * A private nats-server with JetStream (file store in `storeDir`) on a free loopback port, killed on stop().
 * Flags per https://docs.nats.io/running-a-nats-service/introduction/flags: -js enables JetStream, -sd its store.
 */
export async function startPrivateNats(bin: string, storeDir: string, timeoutMs = 10_000): Promise<PrivateNats> {
  const host = '127.0.0.1';
  const port = await kernelPort(host);
  const child: ChildProcess = spawn(bin, ['-js', '-sd', storeDir, '-a', host, '-p', String(port)], {
    stdio: ['ignore', 'ignore', 'pipe'],
    // Its own process group: a terminal's Ctrl-C reaches the demo only, which stops nats-server last, after the
    // sidecar flushed its events and the collector pulled them.
    detached: true,
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    stderr = (stderr + d).slice(-2000);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    }
  };
  const deadline = Date.now() + timeoutMs;
  while (!(await accepts(host, port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`nats-server (${bin}) did not start on ${host}:${port}: ${stderr.trim() || 'timeout'}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url: `nats://${host}:${port}`, stop };
}

function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
