import { fingerprintSql, normalizeSql } from '@pgwarden/policy';
import type { StatementRecord, Verdict } from '../proxy/hooks.js';

/** The policy's `audit.statementText`: what audit events keep of the SQL. */
export type StatementTextMode = 'full' | 'normalized';

/** Distinct texts kept normalized: agents repeat statements (prepared ones above all), so a small cache serves. */
const CACHE_SIZE = 1024;
const cache = new Map<string, string>();
const fingerprints = new Map<string, string | null>();

/** A bounded cache: the oldest entry goes first (agents' statement mixes are small; a miss only costs a parse). */
function remember<V>(m: Map<string, V>, key: string, value: V): V {
  if (m.size >= CACHE_SIZE) m.delete(m.keys().next().value as string);
  m.set(key, value);
  return value;
}

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
  return remember(cache, sql, text);
}

/**
 * libpg_query's fingerprint of a statement (`statement.fingerprint`, DESIGN §5): statements of one shape, differing
 * only in constants, layout or comments, share it, so a trail can be grouped by what ran, with or without values;
 * it is the fingerprint pg_query-based tools print, so it joins with them. Undefined for text that does not parse.
 */
export function statementFingerprint(sql: string): string | undefined {
  let f = fingerprints.get(sql);
  if (f === undefined) {
    try {
      f = fingerprintSql(sql);
    } catch {
      f = null;
    }
    remember(fingerprints, sql, f);
  }
  return f ?? undefined;
}

/** Fingerprinted copies of verdicts: decisions cached by the policy engine share one verdict, so one copy serves. */
const fingerprinted = new WeakMap<Verdict, Verdict>();

/**
 * The record with a fingerprint on each analysed statement (`audit.statementText: full`). Only statements the
 * policy already parsed (verdict.statements) get one: without a policy nothing is parsed, and parsing for the trail
 * alone would cost the allow-all sidecar a parse per distinct statement.
 */
export function withFingerprints(record: StatementRecord): StatementRecord {
  const { verdict } = record;
  if (!verdict.statements?.length) return record;
  let v = fingerprinted.get(verdict);
  if (v === undefined) {
    v = {
      ...verdict,
      statements: verdict.statements.map((s) => {
        const fingerprint = statementFingerprint(s.text);
        return fingerprint === undefined ? s : { ...s, fingerprint };
      }),
    };
    fingerprinted.set(verdict, v);
  }
  return { ...record, verdict: v };
}

/**
 * A copy of the record whose statement texts are normalized, each with its fingerprint; the record itself (shared
 * with masking) is untouched.
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
            const fingerprint = statementFingerprint(s.text);
            return { ...s, text: normalizedText(s.text), ...(fingerprint === undefined ? {} : { fingerprint }) };
          }),
        }
      : verdict,
  };
}
