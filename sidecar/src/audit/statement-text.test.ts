import { initSqlParser } from '@pgwarden/policy';
import { beforeAll, describe, expect, it } from 'vitest';
import { cachedStatementTexts, normalizedText, statementFingerprint } from './statement-text.js';

beforeAll(async () => {
  await initSqlParser();
});

describe('normalized statement text', () => {
  it('replaces constants and keeps one shape per text, but never caches a long text', () => {
    expect(normalizedText("SELECT * FROM t WHERE ssn = '123-45-6789'")).toBe('SELECT * FROM t WHERE ssn = $1');
    expect(statementFingerprint('SELECT 1')).toBe(statementFingerprint('SELECT 2'));
    const before = cachedStatementTexts();
    normalizedText('SELECT 3 AS short');
    expect(cachedStatementTexts()).toBe(before + 1);
    // 1024 entries of statements up to --max-statement-bytes would hold gigabytes: a long one is not kept.
    const long = `SELECT ${Array.from({ length: 4000 }, (_, i) => `${i} AS c${i}`).join(', ')}`;
    expect(long.length).toBeGreaterThan(16 * 1024);
    expect(normalizedText(long)).toMatch(/^SELECT \$1 AS c0, \$2 AS c1/);
    expect(cachedStatementTexts()).toBe(before + 1);
    expect(normalizedText("SELECT 'x' FROM (")).toBe('[unparseable statement, 17 characters]');
  });
});
