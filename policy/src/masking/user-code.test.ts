import { beforeAll, describe, expect, it } from 'vitest';
import { buildCatalogSnapshot, type CatalogRow, type CatalogSnapshot } from './catalog-snapshot.js';
import { initMaskingParser } from './sql-parse.js';
import { analyzeForMasking, type MaskAnalysis, type NamedOutputs } from './statement-analysis.js';

// Statements that run user-defined code without calling it by name: its RAISE output must be withheld (`opaque`).

const named: NamedOutputs = { cursor: () => undefined, prepared: () => undefined };
const BOXED_OID = 50001;

function table(oid: number, name: string, cols: Array<[string, number]>): CatalogRow[] {
  return cols.map(([attname, atttypid], i) => ({
    oid,
    schema: 'public',
    name,
    kind: 'r',
    attnum: i + 1,
    attname,
    atttypid,
    viewdef: null,
  }));
}

let cat: CatalogSnapshot;
beforeAll(async () => {
  await initMaskingParser();
  cat = buildCatalogSnapshot(
    [
      ...table(100, 'customers', [
        ['id', 23],
        ['full_name', 25],
        ['ssn', 1043],
      ]),
      ...table(101, 'parcels', [
        ['id', 23],
        ['content', BOXED_OID],
      ]),
      ...table(102, 'name_view', [['full_name', 25]]),
    ],
    ['peek', 'peek_row', 'full_name_of'],
    [],
    {
      operators: ['=~~=', '~~', '='],
      types: [
        { oid: 50000, name: 'checked', source: false },
        { oid: BOXED_OID, name: 'boxed', source: true },
        { oid: 50002, name: 'name_view', source: true },
      ],
    },
  );
});

const all = (sql: string, snap = cat): MaskAnalysis[] => analyzeForMasking(sql, snap, named);
const opaque = (sql: string, snap = cat): boolean => all(sql, snap).some((a) => a.opaque === true);

describe('user-defined operators', () => {
  it('a qualified operator outside pg_catalog is a user’s, known or not', () => {
    expect(opaque("SELECT full_name OPERATOR(s.=~~=) 'x' FROM customers")).toBe(true);
    expect(opaque("SELECT full_name OPERATOR(other.<<<) 'x' FROM customers")).toBe(true);
    expect(opaque("SELECT full_name OPERATOR(pg_catalog.||) 'x' FROM customers")).toBe(false);
  });
  it('an unqualified name some user operator has, however the syntax spells it', () => {
    for (const sql of [
      "SELECT full_name =~~= 'x' FROM customers",
      "SELECT ssn LIKE 'x' FROM customers",
      "SELECT CASE ssn WHEN 'x' THEN 1 END FROM customers",
      "SELECT nullif(ssn, 'x') FROM customers",
      "SELECT ssn IS DISTINCT FROM 'x' FROM customers",
      "SELECT ssn IN ('a', 'b') FROM customers",
      "SELECT ssn = ANY(ARRAY['a']) FROM customers",
      'SELECT ssn IN (SELECT ssn FROM customers) FROM customers',
      'SELECT 1 FROM customers a JOIN customers b USING (ssn)',
      'SELECT 1 FROM customers a NATURAL JOIN customers b',
      'SELECT id FROM customers WHERE id = 1',
    ])
      expect(opaque(sql), sql).toBe(true);
  });
  it('BETWEEN is checked as the comparisons it becomes', () => {
    const snap = buildCatalogSnapshot(table(100, 'customers', [['ssn', 25]]), [], [], { operators: ['>='] });
    expect(opaque("SELECT ssn BETWEEN 'a' AND 'b' FROM customers", snap)).toBe(true);
  });
  it('built-in operators alone run no user code', () => {
    const snap = buildCatalogSnapshot(table(100, 'customers', [['ssn', 25]]), ['peek'], [], { operators: ['=~~='] });
    for (const sql of [
      "SELECT ssn LIKE 'x', ssn || 'y', ssn = 'z', CASE ssn WHEN 'a' THEN 1 END FROM customers",
      "SELECT 1 FROM customers a JOIN customers b USING (ssn) WHERE a.ssn BETWEEN 'a' AND 'b' ORDER BY 1",
    ])
      expect(opaque(sql, snap), sql).toBe(false);
  });
});

