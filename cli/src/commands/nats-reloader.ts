import { createHash, createPrivateKey, X509Certificate } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { type Logger, pino } from 'pino';

/**
 * `pgwarden nats-reloader`: the bundled NATS's second container. nats-server reads its TLS certificate only at start
 * and on a reload signal; cert-manager renews the Secret every few weeks and the kubelet swaps the mounted files in
 * place, so without this the server keeps presenting the old certificate until it expires. The container shares the
 * pod's process namespace and signals the PID nats-server writes (`-P`), as the official NATS chart's reloader does.
 */
export interface ReloaderOptions {
  /** Files or directories (their visible entries: the kubelet's `..data` bookkeeping is skipped) to watch. */
  watch: string[];
  pidFile: string;
  intervalMs: number;
  log: Logger;
}

export interface Reloader {
  stop(): void;
}

/** Reads every watched file (following the kubelet's symlinks), in a stable order. Missing ones read as absent. */
async function snapshot(paths: string[]): Promise<Map<string, Buffer | undefined>> {
  const files = new Map<string, Buffer | undefined>();
  for (const p of paths) {
    let names: string[] | undefined;
    try {
      names = (await readdir(p)).filter((n) => !n.startsWith('.')).sort();
    } catch {
      names = undefined; // a file (ENOTDIR), or absent: read below as one file
    }
    for (const file of names ? names.map((n) => join(p, n)) : [p]) {
      try {
        files.set(file, await readFile(file));
      } catch {
        // A directory inside the watched one, or a file the kubelet is swapping: read as absent this round.
        files.set(file, undefined);
      }
    }
  }
  return files;
}

function digest(files: Map<string, Buffer | undefined>): string {
  const h = createHash('sha256');
  for (const [name, body] of files)
    h.update(`${name}\0${body ? createHash('sha256').update(body).digest('hex') : '-'}\0`);
  return h.digest('hex');
}

/**
 * Why a set of files must not be loaded yet: a certificate and key that do not belong together (a writer that is not
 * the kubelet's atomic swap, caught half-way) would make nats-server refuse the reload and keep the old pair, or,
 * worse, fail at its next restart. Names no key material.
 */
function unfitPair(files: Map<string, Buffer | undefined>): string | undefined {
  for (const [name, body] of files) {
    if (!name.endsWith('tls.crt')) continue;
    const keyName = `${name.slice(0, -'tls.crt'.length)}tls.key`;
    if (!files.has(keyName)) continue;
    const key = files.get(keyName);
    if (!body || !key) return `${name} or ${keyName} is unreadable`;
    try {
      const cert = new X509Certificate(body);
      if (!cert.checkPrivateKey(createPrivateKey(key))) return `${name} does not match ${keyName}`;
      if (Date.parse(cert.validTo) < Date.now()) return `${name} expired at ${cert.validTo}`;
    } catch {
      return `${name} or ${keyName} is not PEM`;
    }
  }
  return undefined;
}

export async function startReloader(opts: ReloaderOptions): Promise<Reloader> {
  // What nats-server loaded: the files as they were at our start (it started with them, or restarts with the new).
  let loaded = digest(await snapshot(opts.watch));
  let reported = '';
  const poll = async (): Promise<'unchanged' | 'reloaded' | 'waiting'> => {
    const files = await snapshot(opts.watch);
    const now = digest(files);
    if (now === loaded) return 'unchanged';
    const unfit = unfitPair(files);
    if (unfit) {
      if (reported !== now) opts.log.warn({ reason: unfit }, 'certificate files changed but cannot be loaded yet');
      reported = now;
      return 'waiting';
    }
    let pid: number;
    try {
      pid = Number((await readFile(opts.pidFile, 'utf8')).trim());
      if (!Number.isInteger(pid) || pid <= 1) throw new Error(`no PID in ${opts.pidFile}`);
      process.kill(pid, 'SIGHUP');
    } catch (err) {
      // nats-server restarting (no PID file yet, or the old PID gone): it will read the new files itself; try again.
      if (reported !== `${now}:signal`) {
        opts.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'cannot signal nats-server yet');
      }
      reported = `${now}:signal`;
      return 'waiting';
    }
    loaded = now;
    reported = '';
    opts.log.info({ pid, files: [...files.keys()] }, 'certificate files changed: nats-server reloading');
    return 'reloaded';
  };
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    poll()
      .catch((err) => opts.log.error({ err: err instanceof Error ? err.message : String(err) }, 'poll failed'))
      .finally(() => {
        running = false;
      });
  }, opts.intervalMs);
  return { stop: () => clearInterval(timer) };
}

/** "10s", "500ms", "1m": kept here so the command loads no package but commander and pino. */
function interval(value: string): number {
  const m = /^(\d+)(ms|s|m)$/.exec(value.trim());
  const ms = m ? Number(m[1]) * { ms: 1, s: 1000, m: 60_000 }[m[2] as 'ms' | 's' | 'm'] : Number.NaN;
  if (!(ms >= 100)) throw new InvalidArgumentError('--interval must be a duration of at least 100ms, like 10s');
  return ms;
}

export function registerNatsReloader(program: Command): void {
  program
    .command('nats-reloader')
    .description(
      'signal nats-server (SIGHUP) to reload when its TLS certificate files change (the chart runs it next to the bundled NATS)',
    )
    .requiredOption(
      '--watch <path...>',
      'files or directories to watch (a mounted Secret: its tls.crt and tls.key must match before a reload)',
    )
    .requiredOption('--pid-file <file>', 'the PID file nats-server writes (-P)')
    .addOption(
      new Option('--interval <duration>', 'how often to read the files').argParser(interval).default(10_000, '10s'),
    )
    .option('--log-level <level>', 'pino log level (logs go to stderr)', 'info')
    .action(async (o) => {
      const log = pino({ name: 'pgwarden-nats-reloader', level: o.logLevel }, pino.destination(2));
      const reloader = await startReloader({ watch: o.watch, pidFile: o.pidFile, intervalMs: o.interval, log });
      log.info({ watch: o.watch, pidFile: o.pidFile, intervalMs: o.interval }, 'nats-reloader watching');
      const stop = () => {
        reloader.stop();
        process.exit(0);
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
}
