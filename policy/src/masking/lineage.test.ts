import { beforeAll, describe, expect, it } from 'vitest';
import { buildCatalogSnapshot, type CatalogRow, type CatalogSnapshot } from './catalog-snapshot.js';
import { alignOutputs, colKey, type Lineage } from './lineage.js';
import { compileMasking } from './masking-config.js';
import { checkMaskedUsage, planColumns } from './masking-plan.js';
import { initMaskingParser } from './sql-parse.js';
import { analyzeForMasking, type MaskAnalysis, type NamedOutputs } from './statement-analysis.js';

function table(
  oid: number,
  name: string,
  cols: string[],
  kind = 'r',
  viewdef: string | null = null,
  schema = 'public',
): CatalogRow[] {
  return cols.map((c, i) => ({ oid, schema, name, kind, attnum: i + 1, attname: c, atttypid: 25, viewdef }));
}

let cat: CatalogSnapshot;
const named: NamedOutputs = { cursor: () => undefined, prepared: () => undefined };
const C = (t: string, c: string) => colKey('public', t, c);

beforeAll(async () => {
  await initMaskingParser();
  cat = buildCatalogSnapshot(
    [
      ...table(100, 'customers', ['id', 'name', 'email', 'ssn', 'notes']),
      ...table(101, 'orders', ['id', 'customer_id', 'card', 'amount']),
      ...table(102, 'customer_v', ['id', 'e', 'name'], 'v', ' SELECT id, upper(email) AS e, name FROM customers;'),
      ...table(103, 'stats_v', ['n'], 'v', ' SELECT count(*) AS n FROM customers;'),
      {
        oid: 2619,
        schema: 'pg_catalog',
        name: 'pg_statistic',
        kind: 'r',
        attnum: null,
        attname: null,
        atttypid: null,
        viewdef: null,
      },
      {
        oid: 12000,
        schema: 'pg_catalog',
        name: 'pg_stats',
        kind: 'v',
        attnum: null,
        attname: null,
        atttypid: null,
        viewdef: null,
      },
      {
        oid: 1259,
        schema: 'pg_catalog',
        name: 'pg_class',
        kind: 'r',
        attnum: null,
        attname: null,
        atttypid: null,
        viewdef: null,
      },
    ],
    ['get_ssn'],
  );
});

const one = (sql: string): MaskAnalysis => analyzeForMasking(sql, cat, named)[0];
const cols = (l: Lineage) => [...l.cols].sort();
const outs = (sql: string) => one(sql).outputs.map((o) => (o.lin.unknown ? 'UNKNOWN' : cols(o.lin).join(',')));

