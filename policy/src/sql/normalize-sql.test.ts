import { fingerprintSync, loadModule } from 'libpg-query';
import { beforeAll, describe, expect, it } from 'vitest';
import { fingerprintSql, initSqlParser, normalizeSql } from './parser.js';

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

describe('fingerprintSql', () => {
  it('is libpg_query fingerprint: equal across constants, layout, comments and parameters; not across shapes', async () => {
    const a = fingerprintSql("SELECT * FROM t WHERE email = 'a@b.c' AND n > 3.5");
    expect(a).toMatch(/^[0-9a-f]{16}$/);
    expect(fingerprintSql('select *  from t\n where email = $1 -- who\n and n > 7')).toBe(a);
    expect(fingerprintSql("SELECT * FROM t WHERE email = 'a@b.c' AND n < 3.5")).not.toBe(a);
    expect(fingerprintSql("SELECT * FROM u WHERE email = 'a@b.c' AND n > 3.5")).not.toBe(a);
    // The same digits the package's own binding prints (this file's binding calls the same C function).
    await loadModule();
    expect(a).toBe(fingerprintSync("SELECT * FROM t WHERE email = 'a@b.c' AND n > 3.5"));
  });

  it('refuses text that does not parse, with a stable code', () => {
    expect(() => fingerprintSql("SELEC 'value-42'")).toThrow(/^cannot fingerprint: syntax error/);
    let err: unknown;
    try {
      fingerprintSql('SELEC 1');
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'PGW_SQL_UNPARSEABLE' });
  });
});
