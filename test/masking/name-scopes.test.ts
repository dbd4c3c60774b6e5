import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initMaskingParser } from '../../policy/src/masking/sql-parse.js';
import { analyzeForMasking } from '../../policy/src/masking/statement-analysis.js';
import { findLeaks } from './byte-tap.js';
import { type MaskedSidecar, startMaskedSidecar } from './masked-sidecar.js';
import { adminClient, type Planted, seed } from './seed.js';

// Names PostgreSQL scopes: which WITH a relation name means (the innermost; later members of a WITH only with
// RECURSIVE), and which column a name stands for under an alias's column list or a join's output order. Through the
// real sidecar against PostgreSQL: masked values never come out in clear, unmasked ones come out exact, and the
// analysis names output columns as PostgreSQL does.
const S = 'mask_scope';
const ALT = `${S}_alt`;
let planted: Planted;
/** In ALT.customers.card_number (masked by the `*` rule), in a shape no content detector knows. */
const altCard = `confidential-alt-${randomBytes(6).toString('hex')}`;
let side: MaskedSidecar;

beforeAll(async () => {
  planted = await seed(S);
  const admin = adminClient();
  await admin.connect();
  try {
    // Same name as S.customers, other columns in another order: which column `c(a)` renames depends on the schema.
    await admin.query(`DROP SCHEMA IF EXISTS ${ALT} CASCADE; CREATE SCHEMA ${ALT};
      CREATE TABLE ${ALT}.customers (card_number text, id int, city text);
      INSERT INTO ${ALT}.customers VALUES ('${altCard}', 1, 'Bergen')`);
  } finally {
    await admin.end();
  }
  await initMaskingParser();
  side = await startMaskedSidecar(S);
}, 60_000);
afterAll(async () => {
  await side?.stop();
});

interface Result {
  rows: Record<string, unknown>[];
  fields: string[];
}

/** The statement on PostgreSQL directly and through the sidecar (each after `setup`), and the bytes the client got. */
async function both(sql: string, setup?: string): Promise<{ direct: Result; masked: Result; bytes: Buffer }> {
  const admin = adminClient();
  await admin.connect();
  let direct: pg.QueryResult;
  try {
    if (setup) await admin.query(setup);
    direct = await admin.query(sql);
  } finally {
    await admin.end();
  }
  const c = await side.client();
  side.tap.take();
  if (setup) await c.query(setup);
  const masked = await c.query(sql);
  await c.end();
  const names = (r: pg.QueryResult) => r.fields.map((f) => f.name);
  return {
    direct: { rows: direct.rows, fields: names(direct) },
    masked: { rows: masked.rows, fields: names(masked) },
    bytes: side.tap.take(),
  };
}

const secrets = () => [...planted.columnValues, altCard];

/** Masked whole (a value computed from a masked column): `****`. */
const MASKED = '****';