describe('lineage of output columns', () => {
  it('plain, aliased and qualified references', () => {
    expect(outs('SELECT ssn, c.email AS x, public.customers.name FROM customers c')).toEqual([
      C('customers', 'ssn'),
      C('customers', 'email'),
      'UNKNOWN', // `public.customers.name` does not name the alias c: PostgreSQL rejects it too
    ]);
  });
  it('expressions, casts, concatenation, aggregates', () => {
    expect(
      outs(
        "SELECT upper(ssn)::text, name || '-' || email, string_agg(ssn, ','), json_agg(email), array_agg(ssn), count(ssn), length(notes) FROM customers",
      ),
    ).toEqual([
      C('customers', 'ssn'),
      [C('customers', 'email'), C('customers', 'name')].join(','),
      C('customers', 'ssn'),
      C('customers', 'email'),
      C('customers', 'ssn'),
      '',
      C('customers', 'notes'),
    ]);
  });
  it('whole-row references: t, t.*, row_to_json(t), to_json(c.*)', () => {
    const all = ['email', 'id', 'name', 'notes', 'ssn'].map((c) => C('customers', c)).join(',');
    expect(outs('SELECT c, row_to_json(c), to_json(c.*) FROM customers c')).toEqual([all, all, all]);
    expect(outs('SELECT c.* FROM customers c')).toHaveLength(5);
  });
  it('subqueries, CTEs, UNION, LATERAL, VALUES', () => {
    expect(outs('SELECT (SELECT ssn FROM customers LIMIT 1)')).toEqual([C('customers', 'ssn')]);
    expect(outs('WITH x(s) AS (SELECT ssn FROM customers) SELECT lower(s) FROM x')).toEqual([C('customers', 'ssn')]);
    expect(outs("SELECT 'a' UNION SELECT ssn FROM customers")).toEqual([C('customers', 'ssn')]);
    expect(outs('SELECT q.v FROM orders o, LATERAL (SELECT o.card AS v) q')).toEqual([C('orders', 'card')]);
    expect(outs('SELECT u FROM customers c, LATERAL unnest(ARRAY[c.ssn]) AS u')).toEqual([C('customers', 'ssn')]);
    expect(outs("SELECT * FROM (VALUES (1, 'a')) v(a, b)")).toEqual(['', '']);
    expect(outs('SELECT z FROM (SELECT s AS z FROM (SELECT ssn AS s FROM customers) a) b')).toEqual([
      C('customers', 'ssn'),
    ]);
  });
  it('recursive CTEs reach a fixed point', () => {
    expect(
      outs(
        'WITH RECURSIVE r(v, n) AS (SELECT ssn, 1 FROM customers UNION ALL SELECT v, n + 1 FROM r WHERE n < 3) SELECT v, n FROM r',
      ),
    ).toEqual([C('customers', 'ssn'), '']);
    expect(
      outs(
        "WITH RECURSIVE r(a, b) AS (SELECT 1, 'x'::text UNION ALL SELECT a + 1, (SELECT ssn FROM customers LIMIT 1) FROM r WHERE a < 3) SELECT a, b FROM r",
      ),
    ).toEqual(['', C('customers', 'ssn')]);
  });
  it('a column list over a `*` of unknown width does not pin names to positions', () => {
    const all = [C('customers', 'ssn'), C('orders', 'amount'), C('orders', 'card'), C('orders', 'customer_id')];
    const allIds = [...all, C('orders', 'id')].sort().join(',');
    // jsonb_to_record gives two columns: b is its q, computed from ssn, not orders.id.
    const fn = 'jsonb_to_record((SELECT to_jsonb(ssn) FROM customers LIMIT 1)) AS j(p text, q text), orders o';
    expect(outs(`WITH x(a, b, c) AS (SELECT * FROM ${fn}) SELECT b, x.c FROM x`)).toEqual([allIds, allIds]);
    expect(outs(`SELECT s.b FROM (SELECT * FROM ${fn}) s(a, b)`)).toEqual([allIds]);
    expect(outs(`WITH RECURSIVE r(a, b) AS (SELECT * FROM ${fn} UNION ALL SELECT * FROM r) SELECT b FROM r`)).toEqual([
      'UNKNOWN',
    ]);
    // Without such a star, names stay exact.
    expect(outs('WITH x(a, b) AS (SELECT id, ssn FROM customers) SELECT x.a, b FROM x')).toEqual([
      C('customers', 'id'),
      C('customers', 'ssn'),
    ]);
  });
  it('a DML target is the table even where a CTE of its name is visible', () => {
    const a = one("WITH customers AS (SELECT 1 AS id) UPDATE customers SET id = id WHERE ssn LIKE '1%' RETURNING name");
    expect(cols(a.predicate)).toEqual([C('customers', 'ssn')]);
    expect(a.outputs.map((o) => cols(o.lin))).toEqual([[C('customers', 'name')]]);
  });
  it('views resolve through their definitions', () => {
    expect(outs('SELECT e, name FROM customer_v')).toEqual([
      [C('customer_v', 'e'), C('customers', 'email')].join(','),
      [C('customer_v', 'name'), C('customers', 'name')].join(','),
    ]);
    expect(outs('SELECT n FROM stats_v')).toEqual([C('stats_v', 'n')]);
  });
  it('undecidable: user functions, dynamic SQL, unknown relations, leaky catalogs', () => {
    expect(outs('SELECT get_ssn(1)')).toEqual(['UNKNOWN']);
    expect(outs("SELECT query_to_xml('select ssn from customers', true, false, '')")).toEqual(['UNKNOWN']);
    expect(outs('SELECT x FROM not_there')).toEqual(['UNKNOWN']);
    expect(outs('SELECT most_common_vals FROM pg_stats')).toEqual(['UNKNOWN']);
    expect(outs('SELECT relname FROM pg_class')).toEqual(['']);
  });
  it('RETURNING, cursors and prepared statements', () => {
    expect(outs('UPDATE customers SET name = name WHERE id = 1 RETURNING lower(email)')).toEqual([
      C('customers', 'email'),
    ]);
    const decl = one('DECLARE k CURSOR FOR SELECT md5(ssn) FROM customers');
    expect(decl.names?.kind).toBe('cursor');
    const withCursor: NamedOutputs = {
      cursor: (n) => (n === 'k' ? decl.names?.outputs : undefined),
      prepared: () => undefined,
    };
    expect(analyzeForMasking('FETCH 1 FROM k', cat, withCursor)[0].outputs[0].lin.cols.has(C('customers', 'ssn'))).toBe(
      true,
    );
    expect(analyzeForMasking('FETCH 1 FROM other', cat, withCursor)[0].outputs[0].lin.unknown).toBe(true);
    const same = analyzeForMasking('DECLARE j CURSOR FOR SELECT upper(ssn) FROM customers; FETCH 1 FROM j', cat, named);
    expect(same[1].outputs[0].lin.cols.has(C('customers', 'ssn'))).toBe(true);
    expect(same[1].outputs[0].lin.unknown).toBe(false);
  });
  it('alignOutputs over unknown stars', () => {
    const o = one('SELECT 1 AS a, f.*, c.ssn FROM generate_series(1, 2) f, customers c').outputs;
    const lin = alignOutputs(o, 4);
    expect(lin.map((l) => cols(l).join(','))).toEqual(['', '', '', C('customers', 'ssn')]);
  });

  it('(composite).* expands: the columns after it are not lined up with its fields', () => {
    // A reviewer's bypass: the composite's 5 columns came back under the lineage of the constants behind it.
    const sql =
      'SELECT ((SELECT ROW(c.id, c.name, c.email, reverse(c.ssn), c.notes)::customers FROM customers c WHERE c.id = 1)).*, 1 a, 2 b, 3 d, 4 e, g.* FROM generate_series(1, 1) g';
    const lin = alignOutputs(one(sql).outputs, 5 + 4 + 1);
    for (const l of lin.slice(0, 5)) expect(cols(l)).toContain(C('customers', 'ssn'));
  });
});

