import pg from 'pg';
import { inject } from 'vitest';
import { ROLES } from './postgres.js';

type Role = { user: string; password: string };

/** A client (not yet connected) of the suite's shared PostgreSQL as `role`, on `database`. */
export function sharedClient(role: Role, database: string): pg.Client {
  const shared = inject('pg');
  return new pg.Client({ host: shared.host, port: shared.port, database, user: role.user, password: role.password });
}

async function asSuperuser(sql: string): Promise<void> {
  const su = sharedClient(ROLES.superuser, 'postgres');
  await su.connect();
  try {
    await su.query(sql);
  } finally {
    await su.end();
  }
}

/**
 * A database of the file's own on the shared cluster, created afresh (one a failed run left is dropped, its sessions
 * ended): for tests that create functions, operators and types no other file may see in its catalog.
 */
export async function freshDatabase(name: string, owner: Role = ROLES.scram): Promise<void> {
  await asSuperuser(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await asSuperuser(`CREATE DATABASE ${name} OWNER ${owner.user}`);
}

/** Drops what freshDatabase made; a failure to is not the test's (the next run drops it first). */
export async function dropDatabase(name: string): Promise<void> {
  await asSuperuser(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => undefined);
}
