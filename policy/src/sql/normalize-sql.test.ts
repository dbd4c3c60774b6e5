import { beforeAll, describe, expect, it } from 'vitest';
import { initSqlParser, normalizeSql } from './parser.js';

beforeAll(() => initSqlParser());

describe('normalizeSql', () => {
  it('replaces every constant with $n, numbering after the parameters the statement already has', () => {
    expect(normalizeSql("SELECT * FROM t WHERE email = 'a@b.c' AND n > 3.5")).toBe(
      'SELECT * FROM t WHERE email = $1 AND n > $2',
    );
    expect(normalizeSql("INSERT INTO t VALUES ($1, 'x')")).toBe('INSERT INTO t VALUES ($1, $2)');
    expect(normalizeSql("ALTER ROLE bob PASSWORD 'hunter2'")).toBe('ALTER ROLE bob PASSWORD $1');
    expect(normalizeSql("DO $$ BEGIN RAISE NOTICE 'x'; END $$")).toBe('DO $1');
    expect(normalizeSql('')).toBe('');
  });

  it('refuses text that does not parse, with a stable code', () => {
    let err: unknown;
    try {
      normalizeSql("SELEC 'value-42'");
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({
      code: 'PGW_SQL_UNPARSEABLE',
      message: expect.stringMatching(/^cannot normalize: syntax error/),
    });
  });
});
