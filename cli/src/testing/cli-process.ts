import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The repo's launcher: CLI tests drive it as an operator would. */
export const BIN = fileURLToPath(new URL('../../../bin/pgwarden', import.meta.url));
/** The CLI runs from cli/dist: `make test` builds first. Without a build there is nothing to spawn. */
export const BUILT = existsSync(fileURLToPath(new URL('../../dist/main.js', import.meta.url)));

/** `pgwarden collector` on a free loopback port, resolved with its URL once it says it listens. */
export function startCollectorProcess(args: string[]): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(BIN, ['collector', '--listen', '127.0.0.1:0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stderr?.on('data', (c) => (err += c));
    child.stdout?.on('data', (c) => {
      out += c;
      const m = /collector listening on (https?:\/\/\S+)/.exec(out);
      if (m) resolve({ child, url: m[1] });
    });
    child.once('exit', (code) => reject(new Error(`collector exited ${code}: ${err.slice(-2000)}`)));
  });
}

/** SIGTERM, resolved with the exit code (at once if it already exited). */
export const stopProcess = (child: ChildProcess) =>
  new Promise<number | null>((resolve) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    child.once('exit', (code) => resolve(code));
    child.kill('SIGTERM');
  });

/**
 * Runs `pgwarden <args>` to its exit as an approver's shell would: `env` over this process's environment, without
 * the approver's token or collector URL unless `env` gives them.
 */
export function runAsApprover(args: string[], env: Record<string, string> = {}) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const { PGWARDEN_APPROVER_TOKEN: _, PGWARDEN_COLLECTOR_URL: __, ...base } = process.env;
    const child = spawn(BIN, args, { env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (c) => (stdout += c));
    child.stderr?.on('data', (c) => (stderr += c));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}
