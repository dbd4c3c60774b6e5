import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROLES } from '../harness/index.js';
import { dropDatabase, freshDatabase, sharedClient } from '../harness/own-database.js';
import { findLeaks } from './byte-tap.js';
import { type MaskedSidecar, startMaskedSidecar } from './masked-sidecar.js';

// A user `=` (text, text) that raises what it compares. pg_catalog has an `=` of the same operand types, and among
// operators of one name and the same types only the one the search_path reaches first is a candidate: pg_catalog,
// searched first unless the path names it. So PostgreSQL never chooses the user's for text or varchar operands unless
// the session puts pg_catalog after its schema. Through the real sidecar against PostgreSQL, which says by its notices
// which operator it ran: messages are withheld exactly when the user's may run.
const DB = 'mask_hidden_op';
const S = 'hidop';
const NAME = 'Wendelin Hiddenop Quarrier';
/** The path the sidecar gives at login, as the governed sidecar pins one. */
const PINNED = `${S}, public`;
let pinned: MaskedSidecar;
let unpinned: MaskedSidecar;

beforeAll(async () => {
  await freshDatabase(DB);
  const c = sharedClient(ROLES.scram, DB);
  await c.connect();
  try {
    await c.query(`CREATE SCHEMA ${S}`);
    await c.query(`CREATE TABLE ${S}.customers (id int PRIMARY KEY, full_name text, email text, ssn varchar(11),
      phone text, card_number text, secret_note text, city text)`);
    await c.query(`INSERT INTO ${S}.customers (id, full_name) VALUES (1, $1)`, [NAME]);
    await c.query(`CREATE TABLE ${S}.items (id int, code varchar(5), label text)`);
    await c.query(`INSERT INTO ${S}.items VALUES (1, 'a', 'x')`);
    await c.query(`CREATE FUNCTION ${S}.text_eq(text, text) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN
      RAISE NOTICE 'peek: %', (SELECT full_name FROM ${S}.customers WHERE id = 1); RETURN $1 OPERATOR(pg_catalog.=) $2;
      END $$`);
    await c.query(`CREATE OPERATOR ${S}.= (LEFTARG = text, RIGHTARG = text, FUNCTION = ${S}.text_eq)`);
  } finally {
    await c.end();
  }
  pinned = await startMaskedSidecar(S, {}, { database: DB, searchPath: PINNED });
  unpinned = await startMaskedSidecar(S, {}, { database: DB });
}, 60_000);

afterAll(async () => {
  await pinned?.stop();
  await unpinned?.stop();
  await dropDatabase(DB);
});

/** The statements on a fresh client through `via`, then `SELECT 1/0`, whose error is withheld or not. */
async function through(via: MaskedSidecar, sqls: string[]) {
  const c = await via.client();
  const notices: string[] = [];
  const errors: string[] = [];
  c.on('notice', (n) => notices.push(n.message ?? ''));
  via.tap.take();
  try {
    for (const sql of [...sqls, 'SELECT 1/0']) await c.query(sql).catch((e: Error) => errors.push(e.message));
  } finally {
    await c.end().catch(() => undefined);
  }
  return { leaks: findLeaks(via.tap.take(), [NAME]), notices, errors };
}

const USES = [
  `SELECT id FROM ${S}.items WHERE code = 'a'`,
  `SELECT id FROM ${S}.items WHERE label = 'x'`,
  `SELECT id FROM ${S}.items WHERE code IN ('a', 'b')`,
  `SELECT CASE label WHEN 'x' THEN 1 END FROM ${S}.items`,
];

describe('a user `=` (text, text)', () => {
  it('hidden by pg_catalog on the path given at login: `=` on text and varchar leaves messages alone', async () => {
    for (const sql of USES) {
      const r = await through(pinned, [`SET search_path = ${PINNED}`, sql]);
      // PostgreSQL ran pg_catalog's `=` (the user's would have raised a notice) ...
      expect(r.notices, sql).toEqual([]);
      // ... and the sidecar did not take it for the user's.
      expect(r.errors, sql).toEqual(['division by zero']);
    }
  });

  it('with pg_catalog after its schema on the path: withheld, also for a statement prepared before', async () => {
    for (const sql of USES) {
      const r = await through(pinned, [`SET search_path = ${S}, pg_catalog`, sql]);
      expect(r.notices.length, sql).toBeGreaterThan(0);
      expect(r.errors, sql).toHaveLength(1);
      expect(r.errors[0], sql).toContain('withheld');
      expect(r.leaks, sql).toEqual([]);
    }
    // Prepared under the pinned path, run after the SET: PostgreSQL analyses it again and runs the user's `=`.
    const c = await pinned.client();
    const notices: string[] = [];
    c.on('notice', (n) => notices.push(n.message ?? ''));
    pinned.tap.take();
    const q = { name: 'eq', text: `SELECT id FROM ${S}.items WHERE label = 'x'` };
    try {
      await c.query(q);
      expect(notices).toEqual([]);
      await c.query(`SET search_path = ${S}, pg_catalog`);
      await c.query(q);
      expect(notices.length).toBeGreaterThan(0);
      expect(notices.every((n) => n.includes('withheld'))).toBe(true);
    } finally {
      await c.end().catch(() => undefined);
    }
    expect(findLeaks(pinned.tap.take(), [NAME])).toEqual([]);
  });

  it('on a path the sidecar does not know: withheld, as any path may reach it', async () => {
    const r = await through(unpinned, [`SELECT id FROM ${S}.items WHERE code = 'a'`]);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toContain('withheld');
  });
});
