import { type FSWatcher, statSync, watch } from 'node:fs';
import { basename, dirname } from 'node:path';
import { Counter, type Registry } from 'prom-client';
import type { PolicySourceError } from './errors.js';
import { type PolicyFile, readPolicyFiles } from './read-policy-files.js';

/** What `compile` turns the files into: the value the governance uses, plus identity for audit. */
export interface CompiledPolicy<T> {
  value: T;
  /** Stable content hash of the validated policy (e.g. sha256:...), recorded in every audit event. */
  hash: string;
  /** Names of the policies loaded. */
  names: string[];
}

export interface LoadedPolicy<T> extends CompiledPolicy<T> {
  files: string[];
  loadedAt: Date;
  /** Increments on each successful swap. */
  version: number;
}

export type PolicySourceEvent =
  | { type: 'policy.loaded'; names: string[]; hash: string; files: string[]; version: number }
  | {
      type: 'policy.rejected';
      code: string;
      message: string;
      issues?: unknown[];
      files: string[];
      /** The policy still in force, if any. */
      kept?: { names: string[]; hash: string };
    };

export interface PolicySourceOptions<T> {
  /** A policy file, or a directory of them (a mounted ConfigMap included). */
  path: string;
  /** Parses and validates; throws (PolicyError or any Error) to reject. Must be synchronous and pure. */
  compile(files: PolicyFile[]): CompiledPolicy<T>;
  /** Bursts of file events within this window cause one reload. Default 100 ms. */
  debounceMs?: number;
  /** Fallback poll for filesystems where watch events get lost; 0 disables. Default 5000 ms. */
  pollMs?: number;
  /** Registry for pgwarden_policy_reload_failures_total; more can be added with registerMetrics(). */
  registry?: Registry;
}

export interface PolicySource<T> {
  /** Loads once (a bad first policy leaves the source not ready, it does not throw) and starts watching. */
  start(): void;
  current(): LoadedPolicy<T> | undefined;
  ready(): boolean;
  /** Reloads now; returns the event it emitted, or undefined when the content had not changed. */
  reload(): PolicySourceEvent | undefined;
  on(listener: (e: PolicySourceEvent) => void): () => void;
  /** Exposes the source's metrics on a registry (e.g. the sidecar's /metrics). */
  registerMetrics(registry: Registry): void;
  close(): void;
}

const FAILURES = 'pgwarden_policy_reload_failures_total';

function failureCounter(): Counter {
  return new Counter({
    name: FAILURES,
    help: 'Policy loads rejected (the last good policy stayed in force).',
    registers: [],
  });
}

/**
 * Loads a policy from disk and keeps it current. The swap is one reference assignment, so a statement decided after
 * it sees only the new policy and one decided before only the old; a bad file never replaces a good policy.
 */
export function createPolicySource<T>(opts: PolicySourceOptions<T>): PolicySource<T> {
  const listeners = new Set<(e: PolicySourceEvent) => void>();
  const failures = failureCounter();
  const registerMetrics = (registry: Registry) => {
    if (registry.getSingleMetric(FAILURES) !== failures) registry.registerMetric(failures);
  };
  if (opts.registry) registerMetrics(opts.registry);
  let current: LoadedPolicy<T> | undefined;
  let lastContent: string | undefined;
  let version = 0;
  let watcher: FSWatcher | undefined;
  let debounce: NodeJS.Timeout | undefined;
  let poll: NodeJS.Timeout | undefined;
  let closed = false;
  let isDir = false;

  const emit = (e: PolicySourceEvent) => {
    for (const l of listeners) {
      try {
        l(e);
      } catch {
        // A failing subscriber (logger, metrics) must not stop reloads or other subscribers.
      }
    }
  };

  function reject(err: unknown, files: string[]): PolicySourceEvent {
    failures.inc();
    const e = err as { code?: unknown; message?: unknown; issues?: unknown };
    const event: PolicySourceEvent = {
      type: 'policy.rejected',
      code: typeof e?.code === 'string' ? e.code : 'PGW_POLICY_INVALID',
      message: typeof e?.message === 'string' ? e.message : String(err),
      ...(Array.isArray(e?.issues) && e.issues.length ? { issues: e.issues } : {}),
      files,
      ...(current ? { kept: { names: current.names, hash: current.hash } } : {}),
    };
    emit(event);
    return event;
  }

  function reload(): PolicySourceEvent | undefined {
    let set: ReturnType<typeof readPolicyFiles>;
    try {
      set = readPolicyFiles(opts.path);
    } catch (err) {
      // A missing path during a swap is normal for an instant; report it once per distinct state.
      const key = `error:${(err as PolicySourceError).code ?? 'read'}`;
      if (lastContent === key) return undefined;
      lastContent = key;
      return reject(err, []);
    }
    if (set.contentHash === lastContent) return undefined;
    lastContent = set.contentHash;
    const names = set.files.map((f) => f.name);
    let compiled: CompiledPolicy<T>;
    try {
      compiled = opts.compile(set.files);
    } catch (err) {
      return reject(err, names);
    }
    version++;
    current = { ...compiled, files: names, loadedAt: new Date(), version };
    const event: PolicySourceEvent = {
      type: 'policy.loaded',
      names: compiled.names,
      hash: compiled.hash,
      files: names,
      version,
    };
    emit(event);
    return event;
  }

  function schedule(): void {
    if (closed) return;
    if (debounce) clearTimeout(debounce);
    debounce = setTimeout(() => {
      debounce = undefined;
      reload();
    }, opts.debounceMs ?? 100);
  }

  function startWatch(): void {
    if (closed || watcher) return;
    const dir = isDir ? opts.path : dirname(opts.path);
    const file = basename(opts.path);
    try {
      // A single file is watched through its directory: editors and `kubectl cp` replace files by rename, which
      // would orphan a watch on the file's inode. In a ConfigMap mount the file is a symlink through `..data`,
      // and an update only renames `..data`: those events count too.
      watcher = watch(dir, { persistent: false }, (_event, name) => {
        if (isDir || name === null || name === file || name.startsWith('..')) schedule();
      });
      watcher.on('error', () => {
        watcher?.close();
        watcher = undefined;
        schedule();
      });
    } catch {
      watcher = undefined; // directory missing for now: the poll retries.
    }
  }

  return {
    start() {
      try {
        isDir = statSync(opts.path).isDirectory();
      } catch {
        isDir = false;
      }
      reload();
      startWatch();
      const pollMs = opts.pollMs ?? 5000;
      if (pollMs > 0) {
        poll = setInterval(() => {
          startWatch();
          reload();
        }, pollMs);
        poll.unref();
      }
    },
    current: () => current,
    ready: () => current !== undefined,
    reload,
    registerMetrics,
    on(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    close() {
      closed = true;
      if (debounce) clearTimeout(debounce);
      if (poll) clearInterval(poll);
      watcher?.close();
      watcher = undefined;
    },
  };
}
