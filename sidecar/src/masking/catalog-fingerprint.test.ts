/**
 * FINGERPRINT_SQL against a real PostgreSQL: it must move when a column's type becomes or stops being a domain (whose
 * CHECK runs user code), which leaves pg_class alone, on any column change while user-written operators exist, and stay put on the maintenance that rewrites a table without changing it (so another
 * connection's TRUNCATE or VACUUM FULL causes no reload), and on temporary tables.
 */
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROLES } from '../../../test/harness/index.js';
import { dropDatabase, freshDatabase, sharedClient } from '../../../test/harness/own-database.js';
import { FINGERPRINT_SQL } from './catalog-cache.js';

const DB = 'mask_fingerprint';
let c: pg.Client;

async function fingerprint(): Promise<string> {
  return (await c.query<{ f: string }>(FINGERPRINT_SQL)).rows[0]?.f ?? '';
}

beforeAll(async () => {
  await freshDatabase(DB);
  c = sharedClient(ROLES.scram, DB);
  await c.connect();
  await c.query(`CREATE DOMAIN plain_dom AS text`);
  await c.query(`CREATE DOMAIN checked_dom AS text CHECK (length(VALUE) < 100)`);
  await c.query(`CREATE TABLE t (id int PRIMARY KEY, v varchar(10), w text, x text, y text, z text)`);
  await c.query(`INSERT INTO t SELECT i, 'v', repeat('w', 5000), 'x', 'y', 'z' FROM generate_series(1, 50) i`);
});

afterAll(async () => {
  await c?.end();
  await dropDatabase(DB);
});

describe('the catalog fingerprint', () => {
  it('stays put on maintenance that rewrites or analyses a table, and on temporary tables', async () => {
    const before = await fingerprint();
    for (const sql of [
      'VACUUM t',
      'ANALYZE t',
      'VACUUM FULL t',
      'CLUSTER t USING t_pkey',
      'REINDEX TABLE t',
      'TRUNCATE t',
      `INSERT INTO t VALUES (1, 'v', 'w', 'x', 'y', 'z')`,
      'CREATE TEMP TABLE scratch (a int, b text, c plain_dom)',
      'ALTER TABLE scratch ALTER COLUMN b TYPE checked_dom',
      'DROP TABLE scratch',
    ]) {
      await c.query(sql);
      expect(await fingerprint(), sql).toBe(before);
    }
  });

  it('moves when a column changes type to, from or between domains, with or without a table rewrite', async () => {
    for (const sql of [
      // No rewrite (a domain without constraints over the same type): pg_class is not updated.
      'ALTER TABLE t ALTER COLUMN w TYPE plain_dom',
      // A domain with a CHECK: a rewrite, and the CHECK runs on every write from now on.
      'ALTER TABLE t ALTER COLUMN x TYPE checked_dom',
      'ALTER TABLE t ALTER COLUMN w TYPE checked_dom',
      'ALTER TABLE t ALTER COLUMN x TYPE plain_dom',
      'ALTER TABLE t ALTER COLUMN x TYPE text',
      'ALTER TABLE t ALTER COLUMN y TYPE checked_dom[] USING ARRAY[y]',
      'ALTER TABLE t DROP COLUMN w',
    ]) {
      const before = await fingerprint();
      await c.query(sql);
      expect(await fingerprint(), sql).not.toBe(before);
    }
  });

  it('while a user-written operator exists: moves on any column change, still not on maintenance', async () => {
    await c.query(`CREATE FUNCTION veq(varchar, varchar) RETURNS boolean LANGUAGE sql AS 'SELECT $1::text = $2::text'`);
    await c.query('CREATE OPERATOR public.= (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = veq)');
    await c.query('CREATE TABLE u (id int PRIMARY KEY, a text, b varchar(10), c text, d text)');
    await c.query(`INSERT INTO u SELECT i, repeat('a', 5000), 'b', 'c', 'd' FROM generate_series(1, 20) i`);
    const before = await fingerprint();
    for (const sql of ['VACUUM FULL u', 'CLUSTER u USING u_pkey', 'REINDEX TABLE u', 'TRUNCATE u', 'ANALYZE u'])
      await c.query(sql);
    expect(await fingerprint()).toBe(before);
    for (const sql of [
      // Between built-in types, without a rewrite: `a = 'x'` can now choose the user `=` (varchar, varchar).
      'ALTER TABLE u ALTER COLUMN a TYPE varchar',
      'ALTER TABLE u ALTER COLUMN b TYPE varchar(20)',
      'ALTER TABLE u RENAME COLUMN c TO c2',
      'ALTER TABLE u DROP COLUMN d',
    ]) {
      const was = await fingerprint();
      await c.query(sql);
      expect(await fingerprint(), sql).not.toBe(was);
    }
  });

  it('moves when two columns swap domains in one transaction', async () => {
    await c.query('ALTER TABLE t ALTER COLUMN v TYPE plain_dom, ALTER COLUMN z TYPE checked_dom');
    const before = await fingerprint();
    await c.query('ALTER TABLE t ALTER COLUMN v TYPE checked_dom, ALTER COLUMN z TYPE plain_dom');
    expect(await fingerprint()).not.toBe(before);
  });
});
