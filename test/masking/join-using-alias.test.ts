import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initMaskingParser } from '../../policy/src/masking/sql-parse.js';
import { analyzeForMasking } from '../../policy/src/masking/statement-analysis.js';
import { findLeaks } from './byte-tap.js';
import { directAndMasked, type MaskedSidecar, startMaskedSidecar } from './masked-sidecar.js';
import { adminClient, type Planted, seed } from './seed.js';

// `a JOIN b USING (id) AS x` (PostgreSQL 14+): x names the join's merged USING columns. Which side's value a merged
// column carries depends on the join type (parse_clause.c, buildMergedJoinVar): the left one (LEFT, and INNER when
// neither needs a coercion), the right one (RIGHT, and INNER when only the left needs one), COALESCE of both (FULL).
// Through the real sidecar against PostgreSQL: what comes out unmasked is PostgreSQL's own answer, masked values never
// come out in clear.
const S = 'mask_jua';
const U = `${S}_u`;
let planted: Planted;
/** Masking on defaults: a predicate on a masked column is denied, an undecidable output masked. */
let side: MaskedSidecar;
/** Masked columns may be joined on, and a statement whose output lineage is undecidable is refused. */
let strict: MaskedSidecar;

beforeAll(async () => {
  planted = await seed(S);
  const admin = adminClient();
  await admin.connect();
  try {
    // Not masked: U.names.full_name holds customer 1's name (the reader may see it there) and one nobody has.
    await admin.query(`DROP SCHEMA IF EXISTS ${U} CASCADE; CREATE SCHEMA ${U};
      CREATE TABLE ${U}.names (full_name text, tag text);
      CREATE TABLE ${U}.vnames (full_name varchar(200));
      INSERT INTO ${U}.names VALUES ($$${planted.customers[0].fullName}$$, 'known'), ('Nobody Placeholder', 'other');
      INSERT INTO ${U}.vnames SELECT full_name FROM ${U}.names`);
  } finally {
    await admin.end();
  }
  await initMaskingParser();
  side = await startMaskedSidecar(S);
  strict = await startMaskedSidecar(S, { maskedColumnPredicates: 'allow', undecidableLineage: 'deny' });
}, 90_000);
afterAll(async () => {
  await side?.stop();
  await strict?.stop();
});

const both = (via: MaskedSidecar, sql: string) => directAndMasked(via, sql);

/** Masked whole (a value computed from a masked column): `****`. */
const MASKED = '****';
/** Every planted value but customer 1's name, which U.names holds unmasked. */
const secrets = () => planted.columnValues.filter((v) => v !== planted.customers[0].fullName);

describe('a USING alias over unmasked columns reads them as they are', () => {
  const sql = `SELECT x.id * 10 AS n, upper(x.id::text) AS t, x.id FROM ${S}.customers c
    JOIN ${S}.orders o USING (id) AS x ORDER BY 1`;

  it('expressions of x.id are not masked as undecidable', async () => {
    const r = await both(side, sql);
    expect(r.direct.rows.map((row) => row.n)).toEqual([10, 20, 30]);
    expect(r.masked).toEqual(r.direct);
  });

  it('nor refused where undecidable lineage is denied', async () => {
    const r = await both(strict, sql);
    expect(r.masked).toEqual(r.direct);
  });
});

