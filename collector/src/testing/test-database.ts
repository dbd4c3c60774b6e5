import { randomBytes } from 'node:crypto';
import pg from 'pg';

export interface PgServer {
  host: string;
  port: number;
}

/** A fresh database on a test PostgreSQL server (superuser connection), dropped by `drop()`. */
export async function createTestDatabase(
  server: PgServer,
  superuser: { user: string; password: string },
): Promise<{ url: string; name: string; drop(): Promise<void> }> {
  const name = `collector_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({
    host: server.host,
    port: server.port,
    user: superuser.user,
    password: superuser.password,
    database: 'postgres',
  });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = `postgres://${encodeURIComponent(superuser.user)}:${encodeURIComponent(superuser.password)}@${server.host}:${server.port}/${name}`;
  return {
    url,
    name,
    drop: async () => {
      const c = new pg.Client({
        host: server.host,
        port: server.port,
        user: superuser.user,
        password: superuser.password,
        database: 'postgres',
      });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}
