import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';
import { seedSql } from './seed-sql.js';

export interface EmbeddedPostgres {
  host: string;
  port: number;
  /** PGlite's database and (trusted, password-less) user. */
  database: string;
  user: string;
  version: string;
  stop(): Promise<void>;
}

/**
 * PostgreSQL compiled to WASM (PGlite), in memory, served on a loopback TCP port by pglite-socket and seeded with
 * the demo schema. PGlite runs one connection's work at a time; the socket server queues the others.
 */
export async function startEmbeddedPostgres(port: number): Promise<EmbeddedPostgres> {
  const db = await PGlite.create();
  await db.exec(seedSql());
  const version = (await db.query<{ v: string }>("SELECT current_setting('server_version') AS v")).rows[0].v;
  const server = new PGLiteSocketServer({ db, host: '127.0.0.1', port, maxConnections: 8 });
  await server.start();
  let stopped: Promise<void> | undefined;
  return {
    host: '127.0.0.1',
    port,
    database: 'postgres',
    user: 'postgres',
    version,
    stop() {
      stopped ??= (async () => {
        await server.stop();
        await db.close();
      })();
      return stopped;
    },
  };
}
