import { beforeAll, describe, expect, it } from 'vitest';
import { parsePolicyDocuments } from '../api/load-documents.js';
import { decide } from '../engine/decide.js';
import { buildCatalogSnapshot, type CatalogRow } from '../masking/catalog-snapshot.js';
import { analyzeSql } from './analyze-sql.js';
import { policyCatalogOf, resolvedByUnknownNames, resolveWithCatalog } from './catalog-resolution.js';
import { initSqlParser } from './parser.js';
import { createSessionState } from './session-state.js';

beforeAll(() => initSqlParser());

const rows: CatalogRow[] = [
  ['id', 'status'].map((c, i) => ({ oid: 10, schema: 'public', name: 'orders', kind: 'r', attnum: i + 1, attname: c })),
  [{ oid: 11, schema: 'hr', name: 'salaries', kind: 'r', attnum: 1, attname: 'amount' }],
]
  .flat()
  .map((r) => ({ ...r, atttypid: 23, viewdef: null }));
// public.leak(orders) and public.lower(varchar) are user code; so is app.lower, in a schema off the path.
const snapshot = buildCatalogSnapshot(rows, [
  { schema: 'public', name: 'leak' },
  { schema: 'public', name: 'lower' },
  { schema: 'app', name: 'upper' },
]);
const catalog = policyCatalogOf(snapshot);

function analyse(sql: string, searchPath = ['public']) {
  const state = createSessionState({ searchPath });
  const a = analyzeSql(sql, state);
  if (!a.ok) throw new Error(a.error.message);
  return { raw: a, resolved: resolveWithCatalog(a, catalog, state.searchPath) };
}
const functions = (sql: string, searchPath?: string[]) => {
  const { resolved } = analyse(sql, searchPath);
  if (!resolved.ok) throw new Error('not ok');
  return resolved.statements.flatMap((s) => s.functions.map((f) => `${f.schema}.${f.name}`));
};

const spec = parsePolicyDocuments(`apiVersion: pgwarden.dev/v1alpha1
kind: DatabaseAccessPolicy
metadata: {name: p}
spec:
  database: {host: h, name: d}
  rules:
    - {name: reads, action: allow, statements: [select], tables: ["public.*", "pg_catalog.*"], functions: ["pg_catalog.*"]}
`).policies[0].spec;
const nobody = { groups: [] };

