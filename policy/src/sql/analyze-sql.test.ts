import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { parsePolicyDocuments } from '../api/load-documents.js';
import { decide } from '../engine/decide.js';
import { analyzeSql } from './analyze-sql.js';
import { initSqlParser } from './parser.js';
import { createSessionState } from './session-state.js';

beforeAll(() => initSqlParser());

function one(sql: string, session = createSessionState()) {
  const a = analyzeSql(sql, session);
  if (!a.ok) throw new Error(a.error.message);
  return a.statements;
}

describe('analyzeSql', () => {
  it('slices statement text by UTF-8 byte offsets', () => {
    const s = one("SELECT 'é—ü'; /* ✓ */ DELETE FROM t WHERE a = 'ß' ; SELECT 3");
    // PostgreSQL's statement span starts at the first token, after any leading comment.
    expect(s.map((x) => x.text)).toEqual(["SELECT 'é—ü'", "DELETE FROM t WHERE a = 'ß'", 'SELECT 3']);
    expect(s.map((x) => x.kind)).toEqual(['select', 'delete', 'select']);
  });

  it('qualifies relations and functions, with access', () => {
    const [s] = one('INSERT INTO app.t SELECT lower(x), f(y) FROM u JOIN pg_class c ON true');
    expect(s.relations).toEqual([
      { schema: 'app', name: 't', access: 'write', qualified: true },
      { schema: 'public', name: 'u', access: 'read', qualified: false },
      { schema: 'pg_catalog', name: 'pg_class', access: 'read', qualified: false },
    ]);
    expect(s.functions).toEqual([
      { schema: 'pg_catalog', name: 'lower', qualified: false },
      { schema: 'public', name: 'f', qualified: false },
    ]);
    expect(s.writes).toBe(true);
  });

  it('keeps search_path candidates that may be in effect (SET, set_config, $user)', () => {
    const session = createSessionState({ searchPath: ['$user', 'public'], user: 'agent' });
    one('SET search_path = "Sales", other', session);
    const [s] = one('SELECT * FROM t', session);
    expect(s.relations.map((r) => r.schema)).toEqual(['agent', 'public', 'Sales', 'other']);
    one("SELECT set_config('search_path', 'x, pg_catalog', true)", session);
    const [c] = one('SELECT * FROM pg_class', session);
    expect(c.relations.map((r) => r.schema)).toContain('x');
  });

  it('tracks PREPARE per session and judges EXECUTE as every statement prepared under the name', () => {
    const session = createSessionState();
    one('PREPARE p AS SELECT * FROM a', session);
    one('PREPARE p AS DELETE FROM b', session); // may fail upstream; pgwarden assumes either may run
    const [e] = one('EXECUTE p', session);
    expect(e.kinds).toEqual(expect.arrayContaining(['select', 'delete']));
    expect(e.relations.map((r) => r.name).sort()).toEqual(['a', 'b']);
    expect(one('EXECUTE p', createSessionState())[0].unknownPrepared).toBe('p');
  });

  it('sees data-modifying CTEs, EXPLAIN ANALYZE, FOR UPDATE, DO bodies and trivial WHERE clauses', () => {
    expect(one('WITH x AS (UPDATE t SET a = 1 RETURNING 1) SELECT * FROM x')[0]).toMatchObject({
      kinds: ['select', 'update'],
      missingWhere: ['update'],
      writes: true,
    });
    expect(one('EXPLAIN (FORMAT JSON, ANALYZE) DELETE FROM t WHERE id = 1')[0].kinds).toEqual(['explain', 'delete']);
    expect(one('EXPLAIN DELETE FROM t')[0]).toMatchObject({ kinds: ['explain'], writes: false, missingWhere: [] });
    expect(one('SELECT * FROM t FOR NO KEY UPDATE')[0].kinds).toContain('lock');
    const [d] = one("DO $$ BEGIN UPDATE t SET a = 1 WHERE 1 = 1; EXECUTE 'x'; END $$");
    expect(d.kinds).toEqual(expect.arrayContaining(['do', 'update']));
    expect(d.missingWhere).toEqual(['update']);
    expect(d.dangerous).toEqual([{ category: 'dynamic-sql', detail: 'DO block: EXECUTE of a string' }]);
  });

  it('flags identity changes in every spelling', () => {
    for (const sql of [
      'SET ROLE x',
      'RESET ROLE',
      'SET SESSION AUTHORIZATION x',
      "SELECT set_config('Role', 'x', false)",
      'DO $$ BEGIN DISCARD ALL; END $$',
      "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'DISCARD ALL'",
    ]) {
      expect(one(sql)[0].identityChange, sql).toBeTruthy();
    }
    expect(one("SET statement_timeout = '1s'")[0].identityChange).toBeUndefined();
  });

  it('DISCARD is its own kind; a DISCARD ALL the client sends is no identity change (the sidecar restores its role)', () => {
    for (const sql of [
      'DISCARD ALL',
      'discard /* pool reset */ all',
      'DISCARD PLANS',
      'DISCARD TEMP',
      'DISCARD SEQUENCES',
    ]) {
      const [a] = one(sql);
      expect(a.kinds, sql).toEqual(['discard']);
      expect(a.identityChange, sql).toBeUndefined();
    }
  });

  it('index maintenance functions are maintenance writes of the index they name', () => {
    for (const f of [
      "brin_summarize_new_values('public.orders_brin')",
      "brin_summarize_range('public.orders_brin', 0)",
      "brin_desummarize_range('public.orders_brin', 0)",
      "gin_clean_pending_list('public.orders_brin')",
    ]) {
      const [a] = one(`SELECT ${f}`);
      expect(a.kinds, f).toEqual(['select', 'maintenance']);
      expect(a.writes, f).toBe(true);
      expect(a.relations, f).toContainEqual({
        schema: 'public',
        name: 'orders_brin',
        access: 'write',
        qualified: true,
      });
    }
    // A computed index name could be any index.
    const [c] = one("SELECT brin_summarize_new_values(c.oid) FROM pg_class c WHERE relkind = 'i'");
    expect(c.relations).toContainEqual({ schema: '*', name: '*', access: 'write', qualified: false });
  });

  it("pg_sequences shows every sequence's last value: reading it reads the unknown relation *", () => {
    expect(one("SELECT last_value FROM pg_sequences WHERE schemaname = 'hr'")[0].relations).toEqual([
      { schema: 'pg_catalog', name: 'pg_sequences', access: 'read', qualified: false },
      { schema: '*', name: '*', access: 'read', qualified: false },
    ]);
    expect(one('SELECT * FROM pg_catalog.pg_sequence')[0].relations).toHaveLength(1);
  });

  it('reports unparseable SQL with the position', () => {
    const a = analyzeSql('SELECT * FROM', createSessionState());
    expect(a).toMatchObject({ ok: false, error: { message: 'syntax error at end of input', position: 14 } });
  });

  it('bounds session state: too many variants of one prepared name make EXECUTE unknown (denied)', () => {
    const session = createSessionState();
    for (let i = 0; i < 9; i++) one(`PREPARE p AS SELECT ${i} FROM t${i}`, session);
    expect(one('EXECUTE p', session)[0].unknownPrepared).toBe('p');
    for (let i = 0; i < 70; i++) one(`SET search_path = s${i}`, session);
    expect(session.searchPath).toContain('*');
    expect(one('SELECT * FROM x', session)[0].relations.some((r) => r.schema === '*')).toBe(true);
  });

  it('denies (54001) a tree too deep to walk instead of throwing', () => {
    const n = 3000;
    const sql = `SELECT ${'coalesce('.repeat(n)}1${')'.repeat(n)}`;
    const a = analyzeSql(sql, createSessionState());
    expect(a).toMatchObject({ ok: false, error: { code: '54001' } });
  });

  it('walks a WITH of many CTEs in linear time, each body seeing only earlier siblings', () => {
    // The sidecar analyses on its only thread: 20 000 CTEs (450 kB) took ~12 s when each sibling copied the scope,
    // 1.3–2 s walked linearly on a slow 2-core machine under load (most of it libpg-query's parse). The bound sits
    // between the two with room for a loaded CI machine: it catches the quadratic walk, not a slower clock.
    const n = 20_000;
    const ctes = Array.from({ length: n }, (_, i) => `c${i} AS (SELECT 1 FROM ${i === 0 ? 't' : `c${i - 1}`})`);
    const t0 = performance.now();
    const [s] = one(`WITH ${ctes.join(',')} SELECT * FROM c${n - 1}`);
    expect(performance.now() - t0).toBeLessThan(6000);
    expect(s.relations).toEqual([{ schema: 'public', name: 't', access: 'read', qualified: false }]);
    // A later sibling is a table to an earlier body; WITH RECURSIVE makes it the CTE.
    expect(one('WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a')[0].relations).toEqual([
      { schema: 'public', name: 'b', access: 'read', qualified: false },
    ]);
    expect(one('WITH RECURSIVE a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a')[0].relations).toEqual([]);
  });

  it('caches by text and search_path, replaying session effects on a hit', () => {
    analyzeSql('SET search_path = z; SELECT * FROM t', createSessionState()); // admitted on its second sight
    const s1 = createSessionState();
    const first = analyzeSql('SET search_path = z; SELECT * FROM t', s1);
    expect(s1.searchPath).toEqual(['public', 'z']);
    const s2 = createSessionState();
    const second = analyzeSql('SET search_path = z; SELECT * FROM t', s2);
    expect(second).toBe(first);
    expect(s2.searchPath).toEqual(['public', 'z']);
    const s3 = createSessionState({ searchPath: ['other'] });
    expect(analyzeSql('SELECT * FROM t', s3)).not.toBe(analyzeSql('SELECT * FROM t', createSessionState()));
  });
});

