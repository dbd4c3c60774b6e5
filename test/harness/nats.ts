import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { natsServerBinary } from './binaries.js';
import { freePort, waitForPort } from './ports.js';

export interface TestNats {
  port: number;
  url: string;
  storeDir: string;
  /** Kills the server (SIGKILL: no graceful flush), keeping its store so `start()` resumes it. */
  kill(): Promise<void>;
  /** (Re)starts the server on the same port and store. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** A private nats-server with JetStream on a free loopback port and a temp store dir. */
export async function startNats(): Promise<TestNats> {
  const bin = natsServerBinary();
  const storeDir = mkdtempSync(join(tmpdir(), 'pgwarden-nats-'));
  const port = await freePort();
  let child: ChildProcess | undefined;
  const start = async () => {
    child = spawn(bin, ['-js', '-sd', storeDir, '-a', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
    child.unref();
    await waitForPort(port);
  };
  const kill = async () => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      c.once('exit', () => resolve());
      c.kill('SIGKILL');
    });
  };
  await start();
  return {
    port,
    url: `nats://127.0.0.1:${port}`,
    storeDir,
    kill,
    start,
    stop: async () => {
      await kill();
      rmSync(storeDir, { recursive: true, force: true });
    },
  };
}