describe('a USING alias over a column masked on one side (masked columns may be joined on)', () => {
  const join = (type: string, left = `${U}.names n`, right = `${S}.customers c`) =>
    `SELECT upper(x.full_name) AS v FROM ${left} ${type} JOIN ${right} USING (full_name) AS x ORDER BY 1`;

  it('INNER JOIN of columns of one type: the left one, here not masked', async () => {
    const r = await both(strict, join('INNER'));
    expect(r.direct.rows).toEqual([{ v: planted.customers[0].fullName.toUpperCase() }]);
    expect(r.masked).toEqual(r.direct);
    expect(findLeaks(r.bytes, secrets())).toEqual([]);
  });

  it('INNER JOIN with the masked column on the left: masked', async () => {
    const r = await both(strict, join('INNER', `${S}.customers c`, `${U}.names n`));
    expect(r.direct.rows).toHaveLength(1);
    expect(r.masked.rows).toEqual([{ v: MASKED }]);
    expect(findLeaks(r.bytes, planted.columnValues)).toEqual([]);
  });

  it('INNER JOIN where only the left column needs a coercion (varchar to text): the right one, masked', async () => {
    const r = await both(strict, join('INNER', `${U}.vnames n`));
    expect(r.direct.rows).toHaveLength(1);
    expect(r.masked.rows).toEqual([{ v: MASKED }]);
  });

  it('LEFT JOIN: the left one, not masked', async () => {
    const r = await both(strict, join('LEFT'));
    expect(r.direct.rows).toEqual([{ v: 'NOBODY PLACEHOLDER' }, { v: planted.customers[0].fullName.toUpperCase() }]);
    expect(r.masked).toEqual(r.direct);
    expect(findLeaks(r.bytes, secrets())).toEqual([]);
  });

  it('RIGHT JOIN: the right one, masked', async () => {
    const r = await both(strict, join('RIGHT'));
    expect(r.direct.rows).toHaveLength(3);
    expect(r.masked.rows).toEqual([{ v: MASKED }, { v: MASKED }, { v: MASKED }]);
    expect(findLeaks(r.bytes, secrets())).toEqual([]);
  });

  it('FULL JOIN: COALESCE of both, masked', async () => {
    const r = await both(strict, join('FULL'));
    expect(r.direct.rows).toHaveLength(4);
    expect(r.masked.rows).toEqual(r.direct.rows.map(() => ({ v: MASKED })));
    expect(findLeaks(r.bytes, secrets())).toEqual([]);
    // Unchanged by the expression: PostgreSQL sends the COALESCE as a column of no table.
    const plain = await both(strict, join('FULL').replace('upper(x.full_name)', 'x.full_name'));
    expect(plain.masked.rows).toEqual(plain.direct.rows.map(() => ({ v: MASKED })));
    expect(findLeaks(plain.bytes, secrets())).toEqual([]);
  });

  it('the sides keep their own names beside the alias', async () => {
    const r = await both(strict, join('LEFT').replace('upper(x.full_name) AS v', 'upper(c.full_name) AS v, n.tag'));
    expect(r.masked.rows).toEqual(r.direct.rows.map((row) => ({ ...row, v: row.v === null ? null : MASKED })));
    expect(findLeaks(r.bytes, secrets())).toEqual([]);
  });
});

describe('an unqualified merged column reads the value of the join, not both sides', () => {
  // parse_clause.c hides the sides' columns from unqualified names: `full_name` is the join's merged column.
  const join = (type: string, left = `${U}.names n`, right = `${S}.customers c`) =>
    `SELECT upper(full_name) AS v FROM ${left} ${type} JOIN ${right} USING (full_name) ORDER BY 1`;

  it('INNER JOIN, the left one unmasked: not masked (before, both sides: masked)', async () => {
    const r = await both(strict, join('INNER'));
    expect(r.direct.rows).toEqual([{ v: planted.customers[0].fullName.toUpperCase() }]);
    expect(r.masked).toEqual(r.direct);
    expect(findLeaks(r.bytes, secrets())).toEqual([]);
  });

  it('LEFT JOIN, and under an alias of the join: the left one, not masked', async () => {
    const aliased = `SELECT upper(full_name) AS v FROM (${U}.names n LEFT JOIN ${S}.customers c USING (full_name)) AS j
      ORDER BY 1`;
    for (const sql of [join('LEFT'), aliased]) {
      const r = await both(strict, sql);
      expect(r.direct.rows).toEqual([{ v: 'NOBODY PLACEHOLDER' }, { v: planted.customers[0].fullName.toUpperCase() }]);
      expect(r.masked).toEqual(r.direct);
      expect(findLeaks(r.bytes, secrets())).toEqual([]);
    }
  });

  it('RIGHT, FULL, and INNER with the masked column on the left: masked', async () => {
    for (const sql of [join('RIGHT'), join('FULL'), join('INNER', `${S}.customers c`, `${U}.names n`)]) {
      const r = await both(strict, sql);
      expect(r.direct.rows.length).toBeGreaterThan(0);
      expect(r.masked.rows).toEqual(r.direct.rows.map(() => ({ v: MASKED })));
      expect(findLeaks(r.bytes, secrets())).toEqual([]);
    }
  });

  it('a column of one side only still reads that side', async () => {
    const r = await both(
      strict,
      join('LEFT').replace('upper(full_name) AS v', 'upper(full_name) AS v, upper(email) AS e'),
    );
    expect(r.masked.rows.map((x) => x.v)).toEqual(r.direct.rows.map((x) => x.v));
    expect(r.masked.rows.map((x) => x.e)).toEqual(r.direct.rows.map((x) => (x.e === null ? null : MASKED)));
  });
});

describe('output names', () => {
  const cases = [
    `SELECT x.*, x, x.id FROM ${S}.customers c JOIN ${S}.orders o USING (id) AS x`,
    `SELECT * FROM ${S}.customers c FULL JOIN ${S}.orders o USING (id, card_number) AS x`,
    `SELECT s.* FROM (SELECT x.*, c.city FROM ${S}.customers c JOIN ${S}.orders o USING (id) AS x) s`,
  ];
  it.each(cases)('%s', async (sql) => {
    const r = await both(strict, sql);
    expect(r.masked.fields).toEqual(r.direct.fields);
    const cat = await strict.catalog.ensure();
    const named = { cursor: () => undefined, prepared: () => undefined };
    expect(analyzeForMasking(sql, cat, named)[0].outputs.map((o) => o.name)).toEqual(r.direct.fields);
  });
});