describe('properties', () => {
  const policy = parsePolicyDocuments(
    'apiVersion: pgwarden.dev/v1alpha1\nkind: DatabaseAccessPolicy\nmetadata: {name: p}\nspec:\n  database: {host: h, name: d}\n  defaultAction: allow\n',
  ).policies[0].spec;

  it('never throws on arbitrary text, and text that cannot be analysed is always denied', () => {
    const fragments = fc.constantFrom(
      'SELECT',
      'DELETE',
      'FROM',
      't',
      ';',
      "'",
      '"',
      '$$',
      '--',
      '/*',
      '*/',
      '(',
      ')',
      ',',
      'WITH',
      'U&"\\0061"',
      'é',
      ' ',
    );
    const sqlish = fc.array(fragments, { maxLength: 20 }).map((a) => a.join(' '));
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 200 }), sqlish), (sql) => {
        const a = analyzeSql(sql, createSessionState());
        const d = decide(policy, a, { groups: [] });
        if (!a.ok) expect(d).toMatchObject({ action: 'deny', code: a.error.code });
        if (!a.ok) expect(['42601', '54001']).toContain(a.error.code);
      }),
      { numRuns: 1500 },
    );
  });

  it('identity changes are denied even when the default action allows everything', () => {
    const spellings = fc.constantFrom(
      'SET ROLE x',
      'set role none',
      'RESET ROLE',
      'SET SESSION AUTHORIZATION x',
      "SELECT set_config('role','x',false)",
    );
    fc.assert(
      fc.property(spellings, fc.constantFrom('', 'SELECT 1; ', 'BEGIN; '), (stmt, prefix) => {
        expect(decide(policy, analyzeSql(prefix + stmt, createSessionState()), { groups: [] }).action).toBe('deny');
      }),
    );
  });
});