describe('values read through shadowed and reordered names', () => {
  it('an inner WITH shadows an outer CTE of its name, both ways round', async () => {
    const inner = await both(`WITH c AS (SELECT full_name AS v FROM ${S}.customers)
      SELECT upper(s.v) AS v FROM (WITH c AS (SELECT city AS v FROM ${S}.customers) SELECT * FROM c) s ORDER BY 1`);
    expect(inner.masked).toEqual(inner.direct);
    expect(inner.direct.rows.map((r) => r.v)).toEqual(['LISBON', 'OSLO', 'QUITO']);
    const outer = await both(`WITH c AS (SELECT city AS v FROM ${S}.customers)
      SELECT upper(s.v) AS v FROM (WITH c AS (SELECT full_name AS v FROM ${S}.customers) SELECT * FROM c) s`);
    expect(outer.masked.rows.map((r) => r.v)).toEqual([MASKED, MASKED, MASKED]);
    expect(findLeaks(outer.bytes, secrets())).toEqual([]);
  });

  it('a CTE read from subqueries in the select list and in WHERE', async () => {
    const r = await both(`WITH c AS (SELECT id, full_name, city FROM ${S}.customers)
      SELECT t.id, (SELECT upper(full_name) FROM c WHERE c.id = t.id) AS n, (SELECT lower(city) FROM c WHERE c.id = t.id) AS l
      FROM ${S}.customers t WHERE EXISTS (SELECT 1 FROM c WHERE c.id = t.id AND c.city <> '') ORDER BY 1`);
    expect(r.masked.rows).toEqual(r.direct.rows.map((row) => ({ ...row, n: MASKED })));
    expect(r.direct.rows.map((row) => row.l)).toEqual(['lisbon', 'oslo', 'quito']);
    expect(findLeaks(r.bytes, secrets())).toEqual([]);
  });

  it('WITH RECURSIVE: a member reads a member defined after it, and itself', async () => {
    // `orders` in the first member is the second member (PostgreSQL orders them by their references), not the table
    // orders, whose id is not masked.
    const fwd = await both(`WITH RECURSIVE a AS (SELECT upper(id) AS v FROM orders),
      orders AS (SELECT full_name AS id FROM ${S}.customers) SELECT v FROM a`);
    expect(fwd.direct.rows).toHaveLength(3);
    expect(fwd.masked.rows.map((r) => r.v)).toEqual([MASKED, MASKED, MASKED]);
    expect(findLeaks(fwd.bytes, secrets())).toEqual([]);
    const self = await both(`WITH RECURSIVE r(v, n) AS (SELECT full_name, 1 FROM ${S}.customers
      UNION ALL SELECT v, n + 1 FROM r WHERE n < 2) SELECT upper(v) AS v, n FROM r ORDER BY n`);
    expect(self.masked.rows).toEqual(self.direct.rows.map((row) => ({ ...row, v: MASKED })));
    expect(findLeaks(self.bytes, secrets())).toEqual([]);
  });

  it('without RECURSIVE a later member is not visible to an earlier one: PostgreSQL says so', async () => {
    const c = await side.client();
    side.tap.take();
    const err = await c
      .query(`WITH a AS (SELECT upper(v) AS v FROM later), later AS (SELECT full_name AS v FROM ${S}.customers)
        SELECT v FROM a`)
      .catch((e: { code?: string }) => e);
    await c.end();
    expect((err as { code?: string }).code).toBe('42P01');
    expect(findLeaks(side.tap.take(), secrets())).toEqual([]);
  });

  it('a column list renames the first columns of the relation the name resolves to', async () => {
    // With ALT first on search_path, `customers c(a)` is ALT.customers and `a` its card_number.
    const setup = `SET search_path = ${ALT}, ${S}`;
    const r = await both(
      'SELECT upper(c.a) AS a, upper(a) AS b, c.id, lower(c.city) AS city FROM customers c(a)',
      setup,
    );
    expect(r.direct.rows).toEqual([{ a: altCard.toUpperCase(), b: altCard.toUpperCase(), id: 1, city: 'bergen' }]);
    expect(r.masked.rows).toEqual([{ a: MASKED, b: MASKED, id: 1, city: 'bergen' }]);
    expect(findLeaks(r.bytes, secrets())).toEqual([]);
    // S.customers is (id, full_name, …): renamed to x and y, the rest keep their names.
    const s = await both(
      `SELECT upper(c.x::text) AS x, upper(c.y) AS y, lower(c.city) AS city FROM ${S}.customers c(x, y) ORDER BY c.x`,
    );
    expect(s.masked.rows).toEqual(s.direct.rows.map((row) => ({ ...row, y: MASKED })));
    expect(s.direct.rows.map((row) => row.city)).toEqual(['lisbon', 'oslo', 'quito']);
    expect(findLeaks(s.bytes, secrets())).toEqual([]);
  });

  it('a column list on a join renames its output columns, USING columns first', async () => {
    // The join's columns are id, full_name, customer_id, amount, card_number: b is full_name.
    const r = await both(`SELECT j.a, upper(j.b) AS b, j.c * 1 AS c FROM
      ((SELECT full_name, id FROM ${S}.customers) p JOIN ${S}.orders o USING (id)) AS j(a, b, c) ORDER BY j.a`);
    expect(r.masked.rows).toEqual(r.direct.rows.map((row) => ({ ...row, b: MASKED })));
    expect(r.direct.rows.map((row) => row.a)).toEqual([1, 2, 3]);
    expect(findLeaks(r.bytes, secrets())).toEqual([]);
  });

  it('`*` over a join lines its columns up as PostgreSQL sends them, so an expression after it is not over-masked', async () => {
    const r = await both(`SELECT *, upper(p.city) AS u FROM (SELECT id, city FROM ${S}.customers) p
      JOIN ${S}.orders o USING (id) ORDER BY id`);
    expect(r.masked.rows).toEqual(r.direct.rows.map((row) => ({ ...row, card_number: MASKED })));
    expect(r.direct.rows.map((row) => row.u)).toEqual(['LISBON', 'OSLO', 'QUITO']);
    expect(findLeaks(r.bytes, secrets())).toEqual([]);
  });

  it('a column list on a subquery and a LATERAL subquery', async () => {
    const r = await both(`SELECT upper(s.a) AS a, lower(s.city) AS city, upper(f.n) AS n
      FROM (SELECT full_name, city, id FROM ${S}.customers) s(a), LATERAL (SELECT s.city) f(n) ORDER BY s.id`);
    expect(r.masked.rows).toEqual(r.direct.rows.map((row) => ({ ...row, a: MASKED })));
    expect(r.direct.rows.map((row) => row.n)).toEqual(['LISBON', 'OSLO', 'QUITO']);
    expect(findLeaks(r.bytes, secrets())).toEqual([]);
  });
});

