import { describe, expect, it } from 'vitest';
import { redactEchoes, scrubFreeText } from './text-scrub.js';

const ctx = (sql: string[], ids: string[] = []) => ({ recentSql: sql, isIdentifier: (n: string) => ids.includes(n) });

describe('echo redaction in messages', () => {
  it('redacts values PostgreSQL quotes back that the client did not send', () => {
    const c = ctx(['SELECT full_name::int FROM customers']);
    expect(redactEchoes('invalid input syntax for type integer: "Ximena Q"', c)).toBe(
      'invalid input syntax for type integer: "****"',
    );
  });
  it('keeps what the client sent and catalog identifiers', () => {
    const c = ctx(["SELECT * FROM nope WHERE x = 'abc'"], ['customers_pkey', 'email', 'id']);
    expect(redactEchoes('relation "nope" does not exist', c)).toBe('relation "nope" does not exist');
    expect(redactEchoes('invalid input syntax for type integer: "abc"', c)).toBe(
      'invalid input syntax for type integer: "abc"',
    );
    expect(redactEchoes('duplicate key value violates unique constraint "customers_pkey"', c)).toBe(
      'duplicate key value violates unique constraint "customers_pkey"',
    );
  });
  it('redacts key values and failing rows in DETAIL', () => {
    const c = ctx(['UPDATE customers SET email = email'], ['email', 'id', 'full_name']);
    expect(redactEchoes('Key (email)=(alice@example.com) already exists.', c)).toBe(
      'Key (email)=(****) already exists.',
    );
    expect(redactEchoes('Key (id, full_name)=(1, Ximena) already exists.', c)).toBe(
      'Key (id, full_name)=(****) already exists.',
    );
    expect(redactEchoes('Failing row contains (1, Ximena, null).', c)).toBe('Failing row contains (****).');
  });
  it("redacts what PostgreSQL echoes unquoted: the JSON parser's context, libxml's detail", () => {
    // Texts as PostgreSQL 15 sends them for `SELECT name::json` and `SELECT ('<a>' || ssn || '</b>')::xml`.
    const c = ctx(['SELECT name::json FROM customers', "SELECT ('<a>' || ssn || '</b>')::xml FROM customers"]);
    expect(redactEchoes('JSON data, line 1: Ximena', c)).toBe('JSON data, line 1: ****');
    expect(redactEchoes('JSON data, line 1: Ximena Quintero...', c)).toBe('JSON data, line 1: ****');
    expect(
      redactEchoes('line 1: Opening and ending tag mismatch: a line 1 and b\n<a>0211-50-870</b>\n              ^', c),
    ).toBe('****');
    // The client's own input stays.
    const own = ctx(["SELECT '{\"a\": tru}'::json, '<a></b>'::xml"]);
    expect(redactEchoes('JSON data, line 1: {"a": tru...', own)).toBe('JSON data, line 1: {"a": tru...');
  });

  it('redacts values PostgreSQL computes from the input and prints unquoted (make_date, make_time, chr, setval)', () => {
    // Texts as PostgreSQL 15 sends them; a reviewer read a whole SSN from the first.
    const c = ctx(["SELECT make_date(2020, 1, replace(ssn, '-', '')::int) FROM customers"]);
    for (const [text, out] of [
      ['date field value out of range: 2020-01-219099999', 'date field value out of range: ****'],
      ['time field value out of range: 25:00:7.80511e+07', 'time field value out of range: ****'],
      ['requested character too large for encoding: 78051120', 'requested character too large for encoding: ****'],
      [
        'setval: value -78051120 is out of bounds for sequence "sq" (1..9223372036854775807)',
        'setval: value **** is out of bounds for sequence "****" (****)',
      ],
    ]) {
      expect(redactEchoes(text, c)).toBe(out);
    }
    // PostgreSQL formats even the client's own constants anew (`2020-13-01` for `2020, 13, 1`): redacted as well.
    expect(redactEchoes('date field value out of range: 2020-13-01', ctx(['SELECT make_date(2020, 13, 1)']))).toBe(
      'date field value out of range: ****',
    );
  });

  it('handles doubled quotes inside quoted values', () => {
    expect(redactEchoes('bad value: "a""b"', ctx(['x']))).toBe('bad value: "****"');
  });
});

describe('scrubFreeText', () => {
  it('detectors everywhere; echo redaction for messages, not for COPY rows', () => {
    const echo = ctx(['COPY t TO STDOUT']);
    expect(scrubFreeText('row (a) a@b.org\n', ['email'], echo)).toBe('row (a) *******\n');
    expect(scrubFreeText('row (a) a@b.org', ['email'], echo)).toBe('row (****) *******');
    expect(scrubFreeText('payload (x)', [], echo, 'copy')).toBe('payload (x)');
    expect(scrubFreeText('payload (x)', [], undefined)).toBe('payload (x)');
  });
});
