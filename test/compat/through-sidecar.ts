import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startGovernedSidecar, startSidecar } from '@pgwarden/sidecar';
import type { SharedPostgres } from '../harness/global-setup.js';
import { ROLES } from '../harness/index.js';

/** Where a compatibility test's client connects: the sidecar's listener, and the login the client presents. */
export interface SidecarTarget {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  /** `postgres://` URL for clients that take one (sslmode=disable: the sidecar listens on loopback in clear). */
  url: string;
  /** libpq environment for psql/pgbench/psycopg2 (PGHOST, PGPORT, ...). */
  env: NodeJS.ProcessEnv;
  /** Audit events the sidecar emitted so far (empty in direct mode). */
  events: Record<string, unknown>[];
  close(): Promise<void>;
}

export interface TargetOptions {
  /** Upstream TLS mode; verify-full uses the harness CA and host name `localhost`. */
  sslmode?: 'disable' | 'verify-full';
  /** Upstream database (default the harness's `app`). */
  database?: string;
  /**
   * A DatabaseAccessPolicy spec: the sidecar is then started from a policy file as in production (statements parsed
   * and decided by the policy engine) instead of with allow-all hooks. Its database host/name come from the harness.
   */
  policySpec?: Record<string, unknown>;
}

/**
 * Starts the sidecar in-process in front of the shared harness PostgreSQL, logging in upstream as app_scram.
 * Clients present the same name and password; the sidecar holds the upstream credential itself.
 */
export async function startSidecarTarget(pg: SharedPostgres, opts: TargetOptions = {}): Promise<SidecarTarget> {
  const database = opts.database ?? pg.database;
  // PGWARDEN_COMPAT_TARGET=direct runs the same suite straight against PostgreSQL: it proves the expectations
  // below are PostgreSQL's own behaviour, so a failure through the sidecar is the sidecar's.
  if (process.env.PGWARDEN_COMPAT_TARGET === 'direct') return target(pg.host, pg.port, database, [], async () => {});
  const events: Record<string, unknown>[] = [];
  if (opts.policySpec) return governedTarget(pg, database, opts.policySpec, events);
  const tls = opts.sslmode === 'verify-full';
  const sidecar = await startSidecar({
    listen: { host: '127.0.0.1', port: 0 },
    upstream: tls
      ? { host: 'localhost', port: pg.port, database, sslmode: 'verify-full', caFile: pg.caFile }
      : { host: pg.host, port: pg.port, database, sslmode: 'disable' },
    credentials: { username: ROLES.scram.user, password: ROLES.scram.password },
    audit: { emit: (e) => void events.push(e), ready: () => true, close: async () => {} },
    http: false,
  });
  return target(sidecar.host, sidecar.port, database, events, () => sidecar.close(1000));
}

/**
 * The two sidecars every compatibility suite runs through: allow-all hooks, and one started from a policy file (every
 * statement parsed and decided, as in production) that allows what the suites do, DDL included.
 */
export const SIDECAR_KINDS: Array<[label: string, policySpec: Record<string, unknown> | undefined]> = [
  ['the sidecar', undefined],
  ['a sidecar started from a policy', { defaultAction: 'allow', guardrails: { blockDDL: false } }],
];

/** A client script's stdout, one JSON object per line with a `check` name, as a map from check name to object. */
export function parseChecks(stdout: string): Record<string, any> {
  return Object.fromEntries(
    stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line))
      .map((c) => [c.check, c]),
  );
}

async function governedTarget(
  pg: SharedPostgres,
  database: string,
  spec: Record<string, unknown>,
  events: Record<string, unknown>[],
): Promise<SidecarTarget> {
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-compat-policy-'));
  const policyPath = join(dir, 'policy.json');
  const policy = {
    apiVersion: 'pgwarden.dev/v1alpha1',
    kind: 'DatabaseAccessPolicy',
    metadata: { name: 'compat' },
    spec: { ...spec, database: { host: pg.host, name: database } },
  };
  writeFileSync(policyPath, JSON.stringify(policy));
  const gs = await startGovernedSidecar({
    policyPath,
    listenPort: 0,
    upstream: { host: pg.host, port: pg.port, database, sslmode: 'disable' },
    credentials: { username: ROLES.scram.user, password: ROLES.scram.password },
    audit: { emit: (e) => void events.push(e), ready: () => true, close: async () => {} },
    http: false,
    pollMs: 0,
  });
  return target('127.0.0.1', gs.listeners[0].sidecar.port, database, events, async () => {
    await gs.close(1000);
    rmSync(dir, { recursive: true, force: true });
  });
}

function target(
  host: string,
  port: number,
  database: string,
  events: Record<string, unknown>[],
  close: () => Promise<void>,
): SidecarTarget {
  const user = ROLES.scram.user;
  const password = ROLES.scram.password;
  return {
    host,
    port,
    user,
    password,
    database,
    url: `postgres://${user}:${encodeURIComponent(password)}@${host}:${port}/${database}?sslmode=disable`,
    env: {
      ...process.env,
      PGHOST: host,
      PGPORT: String(port),
      PGUSER: user,
      PGPASSWORD: password,
      PGDATABASE: database,
      PGSSLMODE: 'disable',
      PGCONNECT_TIMEOUT: '10',
    },
    events,
    close,
  };
}

/** Runs SQL as the harness superuser over the Unix socket (setup that app_scram may not do, e.g. CREATE DATABASE). */
export function superuserSql(pg: SharedPostgres, sql: string, database = 'postgres'): string {
  const r = spawnSync(
    'psql',
    [
      '-h',
      pg.socketDir,
      '-p',
      String(pg.port),
      '-U',
      'postgres',
      '-d',
      database,
      '-XAtq',
      '-v',
      'ON_ERROR_STOP=1',
      '-c',
      sql,
    ],
    {
      encoding: 'utf8',
    },
  );
  if (r.status !== 0) throw new Error(`psql as superuser failed: ${r.stderr}`);
  return r.stdout;
}

/** A short random suffix so tests sharing the harness database never collide on table names. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
}

export interface ClientRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs an external client (psql, pgbench, python3, java) asynchronously. Never spawnSync here: the sidecar runs
 * in this process, and a blocked event loop would leave the client's connection unanswered.
 */
export function runClient(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<ClientRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/** True when the suite runs through the sidecar (not PGWARDEN_COMPAT_TARGET=direct), so audit events exist. */
export const throughSidecar = process.env.PGWARDEN_COMPAT_TARGET !== 'direct';

/** Audit events of type `statement` whose SQL text contains `fragment`. */
export function auditedStatements(target: SidecarTarget, fragment: string): Record<string, any>[] {
  return target.events.filter(
    (e: Record<string, any>) => e.type === 'statement' && String(e.statement?.text ?? '').includes(fragment),
  );
}
