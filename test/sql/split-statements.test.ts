import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { CORPUS } from '../../policy/src/corpus/statement-corpus.js';
import { initSqlParser, parseSql } from '../../policy/src/sql/parser.js';
import { splitStatements } from '../../sidecar/src/proxy/sql-statements.js';

// The sidecar splits a failed simple Query into its statements without a parser (no policy), to tell which of them
// ran from the CommandCompletes that came. It must split as PostgreSQL does, checked here against PostgreSQL's own
// parser (libpg-query): same statements, same texts, or no split at all (undefined), never a wrong one.

/**
 * PostgreSQL's statements, from their first token to their `;`: a span starts right after the `;` before it (the
 * first one at 0, past empty statements: gram.y stmtmulti), so the comments and `;` ahead of a statement are cut.
 */
function pgStatements(sql: string): string[] | undefined {
  const parsed = parseSql(sql);
  if (!parsed.ok) return undefined;
  const bytes = Buffer.from(sql, 'utf8');
  const ahead = /^(?:\s+|;|--[^\n]*(?:\n|$)|\/\*[\s\S]*?\*\/)*/;
  return parsed.stmts.map((s) => {
    const start = s.stmt_location ?? 0;
    const end = s.stmt_len ? start + s.stmt_len : bytes.length;
    return bytes.toString('utf8', start, end).replace(ahead, '').trim();
  });
}

/** Pieces with `;` where it ends nothing, and places where a lexer could go wrong. */
const PIECES = [
  'SELECT 1',
  "SELECT 'a;b'",
  "SELECT 'it''s; here'",
  "SELECT E'it\\'s; here'",
  "SELECT e'\\\\'",
  "SELECT U&'d\\0061t;a' UESCAPE '!'",
  'SELECT "semi;colon" FROM (SELECT 1 AS "semi;colon") s',
  'SELECT $$;$$',
  'SELECT $tag$ $$ ; $tag$',
  'SELECT $a$b;$a$',
  'SELECT x$$ FROM (SELECT 1 AS x$$) s',
  'SELECT 1 -- a comment; with a semicolon\n',
  'SELECT /* nested /* ; */ still; */ 2',
  "DO $$BEGIN RAISE NOTICE 'x;y'; END$$",
  'DEALLOCATE a',
  'CLOSE "Cur;sor"',
  'CREATE TEMP TABLE t (id int); CREATE RULE r AS ON INSERT TO t DO ALSO (NOTIFY a; NOTIFY b)',
  'SELECT (1);',
  ';',
  '   ',
  '/* only a comment */',
  "SELECT 'x'\n'y;'",
  'SELECT 1e5, 1.5, .5, 0x1F',
  "SELECT b'101', x'1F', n'nat;ional'",
  // SQL-standard function bodies: `;` inside BEGIN ATOMIC … END ends the body's statements, not the Query's.
  'CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END',
  'CREATE OR REPLACE PROCEDURE pg_temp.p() LANGUAGE sql BEGIN ATOMIC INSERT INTO t VALUES (1); END',
  'CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql BEGIN ATOMIC END',
  'CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql begin /* c */ atomic\n SELECT 1; END',
  'CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; END',
  'CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END end; END',
  'CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1 end; SELECT 2 AS end; END',
  'CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT t.end FROM (SELECT 1 AS end) t; END',
  'CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT (CASE WHEN true THEN 1 END); END',
  "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 'END;'; SELECT $$;END$$::int; END",
  'CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT begin atomic FROM (SELECT 1 AS begin) s; END',
  'CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql BEGIN ATOMIC CREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; SELECT 2; END',
  'CREATE FUNCTION pg_temp.f(begin int) RETURNS int LANGUAGE sql RETURN CASE WHEN begin > 0 THEN 1 END',
  'SELECT begin atomic FROM (SELECT 1 AS begin) s',
  'SELECT 1 end',
];

describe('splitStatements: as PostgreSQL splits a Query', () => {
  beforeAll(async () => {
    await initSqlParser();
  });

  it('each piece alone, a Query of every piece, and the statement corpus', () => {
    for (const sql of [...PIECES, PIECES.join('; ')]) {
      const want = pgStatements(sql);
      expect(want, sql).toBeDefined();
      expect(
        splitStatements(sql)?.map((s) => s.text),
        sql,
      ).toEqual(want);
    }
    // The corpus has SQL-standard function bodies (BEGIN ATOMIC) too: split like the rest.
    let split = 0;
    for (const { sql } of CORPUS) {
      const want = pgStatements(sql);
      const got = splitStatements(sql);
      if (want === undefined || got === undefined) continue;
      split++;
      expect(
        got.map((s) => s.text),
        sql,
      ).toEqual(want);
    }
    expect(split).toBeGreaterThan(200);
  });

  it('random Queries of those pieces, with comments and spaces between them', () => {
    const sep = fc.constantFrom(';', '; ', ';\n', ' ; ', ';/* c */', ';-- c\n', ';;');
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom(...PIECES), sep), { minLength: 1, maxLength: 6 }), (parts) => {
        const sql = parts.map(([p, s]) => p + s).join('');
        const want = pgStatements(sql);
        if (want === undefined) return;
        expect(splitStatements(sql)?.map((s) => s.text)).toEqual(want);
      }),
      { numRuns: 400 },
    );
  });

  it('first keywords, comments and case aside', () => {
    expect(splitStatements('/* x */ Deallocate a; -- y\n  CLOSE c; (SELECT 1)')?.map((s) => s.first)).toEqual([
      'deallocate',
      'close',
      '',
    ]);
  });

  it('a function body (BEGIN ATOMIC) is one statement with its CREATE, whatever its semicolons', () => {
    const sql =
      'CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END; DEALLOCATE a';
    expect(pgStatements(sql)).toHaveLength(2);
    expect(splitStatements(sql)?.map((s) => s.first)).toEqual(['create', 'deallocate']);
    expect(splitStatements(sql)?.map((s) => s.text)).toEqual(pgStatements(sql));
  });

  it('no split where the text does not parse', () => {
    for (const sql of [
      'CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; DEALLOCATE a',
      "SELECT 'open",
      'SELECT $$open',
      'SELECT /* open',
      'SELECT 1); SELECT (2',
    ])
      expect(splitStatements(sql), sql).toBeUndefined();
    // The first one does parse, as one statement fewer than its semicolons say.
    expect(
      pgStatements('CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; SELECT 2'),
    ).toHaveLength(2);
  });
});
