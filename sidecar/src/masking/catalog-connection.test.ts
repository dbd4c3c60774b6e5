/**
 * The catalog connection's per-query deadline against a real PostgreSQL: the server cancels a slow query or a lock
 * wait itself (statement_timeout, lock_timeout) and the connection stays; a connection that does not answer at all
 * (a relay that black-holes it) is given up at the deadline and replaced by the next query.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ROLES } from '../../../test/harness/index.js';
import { sharedClient } from '../../../test/harness/own-database.js';
import { StallingRelay } from '../../../test/harness/stalling-relay.js';
import { upstreamCatalogQuery } from './catalog-connection.js';
import { catalogFailureCause, MaskingIoError } from './errors.js';

const creds = { username: ROLES.scram.user, password: ROLES.scram.password };
const TIMEOUT_MS = 400;
let relay: StallingRelay;

const target = (port: number) => ({
  host: '127.0.0.1',
  port,
  database: inject('pg').database,
  sslmode: 'disable' as const,
});

async function failure(p: Promise<unknown>): Promise<MaskingIoError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(MaskingIoError);
  return err as MaskingIoError;
}

beforeAll(async () => {
  relay = new StallingRelay({ host: inject('pg').host, port: inject('pg').port });
  await relay.start();
});
afterAll(async () => {
  relay?.thaw();
  await relay?.stop();
});

describe('the catalog connection’s query timeout', () => {
  it('has PostgreSQL cancel a query or lock wait past it, and keeps the connection', async () => {
    const query = upstreamCatalogQuery(target(inject('pg').port), creds, { queryTimeoutMs: TIMEOUT_MS });
    const holder = sharedClient(ROLES.scram, inject('pg').database);
    await holder.connect();
    try {
      const pid = (await query('SELECT pg_backend_pid()::text AS pid'))[0].pid;
      const slow = await failure(query('SELECT pg_sleep(30)'));
      expect(slow.code).toBe('PGW_MASK_CATALOG_TIMEOUT');
      expect(slow.message).toMatch(/canceling statement due to statement timeout \(SQLSTATE 57014\)/);
      // lock_timeout covers every heavyweight lock wait; an advisory lock is one that disturbs no other test.
      await holder.query('SELECT pg_advisory_lock(73460129)');
      const locked = await failure(query('SELECT pg_advisory_lock(73460129)'));
      expect(locked.message).toMatch(/lock timeout \(SQLSTATE 55P03\)/);
      expect(catalogFailureCause(locked)).toBe('timeout');
      await holder.query('SELECT pg_advisory_unlock(73460129)');
      // An error answered by the server is not a timeout, and leaves the connection as it was.
      const missing = await failure(query('SELECT * FROM catalog_no_such_table'));
      expect(catalogFailureCause(missing)).toBe('error');
      expect((await query('SELECT pg_backend_pid()::text AS pid'))[0].pid).toBe(pid);
    } finally {
      await holder.end();
      query.close();
    }
  });

  it('closes a connection that does not answer at all, and the next query opens another', async () => {
    const query = upstreamCatalogQuery(target(relay.port), creds, { queryTimeoutMs: TIMEOUT_MS });
    try {
      const pid = (await query('SELECT pg_backend_pid()::text AS pid'))[0].pid;
      relay.freeze(relay.upstreamPorts());
      const silent = await failure(query('SELECT 1'));
      expect(silent.code).toBe('PGW_MASK_CATALOG_TIMEOUT');
      expect(silent.message).toBe(`catalog connection did not answer within ${TIMEOUT_MS + 1000} ms; closed it`);
      // Opening a new one is bounded by the same deadline while the network still swallows everything.
      expect(catalogFailureCause(await failure(query('SELECT 1')))).toBe('timeout');
      relay.thaw();
      const again = (await query('SELECT pg_backend_pid()::text AS pid'))[0].pid;
      expect(again).not.toBe(pid);
    } finally {
      relay.thaw();
      query.close();
    }
  });
});
