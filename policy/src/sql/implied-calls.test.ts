import { beforeAll, describe, expect, it } from 'vitest';
import { parsePolicyDocuments } from '../api/load-documents.js';
import { decide } from '../engine/decide.js';
import { buildCatalogSnapshot } from '../masking/catalog-snapshot.js';
import { analyzeSql } from './analyze-sql.js';
import {
  policyCatalogOf,
  resolvedByUnknownNames,
  resolveImpliedDanger,
  resolveWithCatalog,
} from './catalog-resolution.js';
import { initSqlParser } from './parser.js';
import { createSessionState } from './session-state.js';

beforeAll(() => initSqlParser());

// `!!` (public) runs pg_cancel_backend, `%%` (public and app) user functions, `=` is also a user operator in app
// (off the path); casts to `spied` run its CHECK, writes to public.audited its trigger.
const snapshot = buildCatalogSnapshot([], [{ schema: 'public', name: 'spy' }], [], {
  operatorFunctions: [
    { name: '!!', schema: 'public', function: { schema: 'pg_catalog', name: 'pg_cancel_backend' } },
    { name: '%%', schema: 'public', function: { schema: 'public', name: 'spy' } },
    { name: '%%', schema: 'app', function: { schema: 'app', name: 'spy2' } },
    { name: '=', schema: 'app', function: { schema: 'app', name: 'eq' } },
  ],
  operatorNames: ['=', '+', '<', '>', '<=', '>=', '<>', '~~', '!!', '%%'],
  typeFunctions: [
    { type: 'spied', schema: 'public', name: 'spy' },
    { type: '_spied', schema: 'public', name: 'spy' },
  ],
  relationFunctions: [{ relation: 'public.audited', schema: 'public', name: 'on_insert' }],
});
const catalog = policyCatalogOf(snapshot);

function resolve(sql: string, searchPath = ['public']) {
  const state = createSessionState({ searchPath });
  const a = analyzeSql(sql, state);
  if (!a.ok) throw new Error(a.error.message);
  const r = resolveWithCatalog(a, catalog, state.searchPath);
  if (!r.ok) throw new Error('not ok');
  return { raw: a, resolved: r, statement: r.statements[0] };
}
const functions = (sql: string, searchPath?: string[]) =>
  resolve(sql, searchPath).statement.functions.map((f) => `${f.schema}.${f.name}`);

const spec = parsePolicyDocuments(`apiVersion: pgwarden.dev/v1alpha1
kind: DatabaseAccessPolicy
metadata: {name: p}
spec:
  database: {host: h, name: d}
  rules:
    - {name: reads, action: allow, statements: [select], functions: ["pg_catalog.*"]}
  guardrails:
    maxRowsAffected: 10
`).policies[0].spec;
const nobody = { groups: [] };

