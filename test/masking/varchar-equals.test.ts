import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROLES } from '../harness/index.js';
import { dropDatabase, freshDatabase, sharedClient } from '../harness/own-database.js';
import { findLeaks } from './byte-tap.js';
import { type MaskedSidecar, startMaskedSidecar } from './masked-sidecar.js';

const DB = 'mask_varchar_eq';
const S = 'vareq';
const NAME = 'Ottilie Varcharvalue Brennecke';
let side: MaskedSidecar;

/** A function on (`args`) that raises the first customer's name whenever PostgreSQL calls it. */
const peek = (name: string, args: string) =>
  `CREATE FUNCTION ${S}.${name}(${args}) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN
     RAISE NOTICE 'peek: %', (SELECT full_name FROM ${S}.customers WHERE id = 1);
     RETURN true; END $$`;

beforeAll(async () => {
  await freshDatabase(DB);
  const c = sharedClient(ROLES.scram, DB);
  await c.connect();
  try {
    await c.query(`CREATE SCHEMA ${S}`);
    await c.query(`CREATE TABLE ${S}.customers (id int PRIMARY KEY, full_name text, email text, ssn varchar(11),
      phone text, card_number text, secret_note text, city text)`);
    await c.query(`INSERT INTO ${S}.customers (id, full_name) VALUES (1, $1)`, [NAME]);
    await c.query(`CREATE TABLE ${S}.items (id int, code varchar(5), other varchar(5), label text)`);
    await c.query(`INSERT INTO ${S}.items VALUES (1, 'a', 'a', 'x')`);
    // User `=` operators on types varchar does not convert to implicitly.
    await c.query(peek('date_eq', 'date, date'));
    await c.query(`CREATE OPERATOR ${S}.= (LEFTARG = date, RIGHTARG = date, FUNCTION = ${S}.date_eq)`);
    await c.query(peek('date_text_eq', 'date, text'));
    await c.query(`CREATE OPERATOR ${S}.= (LEFTARG = date, RIGHTARG = text, FUNCTION = ${S}.date_text_eq)`);
  } finally {
    await c.end();
  }
  // The periodic reload out of reach: only the catalog checks (at most once a second) see another connection's DDL.
  side = await startMaskedSidecar(S, {}, { database: DB, catalog: { maxAgeMs: 3_600_000 } });
});

afterAll(async () => {
  await side?.stop();
  await dropDatabase(DB);
});

/** The statements on a fresh client through the sidecar, the user's schema first on the search_path. */
async function through(sqls: string[]): Promise<{ leaks: string[]; notices: string[]; errors: string[] }> {
  const c = await side.client();
  const notices: string[] = [];
  const errors: string[] = [];
  c.on('notice', (n) => notices.push(n.message ?? ''));
  side.tap.take();
  try {
    for (const sql of [`SET search_path TO ${S}, public`, ...sqls])
      await c.query(sql).catch((e: Error) => errors.push(e.message));
  } finally {
    await c.end().catch(() => undefined);
  }
  return { leaks: findLeaks(side.tap.take(), [NAME]), notices, errors };
}

const USES = [
  `SELECT id FROM items WHERE code = 'a'`,
  'SELECT id FROM items WHERE code = other',
  `SELECT id FROM items WHERE code IN ('a', 'b')`,
];

describe('`=` on varchar columns', () => {
  it('a user `=` PostgreSQL cannot choose for them leaves messages alone', async () => {
    const r = await through([...USES, 'SELECT 1/0']);
    // PostgreSQL ran none of the user operators (they would have raised a notice) ...
    expect(r.notices).toEqual([]);
    // ... and the sidecar did not take them for user code: the error after them is not withheld.
    expect(r.errors).toEqual(['division by zero']);
  });

  it('a user `=` on (varchar, varchar), created by another connection, makes them withheld', async () => {
    const admin = sharedClient(ROLES.scram, DB);
    await admin.connect();
    try {
      await admin.query(peek('varchar_eq', 'varchar, varchar'));
      await admin.query(`CREATE OPERATOR ${S}.= (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = ${S}.varchar_eq)`);
    } finally {
      await admin.end();
    }
    for (const sql of USES) {
      // Polled: the catalog check that sees the new operator runs at most once a second.
      let r = await through([sql, 'SELECT 1/0']);
      for (const until = Date.now() + 20_000; !r.errors[0]?.includes('withheld') && Date.now() < until; ) {
        await new Promise((res) => setTimeout(res, 250));
        r = await through([sql, 'SELECT 1/0']);
      }
      expect(r.errors, sql).toHaveLength(1);
      expect(r.errors[0], sql).toContain('withheld');
      // PostgreSQL did choose the user operator.
      expect(r.notices.length, sql).toBeGreaterThan(0);
      expect(r.leaks, sql).toEqual([]);
    }
  });
});

describe('a text column another connection retypes to varchar (no rewrite) beside a user `=` (varchar, varchar)', () => {
  it('is seen by the catalog check: `=` on it is withheld from then on', async () => {
    const sql = `SELECT id FROM items WHERE label = 'x'`;
    // text = text is pg_catalog's exact match: the user operator cannot be chosen.
    const before = await through([sql, 'SELECT 1/0']);
    expect(before.notices).toEqual([]);
    expect(before.errors).toEqual(['division by zero']);
    const admin = sharedClient(ROLES.scram, DB);
    admin.on('notice', () => {});
    await admin.connect();
    try {
      await admin.query(`ALTER TABLE ${S}.items ALTER COLUMN label TYPE varchar`);
    } finally {
      await admin.end();
    }
    let r = await through([sql, 'SELECT 1/0']);
    for (const until = Date.now() + 20_000; !r.errors[0]?.includes('withheld') && Date.now() < until; ) {
      await new Promise((res) => setTimeout(res, 250));
      r = await through([sql, 'SELECT 1/0']);
    }
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toContain('withheld');
    expect(r.notices.length).toBeGreaterThan(0);
    expect(r.leaks).toEqual([]);
  });
});