describe('predicate and write usage', () => {
  const pred = (sql: string) => cols(one(sql).predicate);
  it('count() of an expression, set operations that compare rows, and DISTINCT read values like a WHERE', () => {
    const ssn = [C('customers', 'ssn')];
    // A reviewer rebuilt a masked value bit by bit from count(CASE WHEN … THEN 1 END) columns in one query.
    expect(pred("SELECT count(CASE WHEN ssn LIKE '078%' THEN 1 END) FROM customers")).toEqual(ssn);
    expect(pred("SELECT count(NULLIF(ssn, '078-05-1120')) FROM customers")).toEqual(ssn);
    expect(pred("SELECT count(*) FROM (SELECT ssn FROM customers INTERSECT SELECT '078-05-1120') x")).toEqual(ssn);
    expect(pred("SELECT count(*) FROM (SELECT ssn FROM customers EXCEPT SELECT '078-05-1120') x")).toEqual(ssn);
    expect(pred("SELECT count(*) FROM (SELECT ssn FROM customers UNION SELECT '078-05-1120') x")).toEqual(ssn);
    expect(pred('SELECT count(*) FROM (SELECT DISTINCT ssn FROM customers) x')).toEqual(ssn);
    // JOIN LATERAL: the right side reads the left side's masked column (a reviewer compared SSNs through it).
    expect(pred("SELECT c.id FROM customers c JOIN LATERAL (VALUES (c.ssn)) v(x) ON true WHERE v.x = '1'")).toEqual(
      ssn,
    );
    expect(pred("SELECT c.id FROM customers c JOIN LATERAL (SELECT c.ssn AS x) s ON true WHERE s.x > '3'")).toEqual(
      ssn,
    );
    expect(pred("SELECT count(*) FROM customers c CROSS JOIN LATERAL (SELECT 1 WHERE c.ssn LIKE '07%') s")).toEqual(
      ssn,
    );
    expect(pred('SELECT c.id FROM customers c CROSS JOIN LATERAL (VALUES (c.ssn)) v(x) ORDER BY v.x')).toEqual(ssn);
    expect(pred("SELECT count(*) FROM customers c JOIN LATERAL unnest(ARRAY[c.ssn]) u(x) ON u.x LIKE '0%'")).toEqual(
      ssn,
    );
    // Counting rows or a column's non-NULL values, and UNION ALL, compare nothing.
    expect(pred('SELECT count(*), count(ssn) FROM customers')).toEqual([]);
    expect(pred("SELECT count(*) FROM (SELECT ssn FROM customers UNION ALL SELECT '078-05-1120') x")).toEqual([]);
  });

  it('WHERE, JOIN ON, GROUP BY, ORDER BY (also by alias and position), HAVING, FILTER, window', () => {
    expect(pred("SELECT id FROM customers WHERE ssn LIKE '1%'")).toEqual([C('customers', 'ssn')]);
    expect(pred('SELECT o.id FROM orders o JOIN customers c ON c.email = o.card')).toEqual([
      C('customers', 'email'),
      C('orders', 'card'),
    ]);
    expect(pred('SELECT count(*) FROM customers GROUP BY ssn')).toEqual([C('customers', 'ssn')]);
    expect(pred('SELECT upper(email) AS u FROM customers ORDER BY u')).toEqual([C('customers', 'email')]);
    expect(pred('SELECT email, id FROM customers ORDER BY 1')).toEqual([C('customers', 'email')]);
    expect(pred("SELECT count(*) FILTER (WHERE ssn > '5') FROM customers")).toEqual([C('customers', 'ssn')]);
    expect(pred('SELECT rank() OVER (ORDER BY ssn) FROM customers')).toEqual([C('customers', 'ssn')]);
    expect(pred('SELECT id FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.card = c.ssn)')).toEqual([
      C('customers', 'ssn'),
      C('orders', 'card'),
    ]);
    expect(pred('SELECT id, name FROM customers WHERE id = 1 ORDER BY name')).toEqual([
      C('customers', 'id'),
      C('customers', 'name'),
    ]);
    expect(pred('SELECT o.id FROM orders o NATURAL JOIN customers c')).toEqual([
      C('customers', 'id'),
      C('orders', 'id'),
    ]);
    expect(pred('SELECT id FROM customers LIMIT (SELECT length(ssn) FROM customers LIMIT 1)')).toEqual([
      C('customers', 'ssn'),
    ]);
    expect(pred('SELECT 1, generate_series(1, ascii(ssn)) FROM customers')).toEqual([C('customers', 'ssn')]);
    expect(pred('SELECT g FROM customers c, generate_series(1, length(c.email)) g')).toEqual([C('customers', 'email')]);
  });
  it('writes of masked values', () => {
    expect(cols(one('INSERT INTO orders (card) SELECT ssn FROM customers').written)).toEqual([C('customers', 'ssn')]);
    expect(cols(one('UPDATE orders SET card = (SELECT email FROM customers LIMIT 1)').written)).toEqual([
      C('customers', 'email'),
    ]);
    expect(cols(one('CREATE TABLE t2 AS SELECT ssn FROM customers').written)).toEqual([C('customers', 'ssn')]);
    expect(cols(one('SELECT ssn INTO t3 FROM customers').written)).toEqual([C('customers', 'ssn')]);
    expect(
      cols(
        one(
          'INSERT INTO orders (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET card = (SELECT ssn FROM customers LIMIT 1)',
        ).written,
      ),
    ).toEqual([C('customers', 'ssn')]);
    expect(cols(one("CREATE VIEW v2 AS SELECT id FROM customers WHERE ssn LIKE '1%'").predicate)).toEqual([
      C('customers', 'ssn'),
    ]);
  });
  it('COPY TO', () => {
    expect(cols(one('COPY customers TO STDOUT').copyOut?.lin as Lineage)).toHaveLength(5);
    expect(cols(one('COPY customers (id) TO STDOUT').copyOut?.lin as Lineage)).toEqual([C('customers', 'id')]);
    expect(one('COPY (SELECT id FROM customers) TO STDOUT WITH (FORMAT binary)').copyOut?.binary).toBe(true);
  });
});

