import { beforeAll, describe, expect, it } from 'vitest';
import { parsePolicyDocuments } from '../api/load-documents.js';
import { decide } from '../engine/decide.js';
import { buildCatalogSnapshot, type CatalogRow } from '../masking/catalog-snapshot.js';
import { analyzeSql } from './analyze-sql.js';
import { policyCatalogOf, resolveWithCatalog } from './catalog-resolution.js';
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
