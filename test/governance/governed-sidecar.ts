import { mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { inject } from 'vitest';
import { parse } from 'yaml';
import type { AuditSink } from '../../sidecar/src/audit/index.js';
import {
  type GovernanceEvent,
  type GovernedSidecar,
  type GovernedSidecarOptions,
  type PolicyHooksOptions,
  startGovernedSidecar,
} from '../../sidecar/src/governance/index.js';

const EXAMPLES = new URL('../../examples/', import.meta.url);

/** An example policy (examples/*.yaml) as an object, for tests to adjust (role, issuer) before writing it out. */
export function examplePolicy(file: string): Record<string, any> {
  return parse(readFileSync(new URL(file, EXAMPLES), 'utf8'));
}

/** Writes policy documents as a YAML stream (JSON documents are YAML). */
export function writePolicy(path: string, ...docs: object[]): void {
  writeFileSync(`${path}.tmp`, docs.map((d) => JSON.stringify(d, null, 1)).join('\n---\n'));
  // rename: the way editors and kubectl cp replace files; the source must see one complete version.
  renameSync(`${path}.tmp`, path);
}

export function memoryAudit(): AuditSink & { events: Record<string, any>[] } {
  const events: Record<string, any>[] = [];
  return { events, emit: (e) => void events.push(e), ready: () => true, close: async () => {} } as AuditSink & {
    events: Record<string, any>[];
  };
}

export interface Governed {
  gs: GovernedSidecar;
  port: number;
  policyFile: string;
  events: GovernanceEvent[];
  audit: ReturnType<typeof memoryAudit>;
  client(opts?: Partial<pg.ClientConfig>): Promise<pg.Client>;
  /** Waits until an event matching `pred` is among events[after...]. */
  waitEvent(pred: (e: GovernanceEvent) => boolean, after?: number, timeoutMs?: number): Promise<GovernanceEvent>;
  close(): Promise<void>;
}

/** Starts the real sidecar with `--policy FILE` semantics in front of the shared cluster, database `database`. */
export async function startGoverned(
  database: string,
  policy: object,
  opts: {
    governance?: Omit<PolicyHooksOptions, 'source' | 'policyName' | 'onEvent'>;
    http?: boolean;
    /** More documents for the same file, e.g. MaskingRules. */
    extraDocs?: object[];
    /** Other sidecar options, e.g. a NATS audit sink (which brings live control). */
    sidecar?: Partial<GovernedSidecarOptions>;
  } = {},
): Promise<Governed> {
  const shared = inject('pg');
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-gov-'));
  const policyFile = join(dir, 'policy.yaml');
  writePolicy(policyFile, policy, ...(opts.extraDocs ?? []));
  const events: GovernanceEvent[] = [];
  const audit = memoryAudit();
  const gs = await startGovernedSidecar({
    policyPath: policyFile,
    listenPort: 0,
    upstream: { host: shared.host, port: shared.port, database, sslmode: 'disable' },
    credentials: { username: 'app_scram', password: 'scram-pw-1' },
    audit,
    http: opts.http ? { host: '127.0.0.1', port: 0 } : false,
    debounceMs: 30,
    pollMs: 0,
    governance: { ...opts.governance, onEvent: (e) => events.push(e) },
    ...opts.sidecar,
  });
  const port = gs.listeners[0].sidecar.port;
  const clients: pg.Client[] = [];
  return {
    gs,
    port,
    policyFile,
    events,
    audit,
    async client(extra = {}) {
      const c = new pg.Client({
        host: '127.0.0.1',
        port,
        user: 'agent',
        database: 'app',
        password: 'unused',
        ...extra,
      });
      c.on('error', () => {});
      await c.connect();
      clients.push(c);
      return c;
    },
    waitEvent(pred, start = 0, timeoutMs = 5000) {
      return new Promise((resolve, reject) => {
        const t0 = Date.now();
        const tick = () => {
          const hit = events.slice(start).find(pred);
          if (hit) resolve(hit);
          else if (Date.now() - t0 > timeoutMs) reject(new Error(`no matching event within ${timeoutMs} ms`));
          else setTimeout(tick, 10);
        };
        tick();
      });
    },
    async close() {
      await Promise.all(clients.map((c) => c.end().catch(() => {})));
      await gs.close(500);
    },
  };
}

/** Runs SQL and returns the error (or undefined when it succeeded). */
export async function errorOf(
  c: pg.Client,
  sql: string,
  params?: unknown[],
): Promise<(Error & { code?: string }) | undefined> {
  try {
    await c.query(sql, params);
    return undefined;
  } catch (err) {
    return err as Error & { code?: string };
  }
}

/**
 * The real sidecar on one file of several policies (a listener each) in front of the shared cluster's `database`,
 * logging in as app_scram; `upstream` may add e.g. an sslmode, else each policy's own database settings apply.
 */
export async function startListeners(
  database: string,
  policies: object[],
  upstream: { sslmode?: 'disable' } = {},
): Promise<GovernedSidecar> {
  const shared = inject('pg');
  const file = join(mkdtempSync(join(tmpdir(), 'pgwarden-listeners-')), 'policies.yaml');
  writePolicy(file, ...policies);
  return startGovernedSidecar({
    policyPath: file,
    upstream: { host: shared.host, port: shared.port, database, ...upstream },
    credentials: { username: 'app_scram', password: 'scram-pw-1' },
    audit: memoryAudit(),
    pollMs: 0,
  });
}

/** A node-postgres client of a sidecar listener; errors after connecting are left to the test's queries. */
export async function listenerClient(port: number): Promise<pg.Client> {
  const c = new pg.Client({ host: '127.0.0.1', port, user: 'agent', database: 'app' });
  c.on('error', () => {});
  await c.connect();
  return c;
}

/** Reads until `ok` holds (every 20 ms, up to `timeoutMs`); throws naming `what` and the last value otherwise. */
export async function until<T>(
  what: string,
  read: () => Promise<T> | T,
  ok: (v: T) => boolean,
  timeoutMs = 5000,
): Promise<T> {
  let v = await read();
  for (let i = 0; i < timeoutMs / 20 && !ok(v); i++) {
    await new Promise((r) => setTimeout(r, 20));
    v = await read();
  }
  if (!ok(v)) throw new Error(`${what}: still ${JSON.stringify(v)}`);
  return v;
}