describe('plans and checks', () => {
  const config = () =>
    compileMasking(
      [
        {
          name: 'pii',
          spec: {
            columns: [
              { table: 'public.customers', column: 'ssn', strategy: { type: 'partial', keepLast: 4 } },
              { table: '*', column: 'email', strategy: { type: 'email' } },
            ],
            detectors: ['email'],
          },
        },
      ],
      undefined,
      { groups: [] },
    );
  const field = (name: string, tableOid: number, columnAttr: number) => ({
    name,
    tableOid,
    columnAttr,
    typeOid: 25,
    format: 0,
  });
  it('resolves base columns by table OID and attnum, not by name', () => {
    const plan = planColumns(
      [field('innocent', 100, 4), field('ssn', 100, 2), field('x', 101, 1)],
      undefined,
      config(),
      cat,
    );
    expect(plan.actions[0]).toMatchObject({ kind: 'mask', why: 'column', strategy: { type: 'partial' } });
    expect(plan.actions[1]).toEqual({ kind: 'scan' });
    expect(plan.actions[2]).toEqual({ kind: 'scan' });
  });
  it('masks expression columns by lineage, whole; unknown relations as undecidable', () => {
    const a = one('SELECT reverse(ssn), id FROM customers');
    const plan = planColumns([field('reverse', 0, 0), field('id', 100, 1)], alignOutputs(a.outputs, 2), config(), cat);
    expect(plan.actions[0]).toMatchObject({ kind: 'mask', why: 'lineage', strategy: { type: 'redact' } });
    expect(planColumns([field('q', 99999, 1)], undefined, config(), cat).actions[0]).toMatchObject({
      why: 'undecidable',
    });
    expect(planColumns([field('e', 102, 2)], undefined, config(), cat).actions[0]).toMatchObject({ why: 'lineage' });
  });
  it('lineage: direct masks only columns resolved by identity', () => {
    const direct = compileMasking(
      [{ name: 'pii', spec: { columns: [{ table: '*', column: 'ssn', strategy: { type: 'redact' } }] } }],
      { lineage: 'direct' },
      { groups: [] },
    );
    const a = one('SELECT reverse(ssn), ssn FROM customers');
    const plan = planColumns([field('reverse', 0, 0), field('ssn', 100, 4)], alignOutputs(a.outputs, 2), direct, cat);
    expect(plan.actions[0]).toBeUndefined();
    expect(plan.actions[1]).toMatchObject({ kind: 'mask', why: 'column' });
  });
  it('unmaskedFor exempts the subject', () => {
    const c = compileMasking(
      [
        {
          name: 'pii',
          spec: {
            columns: [{ table: '*', column: 'ssn', strategy: { type: 'redact' } }],
            unmaskedFor: { groups: ['compliance'] },
          },
        },
      ],
      undefined,
      { groups: ['compliance'] },
    );
    expect(c.active).toBe(false);
    expect(planColumns([field('ssn', 100, 4)], undefined, c, cat).any).toBe(false);
    // Exact: a look-alike of a listed name (which deny rules and the four-eyes check fold) stays masked.
    for (const subject of [
      { groups: ['Compliance'] },
      { groups: ['c\u043empliance'] },
      { groups: ['comp1iance'] },
      { groups: [], user: 'a.uditor@gmail.com' },
    ]) {
      const unmaskedFor = { groups: ['compliance'], users: ['auditor@gmail.com'] };
      const ssn = { table: '*', column: 'ssn', strategy: { type: 'redact' } };
      const c = compileMasking([{ name: 'pii', spec: { columns: [ssn], unmaskedFor } }], undefined, subject);
      expect(c.active, JSON.stringify(subject)).toBe(true);
    }
  });
  it('denies masked predicates (by default), masked writes and COPY', () => {
    const deny = (sql: string, settings = {}) =>
      checkMaskedUsage(
        analyzeForMasking(sql, cat, named),
        compileMasking(
          [{ name: 'pii', spec: { columns: [{ table: '*', column: 'ssn', strategy: { type: 'redact' } }] } }],
          settings,
          { groups: [] },
        ),
        cat,
      )?.reason;
    expect(deny("SELECT id FROM customers WHERE ssn = '1'")).toBe('masked-predicate');
    expect(deny("SELECT id FROM customers WHERE ssn = '1'", { maskedColumnPredicates: 'allow' })).toBeUndefined();
    expect(deny('SELECT id FROM customers WHERE name = $1')).toBeUndefined();
    expect(deny('INSERT INTO orders (card) SELECT ssn FROM customers')).toBe('masked-write');
    expect(deny('COPY customers TO STDOUT')).toBe('masked-copy');
    expect(deny('COPY (SELECT id, name FROM customers) TO STDOUT')).toBeUndefined();
    expect(deny('SELECT get_ssn(1)', { undecidableLineage: 'deny' })).toBe('undecidable-lineage');
    expect(deny('SELECT get_ssn(1)')).toBeUndefined();
    expect(deny("SELECT pg_notify('ch', ssn) FROM customers")).toBe('masked-write');
    expect(deny("SELECT set_config('x.y', ssn, false) FROM customers")).toBe('masked-write');
    expect(deny('ALTER TABLE customers RENAME COLUMN ssn TO x')).toBe('masked-ddl');
    expect(deny('ALTER TABLE public.customers RENAME TO c2')).toBe('masked-ddl');
    expect(deny('ALTER TABLE orders ADD COLUMN z int')).toBeUndefined();
    expect(deny('ALTER SCHEMA public RENAME TO p2')).toBe('masked-ddl');
    expect(analyzeForMasking('DO $$ BEGIN END $$', cat, named)[0].opaque).toBe(true);
    // A DO block returns no rows; CALL returns its OUT parameters as one row. In `SELECT …; DO …; SELECT …` the
    // row-returning statements are the two SELECTs, answered by one RowDescription each.
    const multi = analyzeForMasking(
      "SELECT name FROM customers; DO $$BEGIN RAISE NOTICE 'x'; END$$; SELECT 2",
      cat,
      named,
    );
    expect(multi.map((a) => a.returnsRows)).toEqual([true, false, true]);
    expect(multi[1].opaque).toBe(true);
    expect(analyzeForMasking('CALL do_things()', cat, named)[0]).toMatchObject({ opaque: true, returnsRows: true });
    expect(analyzeForMasking('SELECT get_ssn(1)', cat, named)[0].opaque).toBe(true);
    expect(analyzeForMasking('SELECT upper(name) FROM customers', cat, named)[0].opaque).toBeFalsy();
  });
});
