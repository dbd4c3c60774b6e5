import { loadModule, parsePlPgSQLSync, parseSync } from 'libpg-query';
import { beforeAll, describe, expect, it } from 'vitest';
import { CORPUS } from '../corpus/statement-corpus.js';
import { loadPgQuery, type PgQueryBinding } from './libpg-query-wasm.js';
import { initSqlParser, type ParseFailure, parsePlpgsqlFunction, parseSql } from './parser.js';

/**
 * The binding must give exactly what libpg-query's own wrapper (index.js, which the parser used before) gives:
 * compared here against that wrapper, which loads a second WASM instance in this test process only.
 */
const EDGE_CASES = [
  '',
  ' ',
  ';',
  'SELECT 1; SELECT 2',
  'SELEC 1',
  'SELECT 1 +',
  "SELECT 'abc",
  'SELECT $$x',
  'SELECT \u0000 1',
  '\u0000SELECT 1',
  "SELECT 'é' FROM t WHERE x = 'ü' AND AND y",
  "SELECT 'é😀ü' FROM t WHERE",
  "SELECT '\uD800' FROM t", // a lone surrogate: encoded as emscripten does, not as U+FFFD
  "SELECT '\uDC00x' FROM t WHERE WHERE",
  "SELECT 1; /* é */ SELECT 'ü'; SELECT 3",
  '/* only a comment */',
  `SELECT '${'ü'.repeat(30000)}'`, // longer than the reused input buffer
  `SELECT '${'a'.repeat(200000)}' FROM t WHERE`,
];

/** What parser.ts made of libpg-query's errors before: SqlError's 0-based cursorPosition + 1. */
function expectedOutcome(sql: string): { ok: true; stmts: unknown } | { ok: false; error: ParseFailure } {
  try {
    return { ok: true, stmts: (parseSync(sql) as { stmts?: unknown[] }).stmts ?? [] };
  } catch (e) {
    const err = e as { message: string; sqlDetails?: { cursorPosition?: number } };
    const pos = err.sqlDetails?.cursorPosition;
    return { ok: false, error: { message: err.message, position: typeof pos === 'number' ? pos + 1 : undefined } };
  }
}

describe('libpg-query binding', () => {
  let pg: PgQueryBinding;
  beforeAll(async () => {
    await initSqlParser();
    pg = await loadPgQuery();
    // The wrapper instantiates its WASM when first imported, without waiting; where the parser was already loaded in
    // this worker (files share it), the line above returns at once, before the wrapper is ready.
    await loadModule();
  });

  it('parses every corpus statement and edge case as libpg-query parseSync does', () => {
    for (const sql of [...CORPUS.map((e) => e.sql), ...EDGE_CASES]) {
      // The one deliberate difference: an empty string is no statements (PostgreSQL's EmptyQueryResponse), where
      // libpg-query throws "Query cannot be empty".
      const want = sql === '' ? { ok: true, stmts: [] } : expectedOutcome(sql);
      expect(parseSql(sql), sql.slice(0, 80)).toEqual(want);
    }
    expect(expectedOutcome('')).toMatchObject({ ok: false });
  });

  it('parses PL/pgSQL as libpg-query parsePlPgSQLSync does, errors included', () => {
    const fn = (body: string) => `CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $b$${body}$b$`;
    for (const sql of [
      fn('BEGIN RETURN 1; END'),
      fn("BEGIN EXECUTE 'DROP TABLE t'; RETURN 1; END"),
      fn('BEGIN RETURN 1 END'),
      fn("BEGIN RAISE NOTICE 'é😀'; RETURN 1; END"),
      'SELECT 1',
      'SELEC',
      '',
    ]) {
      let want: unknown;
      try {
        want = { ok: true, tree: parsePlPgSQLSync(sql) };
      } catch (e) {
        want = { ok: false, error: { message: (e as Error).message, position: undefined } };
      }
      expect(parsePlpgsqlFunction(sql), sql).toEqual(want);
    }
  });

  it('reuses its input buffer without reading what a longer statement left behind', () => {
    expect(pg.parseQueryJson(`SELECT 1 FROM ${'x'.repeat(60)} WHERE a = 'ééé'`)).toContain('"relname"');
    const tree = JSON.parse(pg.parseQueryJson('SELECT 2')) as { stmts: unknown[] };
    expect(tree.stmts).toEqual([
      {
        stmt: {
          SelectStmt: {
            targetList: [{ ResTarget: { val: { A_Const: { ival: { ival: 2 }, location: 7 } }, location: 7 } }],
            limitOption: 'LIMIT_OPTION_DEFAULT',
            op: 'SETOP_NONE',
          },
        },
      },
    ]);
  });

  it('keeps working after a statement grows the WASM memory', () => {
    // The module starts with a 128 MiB heap; parsing 200,000 columns grew it to 154 MiB (libpg-query 18.1.5), so
    // with 250,000 (1.9 MB of SQL) the memory grows in the middle of the call and every view taken before is detached.
    const columns = 250_000;
    const big = `SELECT ${Array.from({ length: columns }, (_, i) => `c${i}`).join(',')} FROM t`;
    const parsed = parseSql(big);
    expect(parsed.ok).toBe(true);
    const select = (parsed as { stmts: { stmt: { SelectStmt: { targetList: unknown[] } } }[] }).stmts[0].stmt
      .SelectStmt;
    expect(select.targetList).toHaveLength(columns);
    expect(JSON.stringify(select.targetList[columns - 1])).toContain(`"c${columns - 1}"`);
    expect(parseSql("SELECT 'é' FROM t WHERE")).toEqual({
      ok: false,
      error: { message: 'syntax error at end of input', position: 24 },
    });
    expect(parseSql('SELECT 2')).toEqual(expectedOutcome('SELECT 2'));
  });
});
