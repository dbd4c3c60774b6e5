import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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
  /** (Re)starts the server on the same port and store; nothing while it runs. */
  start(): Promise<void>;
  /** SIGSTOP: the server keeps its sockets open and answers nothing (a hung host, a GC or I/O stall). */
  pause(): void;
  /** SIGCONT after `pause()`. */
  resume(): void;
  stop(): Promise<void>;
}

export interface StartNatsOptions {
  /** A nats-server configuration file's text (e.g. the Helm chart's); the store dir, address and port flags win. */
  config?: string;
  /** Environment for the server (a config may reference `$VARS`). */
  env?: Record<string, string>;
  /** More server flags (a rendered pod's `-P pidfile`, say), after the config's. */
  args?: string[];
}

/** A private nats-server with JetStream on a free loopback port and a temp store dir. */
export async function startNats(opts: StartNatsOptions = {}): Promise<TestNats> {
  const bin = natsServerBinary();
  const storeDir = mkdtempSync(join(tmpdir(), 'pgwarden-nats-'));
  const port = await freePort();
  const configArgs: string[] = [];
  if (opts.config !== undefined) {
    const file = join(storeDir, 'nats.conf');
    writeFileSync(file, opts.config);
    // A config may set a monitoring port (the chart's does); move it off any shared port.
    configArgs.push('-c', file, '-m', String(await freePort()));
  }
  configArgs.push(...(opts.args ?? []));
  let child: ChildProcess | undefined;
  const start = async () => {
    // Running already: nothing to do (a test's afterEach may restart a server that a failed test left killed).
    if (child && child.exitCode === null) return;
    child = spawn(bin, [...configArgs, '-js', '-sd', storeDir, '-a', '127.0.0.1', '-p', String(port)], {
      stdio: 'ignore',
      env: { ...process.env, ...opts.env },
    });
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
    pause: () => child?.kill('SIGSTOP'),
    resume: () => child?.kill('SIGCONT'),
    stop: async () => {
      await kill();
      rmSync(storeDir, { recursive: true, force: true });
    },
  };
}
