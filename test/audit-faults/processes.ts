import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../harness/index.js';
import { ROLES } from '../harness/postgres.js';

/** The built CLI (`make test` builds first): the proof drives the real binaries, as production runs them. */
export const BIN = fileURLToPath(new URL('../../bin/pgwarden', import.meta.url));
export const BUILT = existsSync(fileURLToPath(new URL('../../cli/dist/main.js', import.meta.url)));

export interface Proc {
  child: ChildProcess;
  output(): string;
  /** SIGKILL: no drain, no final acks: the harshest restart. */
  kill(): Promise<void>;
  stop(): Promise<void>;
}

/** Starts `pgwarden <args>` and resolves once a stdout/stderr line matches `ready`. */
export function startCli(
  args: string[],
  ready: RegExp,
  env: NodeJS.ProcessEnv = {},
  timeoutMs = 30_000,
): Promise<Proc & { match: RegExpExecArray }> {
  const child = spawn(process.execPath, [BIN, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let out = '';
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const proc: Proc = {
    child,
    output: () => out,
    kill: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(t);
    },
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`pgwarden ${args[0]} not ready after ${timeoutMs} ms:\n${out.slice(-3000)}`)),
      timeoutMs,
    );
    const onData = (c: Buffer) => {
      out += c.toString();
      if (out.length > 2_000_000) out = out.slice(-1_000_000);
      const m = ready.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ ...proc, match: m });
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`pgwarden ${args[0]} exited (${code ?? sig}) before it was ready:\n${out.slice(-3000)}`));
    });
  });
}

/** A `pgwarden sidecar` auditing to NATS with a spool, as the fault suites restart it: same port, creds and spool. */
export interface SpoolingSidecar {
  port: number;
  spool: string;
  /** Starts a sidecar process on the same port, credentials and spool; resolves once it listens. */
  start(): Promise<Proc & { match: RegExpExecArray }>;
}

/**
 * Prepares `dir/creds` (the scram role's credentials) and `dir/spool` (emptied first) and a free port, for sidecars
 * that reach PostgreSQL at `upstream` (a postgres:// URL) and audit to `natsUrl`; `extra` flags go last.
 */
export async function spoolingSidecar(
  dir: string,
  upstream: string,
  natsUrl: () => string,
  extra: string[] = [],
): Promise<SpoolingSidecar> {
  const creds = join(dir, 'creds');
  const spool = join(dir, 'spool');
  for (const d of [creds, spool]) rmSync(d, { recursive: true, force: true });
  mkdirSync(creds);
  writeFileSync(join(creds, 'username'), `${ROLES.scram.user}\n`);
  writeFileSync(join(creds, 'password'), `${ROLES.scram.password}\n`);
  const port = await freePort();
  const start = () =>
    startCli(
      [
        'sidecar',
        '--listen',
        `127.0.0.1:${port}`,
        '--upstream',
        upstream,
        '--credentials-dir',
        creds,
        '--audit',
        natsUrl(),
        '--spool-dir',
        spool,
        '--http',
        'off',
        ...extra,
      ],
      /sidecar listening/,
    );
  return { port, spool, start };
}