describe('t.f: a column, or a call of f(t)', () => {
  it('is a call when the relation has no column f, per the catalog', () => {
    expect(functions('SELECT o.leak FROM orders o')).toEqual(['public.leak']);
    expect(functions('SELECT orders.leak FROM public.orders')).toEqual(['public.leak']);
    // A function the snapshot does not know yet: still no column of that name, so a call.
    expect(functions('SELECT o.fresh FROM orders o')).toEqual(['public.fresh']);
    expect(functions('SELECT o.id, o.status, o.ctid FROM orders o WHERE o.id > 0')).toEqual([]);
    // A catalog relation's own columns come with pgwarden; any other name on it is a call.
    expect(functions('SELECT c.relname, c.oid FROM pg_catalog.pg_class c')).toEqual([]);
    expect(functions('SELECT c.leak FROM pg_class c')).toEqual(['public.leak']);
  });

  it('where the analysis cannot name the relation, is a call only of a user function the catalog knows', () => {
    expect(functions('WITH w AS (SELECT * FROM orders) SELECT w.leak, w.id FROM w')).toEqual(['public.leak']);
    expect(functions('SELECT x.y.leak FROM orders x')).toEqual(['public.leak']);
    // Subquery targets are its columns.
    expect(functions('SELECT s.n, s.leak FROM (SELECT id AS n FROM orders) s')).toEqual(['public.leak']);
  });

  it('on a CTE or subquery, is a column when the tree names one, else a call whatever the catalog knows', () => {
    const both = (sql: string) => {
      const { raw, resolved } = analyse(sql);
      if (!raw.ok || !resolved.ok) throw new Error('not ok');
      const fns = (a: typeof raw) =>
        a.ok ? a.statements.flatMap((s) => s.functions.map((f) => `${f.schema}.${f.name}`)) : [];
      const possible = raw.statements.flatMap((s) => (s.fieldCalls ?? []).map((c) => c.name));
      return { raw: fns(raw), possible, resolved: fns(resolved) };
    };
    const none = { raw: [], possible: [], resolved: [] };
    // Output names through AS, a column list, FigureColname's rules, nesting, recursion and RETURNING.
    expect(both('WITH x AS (SELECT status AS e FROM orders) SELECT x.e FROM x')).toEqual(none);
    expect(both('WITH x(a, b) AS (SELECT id, status FROM orders) SELECT x.a, x.b FROM x')).toEqual(none);
    expect(both('WITH x(a) AS (SELECT id, status FROM orders) SELECT x.a, x.status FROM x')).toEqual(none);
    expect(
      both(
        "WITH x AS (SELECT status::text, coalesce(status, 'x'), (SELECT 1 AS one) FROM orders) SELECT x.status, x.coalesce, x.one FROM x",
      ),
    ).toEqual(none);
    expect(both('SELECT y.a FROM (WITH x(a) AS (SELECT 1) SELECT a FROM x) y')).toEqual(none);
    expect(
      both('WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT r.n + 1 FROM r WHERE r.n < 3) SELECT r.n FROM r'),
    ).toEqual(none);
    expect(both('WITH w AS (DELETE FROM orders WHERE id = 0 RETURNING id AS gone) SELECT w.gone FROM w')).toEqual(none);
    expect(both('SELECT v.column1 FROM (VALUES (1)) v')).toEqual(none);
    // No such column: a call of fresh(x), known to the catalog or not (created by another connection since).
    const fresh = { raw: ['public.fresh'], possible: [], resolved: ['public.fresh'] };
    expect(both('WITH x AS (SELECT status AS e FROM orders) SELECT x.fresh FROM x')).toEqual(fresh);
    expect(both('WITH x(a) AS (SELECT id, status FROM orders) SELECT x.status, x.fresh FROM x')).toEqual(fresh);
    expect(both('SELECT s.fresh FROM (SELECT id AS n FROM orders) s')).toEqual(fresh);
    expect(both('SELECT s.id, s.fresh FROM (SELECT id FROM orders) s(n)')).toEqual({
      raw: ['public.id', 'public.fresh'],
      possible: [],
      resolved: ['public.id', 'public.fresh'],
    });
    // A CTE hides the table of its name, and its columns are the CTE's.
    expect(both('WITH orders AS (SELECT 1 AS n) SELECT orders.id FROM orders')).toEqual({
      raw: ['public.id'],
      possible: [],
      resolved: ['public.id'],
    });
    // …but not the table an UPDATE writes: there t.f is judged by the table's columns.
    expect(both('WITH orders AS (SELECT 1 AS n) UPDATE orders SET status = orders.status WHERE orders.id = 0')).toEqual(
      {
        raw: [],
        possible: ['status', 'id'],
        resolved: [],
      },
    );
    // A `*` over one table: the table's columns, as the catalog knows them (a column, or else a call).
    expect(both('WITH x AS (SELECT * FROM orders) SELECT x.id, x.fresh FROM x')).toEqual({
      raw: [],
      possible: ['id', 'fresh'],
      resolved: ['public.fresh'],
    });
    expect(both('SELECT s.n, s.status, s.fresh FROM (SELECT id AS n, * FROM public.orders o) s')).toEqual({
      raw: [],
      possible: ['status', 'fresh'],
      resolved: ['public.fresh'],
    });
    // A `*` the tree cannot expand otherwise (a join), or a name FigureColname does not know: a user function of that
    // name decides, as before.
    expect(both('WITH x AS (SELECT * FROM orders o JOIN orders p USING (id)) SELECT x.fresh FROM x')).toEqual({
      raw: [],
      possible: ['fresh'],
      resolved: [],
    });
  });

  it("on a join's USING alias, is a column for a USING column, else a call whatever the catalog knows", () => {
    // `AS x` after USING (PostgreSQL 14+) names the USING columns only; PostgreSQL runs `x.f` as f(x) for any other.
    const sql = (refs: string) => `SELECT ${refs} FROM orders o JOIN orders p USING (id) AS x`;
    const { raw } = analyse(sql('x.id, o.status'));
    // o.status is the catalog's to tell; x.id is a column by the tree alone.
    expect(raw.ok && raw.statements[0].fieldCalls?.map((c) => c.name)).toEqual(['status']);
    expect(resolvedByUnknownNames(raw)).toBe(false);
    expect(functions(sql('x.id'))).toEqual([]);
    expect(functions(sql('x.status'))).toEqual(['public.status']);
    expect(functions(sql('x.fresh'))).toEqual(['public.fresh']);
    expect(resolvedByUnknownNames(analyse(sql('x.fresh')).raw)).toBe(false);
    // Without parentheses the sides keep their names.
    expect(functions('SELECT o.id, p.status FROM orders o JOIN orders p USING (id) AS x')).toEqual([]);
  });

  it('says when a name the catalog does not know made t.f a column (the sidecar checks the catalog then)', () => {
    const unknown = (sql: string) => {
      const { raw } = analyse(sql);
      return resolvedByUnknownNames(raw);
    };
    // No function `fresh` known, and nothing else tells: a function created since would make it a call.
    expect(unknown('WITH w AS (SELECT * FROM orders o JOIN orders p USING (id)) SELECT w.fresh FROM w')).toBe(true);
    expect(unknown('SELECT n.fresh FROM new_table n')).toBe(true);
    expect(unknown('SELECT j.fresh FROM (orders o JOIN orders p USING (id)) j')).toBe(true);
    // Decided by what the catalog or the tree does know.
    expect(unknown('WITH w AS (SELECT * FROM orders o JOIN orders p USING (id)) SELECT w.leak FROM w')).toBe(false);
    expect(unknown('WITH w AS (SELECT * FROM orders) SELECT w.fresh FROM w')).toBe(false);
    expect(unknown('SELECT o.id, o.fresh FROM orders o')).toBe(false);
    expect(unknown('WITH w AS (SELECT id FROM orders) SELECT w.id, w.fresh FROM w')).toBe(false);
    expect(unknown('SELECT id FROM orders')).toBe(false);
  });

  it('without a catalog counts for rules with a functions list, fail closed', () => {
    const { raw, resolved } = analyse('SELECT o.leak FROM orders o');
    const before = decide(spec, raw, nobody);
    expect(before).toMatchObject({ action: 'deny', reason: 'default' });
    expect(before.message).toContain('function "public.leak" (field notation: t.leak may call it)');
    expect(decide(spec, resolved, nobody)).toMatchObject({ action: 'deny', reason: 'default' });
    const column = analyse('SELECT o.id FROM orders o');
    expect(decide(spec, column.raw, nobody).action).toBe('deny');
    expect(decide(spec, column.resolved, nobody)).toMatchObject({ action: 'allow', rule: 'reads' });
    // Catalog queries of clients (psql \d, pgjdbc) name catalog columns: allowed with or without a catalog.
    const psql = analyse(`SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c
      LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relname OPERATOR(pg_catalog.~) '^(t)$'`);
    expect(psql.raw.ok && psql.raw.statements[0].fieldCalls).toBeFalsy();
    expect(decide(spec, psql.raw, nobody).action).toBe('allow');
  });
});

