import pg from 'pg';
import { CollectorError, redactUrl } from '../errors.js';
import { CopyIn, type CopyPayload } from './copy-in.js';

/** The few operations the store needs, over either a PostgreSQL pool or embedded PGlite. */
export interface SqlRunner {
  /**
   * `prepareAs` names a server-side prepared statement for a hot statement (PostgreSQL then parses and analyses
   * it once per connection instead of on every execution); the embedded store ignores it.
   */
  query<T = Record<string, unknown>>(text: string, params?: unknown[], prepareAs?: string): Promise<T[]>;
  /**
   * `COPY <table> (<columns>) FROM STDIN` with `data` in COPY's text format; resolves with the rows copied.
   * Only PostgreSQL connections offer it (PGlite has no COPY FROM STDIN): callers fall back to INSERT. A
   * CopyPayload is sent from its own buffer and released for reuse once written.
   */
  copyIn?(text: string, data: Buffer | CopyPayload): Promise<number>;
}

/** A connection of its own, outside the pool, for state that lives as long as a session (a session-level lock). */
export interface SqlSession extends SqlRunner {
  /** Settles once the connection has ended or failed (terminated, network lost); every query fails after that. */
  readonly ended: Promise<Error>;
  close(): Promise<void>;
}

export interface SqlClient extends SqlRunner {
  readonly kind: 'postgres' | 'pglite';
  /**
   * PostgreSQL only (PGlite is one process's database, so has nobody to share a session lock with).
   * `applicationName` shows in pg_stat_activity; a query not answered within `queryTimeoutMs` fails.
   */
  session?(opts: { applicationName: string; queryTimeoutMs: number }): Promise<SqlSession>;
  /**
   * Runs `fn` in one transaction; PGlite runs one transaction at a time, a pool may run several. `lock`: a
   * transaction-level advisory lock taken before `fn` runs, in the same round trip as BEGIN.
   */
  transaction<T>(fn: (tx: SqlRunner) => Promise<T>, opts?: { lock?: number }): Promise<T>;
  close(): Promise<void>;
}

export async function connectPostgres(url: string, opts: { max?: number } = {}): Promise<SqlClient> {
  const pool = new pg.Pool({ connectionString: url, max: opts.max ?? 4 });
  // An idle client losing its server (restart, network) must not crash the process; the next query reconnects.
  pool.on('error', () => {});
  try {
    const c = await pool.connect();
    c.release();
  } catch (err) {
    await pool.end().catch(() => {});
    throw new CollectorError(
      'COLLECTOR_STORE',
      `cannot connect to store ${redactUrl(url)}: ${(err as Error).message}`,
      { cause: err },
    );
  }
  return {
    kind: 'postgres',
    async query(text, params) {
      const r = await pool.query(text, params as unknown[]);
      return r.rows;
    },
    async transaction(fn, opts) {
      const c = await pool.connect();
      try {
        // One simple-query message may hold several statements (protocol-flow.html#PROTOCOL-FLOW-MULTI-STATEMENT).
        await c.query(opts?.lock === undefined ? 'BEGIN' : `BEGIN; ${advisoryLock(opts.lock)}`);
        const out = await fn({
          query: async (t, p, name) =>
            (name ? await c.query({ name, text: t, values: p as unknown[] }) : await c.query(t, p as unknown[])).rows,
          copyIn: (t, data) =>
            new Promise<number>((resolve, reject) => {
              const copy = new CopyIn(t, data);
              copy.callback = (err, rows) => (err ? reject(err) : resolve(rows ?? 0));
              c.query(copy);
            }),
        });
        await c.query('COMMIT');
        return out;
      } catch (err) {
        await c.query('ROLLBACK').catch(() => {});
        throw err;
      } finally {
        c.release();
      }
    },
    async session({ applicationName, queryTimeoutMs }) {
      const c = new pg.Client({
        connectionString: url,
        application_name: applicationName,
        query_timeout: queryTimeoutMs,
        connectionTimeoutMillis: queryTimeoutMs,
        keepAlive: true,
      });
      let settle: (err: Error) => void = () => {};
      const ended = new Promise<Error>((resolve) => (settle = resolve));
      // Without an 'error' listener a terminated session would crash the process.
      c.on('error', (err) => settle(err));
      c.on('end', () => settle(new Error('connection closed')));
      // end() waits for the server's goodbye, which a dead network never sends: give up waiting after the timeout.
      const end = () =>
        Promise.race([c.end().catch(() => {}), new Promise<void>((r) => setTimeout(r, queryTimeoutMs).unref())]);
      try {
        await c.connect();
      } catch (err) {
        await end();
        throw new CollectorError('COLLECTOR_STORE', `cannot connect to store: ${(err as Error).message}`, {
          cause: err,
        });
      }
      return {
        query: async (t, p) => (await c.query(t, p as unknown[])).rows,
        ended,
        close: end,
      };
    },
    close: () => pool.end(),
  };
}

/** Embedded PostgreSQL (PGlite, WASM): in memory when `dataDir` is undefined, else persisted there. */
export async function openPglite(dataDir?: string): Promise<SqlClient> {
  const { PGlite } = await import('@electric-sql/pglite');
  const db = new PGlite(dataDir);
  await db.waitReady;
  return {
    kind: 'pglite',
    async query(text, params) {
      const r = await db.query(text, params as unknown[]);
      return r.rows as never[];
    },
    transaction: (fn, opts) =>
      db.transaction(async (tx) => {
        if (opts?.lock !== undefined) await tx.query(advisoryLock(opts.lock));
        return fn({ query: async (t, p) => (await tx.query(t, p as unknown[])).rows as never[] });
      }),
    close: () => db.close(),
  };
}

/** https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-ADVISORY-LOCKS */
function advisoryLock(key: number): string {
  if (!Number.isSafeInteger(key)) throw new TypeError(`advisory lock key ${key} is not an integer`);
  return `SELECT pg_advisory_xact_lock(${key})`;
}
