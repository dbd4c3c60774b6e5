import pg from 'pg';
import { inject } from 'vitest';
import type { AuditSink } from '../audit/index.js';
import type { ProxyHooks } from '../proxy/hooks.js';
import { type Sidecar, type SidecarOptions, startSidecar } from '../start-sidecar.js';
import type { SslMode } from '../upstream/connect.js';

/** Roles of the shared test cluster (test/harness/postgres.ts ROLES). */
export const ROLE = {
  super: { username: 'postgres', password: 'super-secret-pw' },
  scram: { username: 'app_scram', password: 'scram-pw-1' },
  md5: { username: 'app_md5', password: 'md5-pw-2' },
  clear: { username: 'app_clear', password: 'clear-pw-3' },
  tls: { username: 'app_tls', password: 'tls-pw-4' },
} as const;

/** An AuditSink that keeps events in memory, for assertions. */
export function memorySink(): AuditSink & { events: Record<string, unknown>[] } {
  const events: Record<string, unknown>[] = [];
  return { events, emit: (e) => void events.push(e), ready: () => true, close: async () => {} };
}

export interface Fixture {
  sidecar: Sidecar;
  audit: ReturnType<typeof memorySink>;
  client(opts?: Partial<pg.ClientConfig>): Promise<pg.Client>;
}

/** Starts a sidecar on a free loopback port in front of the shared PostgreSQL. */
export async function startFixture(
  opts: {
    role?: keyof typeof ROLE;
    sslmode?: SslMode;
    hooks?: ProxyHooks;
    caFile?: string;
    host?: string;
  } & Partial<SidecarOptions> = {},
): Promise<Fixture> {
  const shared = inject('pg');
  const audit = memorySink();
  const { role, sslmode, caFile, host, ...rest } = opts;
  const sidecar = await startSidecar({
    listen: { host: '127.0.0.1', port: 0 },
    upstream: {
      host: host ?? shared.host,
      port: shared.port,
      database: shared.database,
      sslmode: sslmode ?? 'disable',
      caFile: caFile ?? shared.caFile,
    },
    credentials: ROLE[role ?? 'scram'],
    audit,
    ...rest,
  });
  const clients: pg.Client[] = [];
  return {
    sidecar,
    audit,
    async client(extra = {}) {
      const c = new pg.Client({
        host: '127.0.0.1',
        port: sidecar.port,
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
  };
}

/**
 * Waits (up to ~5 s) until a statement whose text ends with `marker` runs upstream: a cancel that arrives before a
 * statement runs is ignored by PostgreSQL.
 */
export async function untilRunning(fx: Fixture, marker: string): Promise<void> {
  const watcher = await fx.client();
  try {
    for (let i = 0; i < 200; i++) {
      const r = await watcher.query(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%' || $1 AND pid <> pg_backend_pid()",
        [marker],
      );
      if (r.rows[0].n > 0) return;
      await new Promise((res) => setTimeout(res, 25));
    }
  } finally {
    await watcher.end();
  }
}