describe('output names', () => {
  // The analysis's names for each output column (what `x.f` on the statement as a subquery reads) against the
  // RowDescription PostgreSQL sends.
  const cases: string[] = [
    `SELECT j.* FROM ((SELECT full_name, id FROM ${S}.customers) p JOIN ${S}.orders o USING (id)) AS j(a, b)`,
    `SELECT j.* FROM ((SELECT city, 7 AS q, id FROM ${S}.customers) p NATURAL JOIN ${ALT}.customers c) AS j(x)`,
    `SELECT j.* FROM (${S}.orders o JOIN ${ALT}.customers c ON true) AS j(a, b, c)`,
    `SELECT c.* FROM ${ALT}.customers c(a)`,
    `SELECT j.* FROM (((SELECT city AS c1, id FROM ${ALT}.customers) c JOIN ${S}.orders o ON true) AS k(city)
      JOIN (SELECT city, 1 AS w FROM ${S}.customers) q USING (city)) AS j(a, b)`,
    `SELECT * FROM (SELECT full_name, id, city FROM ${S}.customers) p JOIN ${S}.orders o USING (id), ${ALT}.customers c`,
    `SELECT * FROM (SELECT city, id FROM ${S}.customers) p FULL JOIN ${ALT}.customers c USING (id, city)`,
    `SELECT s.* FROM (SELECT full_name, city, upper(city) FROM ${S}.customers) s(a)`,
    `WITH c AS (SELECT id FROM ${S}.customers) SELECT * FROM (WITH c AS (SELECT city, id AS k FROM ${S}.customers) SELECT * FROM c) s`,
    `WITH RECURSIVE a AS (SELECT * FROM b), b(x, y) AS (SELECT id, city FROM ${S}.customers) SELECT * FROM a`,
  ];
  it.each(cases)('%s', async (sql) => {
    const r = await both(sql);
    expect(r.masked.fields).toEqual(r.direct.fields);
    const cat = await side.catalog.ensure();
    const named = { cursor: () => undefined, prepared: () => undefined };
    const outputs = analyzeForMasking(sql, cat, named)[0].outputs;
    expect(outputs.map((o) => o.name)).toEqual(r.direct.fields);
  });
});