describe('unqualified calls of a name a user function overloads', () => {
  it('count as calls of the user function in every schema on search_path that defines it', () => {
    expect(functions('SELECT lower(status) FROM orders')).toEqual(['pg_catalog.lower', 'public.lower']);
    expect(functions('SELECT pg_catalog.lower(status) FROM orders')).toEqual(['pg_catalog.lower']);
    // app is not on the path: its upper cannot be chosen; on the path, it can.
    expect(functions('SELECT upper(status) FROM orders')).toEqual(['pg_catalog.upper']);
    expect(functions('SELECT upper(status) FROM orders', ['public', 'app'])).toEqual(['pg_catalog.upper', 'app.upper']);
    // In field notation too: `o.lower` may be lower(o).
    expect(functions('SELECT o.lower FROM orders o')).toEqual(['pg_catalog.lower', 'public.lower']);
    const { raw, resolved } = analyse('SELECT lower(status) FROM orders');
    expect(decide(spec, raw, nobody).action).toBe('allow');
    expect(decide(spec, resolved, nobody)).toMatchObject({ action: 'deny', reason: 'default' });
    expect(decide(spec, resolved, nobody).message).toContain('function "public.lower"');
  });

  it('resolves once per analysis, catalog and path', () => {
    const state = createSessionState();
    const a = analyzeSql('SELECT 1', state);
    expect(resolveWithCatalog(a, catalog, state.searchPath)).toBe(a);
    const b = analyzeSql('SELECT lower(status) FROM orders', state);
    expect(resolveWithCatalog(b, catalog, state.searchPath)).toBe(resolveWithCatalog(b, catalog, state.searchPath));
  });
});

