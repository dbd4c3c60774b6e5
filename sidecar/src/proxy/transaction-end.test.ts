import { describe, expect, it } from 'vitest';
import { mayEndTransaction } from './pipeline.js';

// Which statements an Execute may end its transaction with is read off the first keyword as PostgreSQL's lexer
// reads it (scan.l): comments and whitespace in front of it, or between PREPARE and TRANSACTION, are not text.
describe('mayEndTransaction', () => {
  it('finds the keyword behind whitespace and comments, nested ones too', () => {
    for (const sql of [
      'COMMIT',
      '  commit and chain',
      '/* a /* nested */ comment */ COMMIT',
      '-- a line\n  ROLLBACK',
      '-- one\n-- two\nEnd',
      '/**/abort/**/',
      'PREPARE /* x */ TRANSACTION $$t$$',
      'prepare\n-- y\ntransaction',
      'DO $$BEGIN END$$',
      '\tCALL p()',
      'commit;',
    ])
      expect(mayEndTransaction(sql), sql).toBe(true);
  });

  it('not for other statements, words that only start like one, or keywords inside a comment or string', () => {
    for (const sql of [
      'SELECT 1',
      'PREPARE s AS COMMIT',
      'committed',
      'doit()',
      "/* COMMIT */ SELECT 'COMMIT'",
      '-- ROLLBACK',
      '/* unclosed COMMIT',
      'ENDING',
      '"commit"',
      '',
    ])
      expect(mayEndTransaction(sql), sql).toBe(false);
  });
});