describe('operators run their functions', () => {
  it('a user operator counts as a call of its function; pg_catalog operators are not looked up', () => {
    expect(functions('SELECT !! 1234')).toEqual(['pg_catalog.pg_cancel_backend']);
    expect(functions('SELECT 1 + 2 WHERE 1 = 1 AND 2 > 1')).toEqual([]);
    // Every definition on the search path may be chosen; one off the path cannot.
    expect(functions('SELECT %% 1')).toEqual(['public.spy']);
    expect(functions('SELECT %% 1', ['public', 'app'])).toEqual(['public.spy', 'app.spy2']);
    // OPERATOR(schema.op) looks in that schema only; OPERATOR(pg_catalog.op) is PostgreSQL's own.
    expect(functions('SELECT 1 OPERATOR(app.=) 1')).toEqual(['app.eq']);
    expect(functions('SELECT 1 OPERATOR(pg_catalog.=) 1', ['public', 'app'])).toEqual([]);
  });

  it('implied operators count too: IN, BETWEEN, NULLIF, IS DISTINCT FROM, CASE x WHEN, USING, sublinks', () => {
    const eq = ['app.eq'];
    const path = ['public', 'app'];
    for (const sql of [
      'SELECT 1 IN (1, 2)',
      'SELECT NULLIF(1, 2)',
      'SELECT 1 IS DISTINCT FROM 2',
      'SELECT CASE 1 WHEN 2 THEN 3 END',
      'SELECT * FROM t JOIN u USING (id)',
      'SELECT * FROM t NATURAL JOIN u',
      'SELECT 1 WHERE 1 IN (SELECT 1)',
      'SELECT 1 WHERE 1 = ANY (SELECT 1)',
    ])
      expect(functions(sql, path), sql).toEqual(eq);
    expect(functions('SELECT x FROM t ORDER BY x USING %%', path)).toEqual(['public.spy', 'app.spy2']);
  });

  it('BETWEEN is its comparison operators', () => {
    const s = buildCatalogSnapshot([], [], [], {
      operatorFunctions: [{ name: '<=', schema: 'public', function: { schema: 'public', name: 'le' } }],
    });
    const state = createSessionState({ searchPath: ['public'] });
    const a = analyzeSql('SELECT 2 BETWEEN 1 AND 3', state);
    const r = resolveWithCatalog(a, policyCatalogOf(s), state.searchPath);
    expect(r.ok && r.statements[0].functions.map((f) => `${f.schema}.${f.name}`)).toEqual(['public.le']);
  });

  it('a dangerous function behind an operator is a dangerous use', () => {
    const d = decide(spec, resolve('SELECT !! 1234').resolved, nobody);
    expect(d.action).toBe('deny');
    expect(d.reason).toBe('dangerous:signal-backend');
    expect(d.message).toMatch(/pg_catalog\.pg_cancel_backend\(\) \(run by operator !!\)/);
  });

  it('a user function behind an operator needs a functions list entry and gets the maxRowsAffected cap', () => {
    const d = decide(spec, resolve('SELECT %% 1').resolved, nobody);
    expect(d.action).toBe('deny');
    expect(d.detail).toBe(`function "public.spy" (run by operator %%) is not in rule "reads"'s functions list`);
    const open = parsePolicyDocuments(`apiVersion: pgwarden.dev/v1alpha1
kind: DatabaseAccessPolicy
metadata: {name: p}
spec:
  database: {host: h, name: d}
  rules:
    - {name: reads, action: allow, statements: [select]}
  guardrails:
    maxRowsAffected: 10
`).policies[0].spec;
    expect(decide(open, resolve('SELECT %% 1').resolved, nobody).maxAffected).toBe(10);
    expect(decide(open, resolve('SELECT 1 = 1').resolved, nobody).maxAffected).toBeUndefined();
  });

  it('statements without user operators resolve to the same analysis object', () => {
    const { raw, resolved } = resolve('SELECT 1 WHERE 1 = 1 AND 2 IN (1, 2)');
    expect(resolved).toBe(raw);
  });

  it('an operator name the catalog does not know rests on an unknown name (the sidecar checks the catalog)', () => {
    expect(resolvedByUnknownNames(resolve('SELECT 1 = 1').raw)).toBe(false);
    expect(resolvedByUnknownNames(resolve('SELECT @@@ 1').raw)).toBe(true);
    expect(resolvedByUnknownNames(resolve('SELECT 1 OPERATOR(app.<>) 1').raw)).toBe(true);
  });
});

describe('casts and triggers run their functions', () => {
  it('a cast to a type with a CHECK or a user cast function is a call of it, arrays and function syntax too', () => {
    expect(functions("SELECT 1::spied, '{1}'::public.spied[]")).toEqual(['public.spy']);
    expect(functions('SELECT CAST(1 AS spied)')).toEqual(['public.spy']);
    expect(functions('SELECT spied(1)')).toEqual(['public.spied', 'public.spy']);
    expect(functions('SELECT 1::int, now()::date')).toEqual(['pg_catalog.now']);
  });

  it("a write to a relation is a call of its triggers' functions; a read is not", () => {
    expect(functions('INSERT INTO audited VALUES (1)')).toEqual(['public.on_insert']);
    expect(functions('UPDATE public.audited SET id = 2 WHERE id = 1')).toEqual(['public.on_insert']);
    expect(functions('SELECT * FROM audited')).toEqual([]);
  });
});