describe('t.f where names are scoped', () => {
  it('a column list renames the relation’s first columns: their own names are calls there', () => {
    // orders is (id, status): `o(a)` renames id, so `o.id` is id(o) and `o.status` stays a column.
    expect(functions('SELECT o.id FROM orders o(a)')).toEqual(['public.id']);
    expect(functions('SELECT o.a, o.status, a, status FROM orders o(a)')).toEqual([]);
    expect(functions('SELECT o.status FROM orders o(a, b)')).toEqual(['public.status']);
    // A catalog relation's columns come with pgwarden, in order: pg_namespace is (oid, nspname, …).
    expect(functions('SELECT n.oid FROM pg_catalog.pg_namespace n(x)')).toEqual(['pg_catalog.oid']);
    expect(functions('SELECT n.nspname FROM pg_catalog.pg_namespace n(x)')).toEqual([]);
    // The same name under two aliases of one statement is judged for each.
    expect(functions('SELECT p.id, o.id FROM orders p, orders o(a)')).toEqual(['public.id']);
  });

  it('a function in FROM: a column list renames its one scalar column', () => {
    const possible = (sql: string) => {
      const { raw } = analyse(sql);
      return raw.ok ? raw.statements.flatMap((s) => (s.fieldCalls ?? []).map((c) => c.name)) : [];
    };
    expect(possible('SELECT g.g FROM generate_series(1, 2) AS g')).toEqual([]);
    expect(possible('SELECT g.g, g.ordinality FROM generate_series(1, 2) WITH ORDINALITY AS g')).toEqual([]);
    expect(possible('SELECT g.a FROM generate_series(1, 2) AS g(a)')).toEqual([]);
    // Renamed to a: `g.g` is g(g), if such a function exists.
    expect(possible('SELECT g.g FROM generate_series(1, 2) AS g(a)')).toEqual(['g']);
    expect(possible('SELECT r.r FROM ROWS FROM (generate_series(1, 2), generate_series(1, 3)) AS r')).toEqual(['r']);
    expect(possible("SELECT t.b FROM json_to_record('{}') AS t(a int, b text)")).toEqual([]);
    expect(possible("SELECT t.t FROM json_to_record('{}') AS t(a int, b text)")).toEqual(['t']);
  });

  it('a CTE name is resolved at the query level whose FROM reads it, not where the reference sits', () => {
    // `c.leak` names the outer query's c (no column leak: a call), though an inner WITH defines a c that has one.
    expect(
      functions('WITH c AS (SELECT 1 AS other) SELECT (WITH c AS (SELECT 1 AS leak) SELECT c.leak FROM orders) FROM c'),
    ).toEqual(['public.leak']);
    expect(
      functions('WITH c AS (SELECT 1 AS leak) SELECT (WITH c AS (SELECT 1 AS other) SELECT c.leak FROM orders) FROM c'),
    ).toEqual([]);
    // In WHERE too.
    expect(
      functions(
        'WITH c AS (SELECT 1 AS other) SELECT 1 FROM c WHERE EXISTS (WITH c AS (SELECT 1 AS leak) SELECT c.leak FROM orders)',
      ),
    ).toEqual(['public.leak']);
    // A CTE over `*` reads its FROM where it is defined: there `orders` is the table (whose catalog columns tell
    // that status is one), not the CTE of that name where the reference sits.
    const { raw } = analyse(
      'WITH x AS (SELECT * FROM orders) SELECT (WITH orders AS (SELECT 1 AS n) SELECT x.status FROM x LIMIT 1)',
    );
    expect(raw.ok && raw.statements[0].fieldCalls?.map((c) => c.relations)).toEqual([
      [{ schema: 'public', name: 'orders' }],
    ]);
    expect(resolvedByUnknownNames(raw)).toBe(false);
  });
});
