import { createHash } from 'node:crypto';
import { normalizeSql } from '@pgwarden/policy';
import type { StatementRecord } from '../proxy/hooks.js';

/** The policy's `audit.statementText`: what audit events keep of the SQL. */
export type StatementTextMode = 'full' | 'normalized';

/** Distinct texts kept normalized: agents repeat statements (prepared ones above all), so a small cache serves. */
const CACHE_SIZE = 1024;
const cache = new Map<string, string>();

/**
 * `sql` with its constants replaced by `$n` (policy normalizeSql). Text that does not parse keeps nothing of its
 * content: the point of the mode is that the trail holds no values, and unparseable text cannot be told apart.
 */
export function normalizedText(sql: string): string {
  const hit = cache.get(sql);
  if (hit !== undefined) return hit;
  let text: string;
  try {
    text = normalizeSql(sql);
  } catch {
    text = `[unparseable statement, ${sql.length} characters]`;
  }
  if (cache.size >= CACHE_SIZE) cache.delete(cache.keys().next().value as string);
  cache.set(sql, text);
  return text;
}

/**
 * The first 16 hex digits of the SHA-256 of normalized text: statements of one shape (differing only in their
 * constants) share it, so a trail that keeps no values can still be grouped by what ran.
 */
export const shapeFingerprint = (normalized: string): string =>
  createHash('sha256').update(normalized, 'utf8').digest('hex').slice(0, 16);

/**
 * A copy of the record whose statement texts are normalized, each with its shape's fingerprint; the record itself
 * (shared with masking) is untouched.
 */
export function withNormalizedText(record: StatementRecord): StatementRecord {
  const { request, verdict } = record;
  return {
    ...record,
    request: { ...request, sql: normalizedText(request.sql) },
    verdict: verdict.statements?.length
      ? {
          ...verdict,
          statements: verdict.statements.map((s) => {
            const text = normalizedText(s.text);
            return { ...s, text, fingerprint: shapeFingerprint(text) };
          }),
        }
      : verdict,
  };
}