describe('resolveImpliedDanger (policies without function rules)', () => {
  const danger = (sql: string) => {
    const state = createSessionState({ searchPath: ['public'] });
    const a = analyzeSql(sql, state);
    if (!a.ok) throw new Error(a.error.message);
    const r = resolveImpliedDanger(a, catalog, state.searchPath);
    if (!r.ok) throw new Error('not ok');
    return { raw: a, resolved: r, dangerous: r.statements[0].dangerous.map((d) => `${d.category}: ${d.detail}`) };
  };

  it('adds only the dangerous uses implied code makes, not the functions it runs', () => {
    const r = danger('SELECT 1 !! 2, %% 3');
    expect(r.dangerous).toEqual(['signal-backend: pg_catalog.pg_cancel_backend() (run by operator !!)']);
    expect(r.resolved.statements[0].functions).toEqual(r.raw.ok ? r.raw.statements[0].functions : []);
  });

  it('returns the analysis itself when nothing dangerous is implied, once per analysis and path', () => {
    const r = danger('SELECT id FROM t WHERE id = 1 AND %% 2 > 0');
    expect(r.resolved).toBe(r.raw);
    expect(resolveImpliedDanger(r.raw, catalog, ['public'])).toBe(r.raw);
  });

  it('tells when an operator name the catalog does not know decided it', () => {
    const r = danger('SELECT 1 #?# 2');
    expect(resolvedByUnknownNames(r.raw)).toBe(true);
    expect(resolvedByUnknownNames(danger('SELECT 1 = 2').raw)).toBe(false);
  });
});

describe('defining an operator, aggregate or cast over a dangerous function', () => {
  it.each([
    [
      'CREATE OPERATOR ## (LEFTARG = int, RIGHTARG = bigint, FUNCTION = pg_terminate_backend)',
      'signal-backend: pg_terminate_backend() (function of operator ##)',
    ],
    [
      'CREATE OPERATOR public.## (RIGHTARG = int, PROCEDURE = pg_catalog.pg_cancel_backend)',
      'signal-backend: pg_catalog.pg_cancel_backend() (procedure of operator public.##)',
    ],
    [
      'CREATE AGGREGATE readit(bigint, bigint) (SFUNC = pg_read_file, STYPE = text)',
      'server-file-access: pg_read_file() (sfunc of aggregate readit)',
    ],
    [
      'CREATE AGGREGATE a(text) (SFUNC = textcat, STYPE = text, FINALFUNC = pg_read_file)',
      'server-file-access: pg_read_file() (finalfunc of aggregate a)',
    ],
    [
      'CREATE CAST (text AS label) WITH FUNCTION lo_import(text)',
      'large-object-file-io: lo_import() (the function of a cast)',
    ],
  ])('%s is a dangerous operation where it is defined', (sql, expected) => {
    const a = analyzeSql(sql, createSessionState({ searchPath: ['public'] }));
    if (!a.ok) throw new Error(a.error.message);
    expect(a.statements[0].dangerous.map((d) => `${d.category}: ${d.detail}`)).toEqual([expected]);
  });

  it('over harmless functions, is not', () => {
    const a = analyzeSql(
      'CREATE OPERATOR <+> (LEFTARG = int, RIGHTARG = int, FUNCTION = int4pl); CREATE AGGREGATE s(int) (SFUNC = int4pl, STYPE = int)',
      createSessionState({ searchPath: ['public'] }),
    );
    if (!a.ok) throw new Error(a.error.message);
    expect(a.statements.flatMap((s) => s.dangerous)).toEqual([]);
  });
});
