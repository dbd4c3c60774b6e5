import { beforeAll, describe, expect, it } from 'vitest';
import { analyzeSql } from './analyze-sql.js';
import { initSqlParser } from './parser.js';
import { createSessionState } from './session-state.js';

beforeAll(() => initSqlParser());

function functions(sql: string, searchPath = ['public']): string[] {
  const a = analyzeSql(sql, createSessionState({ searchPath }));
  if (!a.ok) throw new Error(a.error.message);
  return a.statements.flatMap((s) => s.functions.map((f) => `${f.schema}.${f.name}`));
}

const EXPAND = 'information_schema._pg_expandarray';

describe('field notation on a known record', () => {
  it("selects _pg_expandarray's fields as pgjdbc's metadata queries do, calling nothing else", () => {
    // DatabaseMetaData.getIndexInfo, getPrimaryKeys and getBestRowIdentifier (pgjdbc 42.5), shortened.
    expect(functions(`SELECT (${EXPAND}(i.indkey)).n FROM pg_catalog.pg_index i`)).toEqual([EXPAND]);
    expect(
      functions(`SELECT r.k FROM (SELECT ${EXPAND}(i.indkey) AS keys, i.indrelid AS k FROM pg_catalog.pg_index i) r
        WHERE r.k > 0 AND (r.keys).x = 1`),
    ).toEqual([EXPAND]);
    expect(
      functions(`SELECT a.attname FROM pg_catalog.pg_attribute a
        JOIN (SELECT i.indrelid, ${EXPAND}(i.indkey) AS keys FROM pg_catalog.pg_index i) i
          ON (a.attnum = (i.keys).x AND a.attrelid = i.indrelid)`),
    ).toEqual([EXPAND]);
  });

  it('still calls what is not known to be such a field', () => {
    // Not a field of _pg_expandarray's record, or a field's own field: PostgreSQL calls the function.
    expect(functions(`SELECT (${EXPAND}(a)).pg_sleep FROM t`)).toContain('pg_catalog.pg_sleep');
    expect(functions(`SELECT (${EXPAND}(a)).x.pg_sleep FROM t`)).toContain('pg_catalog.pg_sleep');
    // Unqualified, the name resolves through search_path: public._pg_expandarray may return anything.
    expect(functions('SELECT (_pg_expandarray(a)).n FROM t')).toContain('public.n');
    // A table named like the subquery alias, the subquery alias under column aliases, and an aliased join hiding it.
    expect(functions('SELECT (r.keys).x FROM r')).toContain('public.x');
    expect(functions(`SELECT (r.keys).x FROM (SELECT ${EXPAND}(a) AS keys FROM t) r(keys)`)).toContain('public.x');
    expect(functions(`SELECT (r.keys).x FROM ((SELECT ${EXPAND}(a) AS keys FROM t) r JOIN u ON true) j, r`)).toContain(
      'public.x',
    );
    // Two FROM items named r, or a function scan whose implicit name is not derived: not resolved.
    expect(
      functions(`SELECT (r.keys).x FROM (SELECT ${EXPAND}(a) AS keys FROM t) r, generate_series(1, 2) r`),
    ).toContain('public.x');
    // Only the innermost query level: a subquery or a CTE body resolves `r` elsewhere than its enclosing SELECT.
    expect(functions(`SELECT (SELECT (r.keys).x FROM u) FROM (SELECT ${EXPAND}(a) AS keys FROM t) r`)).toContain(
      'public.x',
    );
    expect(
      functions(`WITH c AS (UPDATE u SET v = (r.keys).x FROM r RETURNING 1)
        SELECT 1 FROM (SELECT ${EXPAND}(a) AS keys FROM t) r`),
    ).toContain('public.x');
    // The target is not such a call.
    expect(functions('SELECT (r.keys).x FROM (SELECT keys FROM t) r')).toContain('public.x');
  });

  it('keeps the other field-notation calls of d6eaa83', () => {
    expect(functions("SELECT ('SELECT vector FROM hr.docs'::text).ts_stat")).toContain('pg_catalog.ts_stat');
    expect(functions('SELECT (42::bigint).pg_advisory_lock')).toContain('pg_catalog.pg_advisory_lock');
    expect(functions('SELECT (c).name FROM customers c')).toContain('pg_catalog.name');
  });
});
