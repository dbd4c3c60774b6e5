import type { MaskingSettings } from '@pgwarden/policy';
import pg from 'pg';
import { inject } from 'vitest';
import { allowAllHooks, type ProxyHooks, type Sidecar, startSidecar } from '../../sidecar/src/index.js';
import {
  CatalogCache,
  type CatalogCacheOptions,
  createMasker,
  upstreamCatalogQuery,
  withMasking,
} from '../../sidecar/src/masking/index.js';
import { ROLES } from '../harness/index.js';
import { ByteTap } from './byte-tap.js';
import { adminClient, maskingSpec } from './seed.js';

export interface MaskedSidecar {
  sidecar: Sidecar;
  tap: ByteTap;
  catalog: CatalogCache;
  /** A client through the byte tap; user `compliance` gets the unmaskedFor exemption. */
  client(opts?: { binary?: boolean; user?: string }): Promise<pg.Client>;
  stop(): Promise<void>;
}

/** The real sidecar (allow-all policy) with masking for `schema`'s planted tables, behind a byte tap. */
export async function startMaskedSidecar(
  schema: string,
  settings: MaskingSettings = {},
  /** `searchPath`: given to PostgreSQL at login in place of the client's, as the governed sidecar pins it. */
  opts: { database?: string; catalog?: CatalogCacheOptions; searchPath?: string } = {},
): Promise<MaskedSidecar> {
  const shared = inject('pg');
  const database = opts.database ?? shared.database;
  const upstream = { host: shared.host, port: shared.port, database, sslmode: 'disable' as const };
  const creds = { username: ROLES.scram.user, password: ROLES.scram.password };
  const query = upstreamCatalogQuery(upstream, creds);
  const catalog = new CatalogCache(query, opts.catalog);
  const rules = [{ name: 'pii', spec: maskingSpec(schema) }];
  const allow = allowAllHooks();
  const pin = opts.searchPath;
  const inner: ProxyHooks =
    pin === undefined
      ? allow
      : {
          ...allow,
          openSession: (info) => ({ ...allow.openSession(info), startupParams: () => ({ search_path: pin }) }),
        };
  const hooks = withMasking(inner, (info, searchPath) =>
    createMasker({
      searchPath,
      rules,
      settings,
      catalog,
      subject: { groups: info.startup.user === 'compliance' ? ['compliance'] : [] },
    }),
  );
  const sidecar = await startSidecar({
    listen: { host: '127.0.0.1', port: 0 },
    upstream,
    credentials: creds,
    hooks,
    audit: { emit: () => {}, ready: () => true, close: async () => {} },
  });
  const tap = new ByteTap({ host: '127.0.0.1', port: sidecar.port });
  await tap.start();
  const clients: pg.Client[] = [];
  return {
    sidecar,
    tap,
    catalog,
    async client(opts = {}) {
      const c = new pg.Client({
        host: '127.0.0.1',
        port: tap.port,
        user: opts.user ?? 'agent',
        database,
        password: 'unused',
        binary: opts.binary,
      });
      c.on('error', () => {});
      c.on('notice', () => {});
      await c.connect();
      clients.push(c);
      return c;
    },
    async stop() {
      await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
      await tap.stop();
      await sidecar.close(100);
      query.close();
    },
  };
}

export interface QueryOutcome {
  rows: Record<string, unknown>[];
  fields: string[];
}

/**
 * `sql` on PostgreSQL directly (as the seeding admin) and through `via`, each after `setup` when given, and the bytes
 * the sidecar's client got for it: what masking changed, and what reached the wire.
 */
export async function directAndMasked(
  via: MaskedSidecar,
  sql: string,
  setup?: string,
): Promise<{ direct: QueryOutcome; masked: QueryOutcome; bytes: Buffer }> {
  const admin = adminClient();
  await admin.connect();
  let direct: pg.QueryResult;
  try {
    if (setup !== undefined) await admin.query(setup);
    direct = await admin.query(sql);
  } finally {
    await admin.end();
  }
  const c = await via.client();
  via.tap.take();
  let masked: pg.QueryResult;
  try {
    if (setup !== undefined) await c.query(setup);
    masked = await c.query(sql);
  } finally {
    await c.end();
  }
  const names = (r: pg.QueryResult) => r.fields.map((f) => f.name);
  return {
    direct: { rows: direct.rows, fields: names(direct) },
    masked: { rows: masked.rows, fields: names(masked) },
    bytes: via.tap.take(),
  };
}