describe('operators resolved by operand types', () => {
  // A user `=` on (varchar, varchar); pg_catalog's on (int4, int4), (text, text), (int8, int4).
  const typed = (): CatalogSnapshot =>
    buildCatalogSnapshot(
      table(100, 'customers', [
        ['id', 23],
        ['full_name', 25],
        ['ssn', 1043],
        ['big', 20],
      ]),
      [],
      [],
      {
        operators: ['='],
        operatorSignatures: [
          { name: '=', left: 1043, right: 1043, user: true },
          { name: '=', left: 23, right: 23, user: false },
          { name: '=', left: 25, right: 25, user: false },
          { name: '=', left: 20, right: 23, user: false },
        ],
      },
    );
  it('operands of known types that pg_catalog has an exact operator for run no user code', () => {
    for (const sql of [
      'SELECT id FROM customers WHERE id = 1',
      "SELECT id FROM customers c WHERE c.full_name = 'x' AND big = 0",
      'SELECT id FROM customers WHERE id IN (1, 2, 3)',
      "SELECT nullif(full_name, 'x') FROM customers",
      'SELECT 1 FROM customers a, customers b WHERE a.id = b.id',
      'SELECT id FROM customers WHERE id::pg_catalog.int4 = 1',
      'SELECT 1 FROM customers WHERE ssn OPERATOR(pg_catalog.=) ssn',
    ])
      expect(opaque(sql, typed()), sql).toBe(false);
  });
  it('the user operator’s own types, types not known, or no exact built-in: user code', () => {
    for (const sql of [
      "SELECT id FROM customers WHERE ssn = 'x'",
      "SELECT id FROM customers WHERE ssn::varchar = 'x'",
      'SELECT id FROM customers WHERE ssn = full_name',
      'SELECT id FROM customers WHERE id = $1',
      'SELECT id FROM customers WHERE id = 99999999999',
      "SELECT 'a' = 'b'",
      'SELECT x.id = 1 FROM (SELECT id FROM customers) x',
      'SELECT id FROM customers WHERE (SELECT 1) = id',
      "SELECT id FROM customers WHERE id IN (1, '2', $1)",
      'SELECT id FROM customers WHERE nosuch = 1',
      'SELECT CASE id WHEN 1 THEN 1 END FROM customers',
    ])
      expect(opaque(sql, typed()), sql).toBe(true);
  });
  // Implicit casts as pg_cast has them (PostgreSQL 15): varchar to text, bpchar, name, regclass; text to bpchar,
  // varchar, name, regclass; date to timestamp(tz). Point has none.
  const implicitCasts = [
    { source: 1043, targets: [25, 1042, 19, 2205, 1043] },
    { source: 25, targets: [1042, 1043, 19, 2205] },
    { source: 1082, targets: [1114, 1184] },
    { source: 1114, targets: [1184, 1083, 1114] },
    { source: 23, targets: [20, 21, 700, 701, 1700] },
    { source: 600, targets: [] },
  ];
  const withUserEquals = (left: number, right: number): CatalogSnapshot =>
    buildCatalogSnapshot(
      table(100, 'customers', [
        ['id', 23],
        ['full_name', 25],
        ['ssn', 1043],
        ['born', 1082],
        ['spot', 600],
      ]),
      [],
      [],
      {
        operators: ['='],
        operatorSignatures: [
          { name: '=', left, right, user: true },
          { name: '=', left: 25, right: 25, user: false },
          { name: '=', left: 1042, right: 1042, user: false },
          { name: '=', left: 1082, right: 1082, user: false },
        ],
        implicitCasts,
      },
    );
  const varcharUses = [
    "SELECT id FROM customers WHERE ssn = 'x'",
    'SELECT id FROM customers WHERE ssn = ssn',
    'SELECT id FROM customers WHERE ssn = full_name',
    "SELECT id FROM customers WHERE ssn IN ('a', 'b')",
    "SELECT nullif(ssn, 'x') FROM customers",
  ];
  it('no exact built-in, but no user operator the operands convert to implicitly: no user code', () => {
    // A user `=` on dates, or on (date, text): a varchar left operand reaches neither (no implicit cast to date).
    for (const [l, r] of [
      [1082, 1082],
      [1082, 25],
      [1114, 1114],
    ] as const)
      for (const sql of varcharUses) expect(opaque(sql, withUserEquals(l, r)), `${l},${r}: ${sql}`).toBe(false);
  });
  it('a user operator the operands may convert to, or operand types whose conversions are not known: user code', () => {
    // varchar itself, text (implicit), polymorphic, a domain or user type (its base type or a WITH INOUT cast).
    for (const [l, r] of [
      [1043, 1043],
      [25, 25],
      [1043, 25],
      [2283, 2283],
      [2276, 25],
      [60001, 60001],
    ] as const)
      for (const sql of varcharUses) expect(opaque(sql, withUserEquals(l, r)), `${l},${r}: ${sql}`).toBe(true);
    // A date literal operand is unknown and converts to anything: the user (date, date) `=` is a candidate.
    expect(opaque("SELECT id FROM customers WHERE born = '2020-01-01'", withUserEquals(1082, 1082))).toBe(true);
    // An operand type without its implicit casts loaded (point's are; timestamp[]'s are not): counted.
    expect(opaque("SELECT id FROM customers WHERE spot = 'x'", withUserEquals(1082, 1082))).toBe(false);
    expect(opaque("SELECT id FROM customers WHERE ssn::text[] = '{x}'", withUserEquals(1082, 1082))).toBe(true);
  });
  it('a user operator of pg_catalog’s operand types is hidden where every search_path searches pg_catalog first', () => {
    const snap = withUserEquals(25, 25);
    const uses = [
      ...varcharUses,
      "SELECT id FROM customers WHERE full_name = 'x'",
      'SELECT CASE ssn WHEN 1 THEN 1 END FROM customers',
    ];
    const on = (sql: string, catalogFirst: boolean) =>
      analyzeForMasking(sql, snap, named, { catalogFirst }).some((a) => a.opaque === true);
    for (const sql of uses) {
      expect(on(sql, true), sql).toBe(false);
      expect(on(sql, false), sql).toBe(true);
    }
    // A user operator of other operand types is not hidden by pg_catalog's.
    expect(
      analyzeForMasking("SELECT id FROM customers WHERE ssn = 'x'", withUserEquals(1043, 1043), named, {
        catalogFirst: true,
      }).some((a) => a.opaque === true),
    ).toBe(true);
  });
  it('without the operand types of a name loaded, every use of it counts', () => {
    const snap = buildCatalogSnapshot(table(100, 'customers', [['id', 23]]), [], [], { operators: ['='] });
    expect(opaque('SELECT id FROM customers WHERE id = 1', snap)).toBe(true);
  });
});

describe('field notation', () => {
  it('`t.f` and `(t).f` call a user function f(t) when t has no column f', () => {
    expect(opaque('SELECT c.peek_row FROM customers c')).toBe(true);
    expect(opaque('SELECT customers.peek_row FROM customers')).toBe(true);
    expect(opaque('SELECT (c).peek_row FROM customers c')).toBe(true);
  });
  it('a real column, or a name no user function has, is no call', () => {
    expect(opaque('SELECT c.full_name, (c).ssn FROM customers c')).toBe(false);
    expect(opaque('SELECT c.nosuch FROM customers c')).toBe(false);
  });
});

describe('casts and domains', () => {
  it('a cast to a domain or to an end of a user cast, in any spelling', () => {
    for (const sql of [
      'SELECT ssn::checked FROM customers',
      'SELECT CAST(ssn AS public.checked) FROM customers',
      'SELECT ARRAY[ssn]::checked[] FROM customers',
      'SELECT checked(ssn) FROM customers',
      'SELECT full_name::boxed FROM customers',
      "SELECT JSON_VALUE('\"a\"', '$' RETURNING checked)",
    ])
      expect(opaque(sql), sql).toBe(true);
  });
  it('reading a value of a cast source type: a row type, a column', () => {
    expect(opaque('SELECT n::text FROM name_view n')).toBe(true);
    expect(opaque('SELECT id FROM parcels')).toBe(true);
  });
  it('built-in casts and ordinary relations run no user code', () => {
    expect(opaque('SELECT ssn::text, id::int8, full_name::varchar(5) FROM customers c')).toBe(false);
  });
});

describe('code defined before the snapshot knows it', () => {
  it('code-defining statements say so; a table only when a constraint or column type runs user code', () => {
    expect(all('CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$')[0].definesCode).toBe(true);
    expect(all('CREATE OPERATOR <~> (LEFTARG = text, RIGHTARG = text, FUNCTION = f)')[0].definesCode).toBe(true);
    expect(all('CREATE CAST (text AS boxed) WITH FUNCTION f(text)')[0].definesCode).toBe(true);
    expect(all('CREATE DOMAIN d AS text CHECK (f(VALUE))')[0].definesCode).toBe(true);
    expect(all('CREATE TABLE t (v text CHECK (peek(v, v)))')[0].definesCode).toBe(true);
    expect(all('CREATE TABLE t (v checked)')[0].definesCode).toBe(true);
    expect(all('ALTER TABLE t ALTER v SET DEFAULT peek(1, 2)')[0].definesCode).toBe(true);
    expect(all('CREATE TABLE t (v text CHECK (length(v) > 0), n int DEFAULT 1)')[0].definesCode).toBeFalsy();
  });
  it('statements after one in the same Query count as running user code', () => {
    const [def, use] = all(
      "CREATE OPERATOR <~> (LEFTARG = text, RIGHTARG = text, FUNCTION = f); SELECT full_name <~> 'x' FROM customers",
    );
    expect(def.opaque).toBeFalsy();
    expect(use.opaque).toBe(true);
  });
});
