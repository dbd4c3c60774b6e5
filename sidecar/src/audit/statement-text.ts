import { createHash } from 'node:crypto';
import { normalizeSql } from '@pgwarden/policy';
import type { StatementRecord, Verdict } from '../proxy/hooks.js';

/** The policy's `audit.statementText`: what audit events keep of the SQL. */
export type StatementTextMode = 'full' | 'normalized';

/** Distinct texts kept normalized: agents repeat statements (prepared ones above all), so a small cache serves. */
const CACHE_SIZE = 1024;
/**
 * Longer texts are normalized each time and not kept: 1024 entries of statements up to --max-statement-bytes could
 * hold gigabytes, and a statement that long is rarely repeated (the analysis cache has the same bound).
 */
const CACHE_MAX_CHARS = 16 * 1024;

/** A statement's shape, once per distinct text: its normalized text and fingerprint, or null when it does not parse. */
interface Shape {
  text: string;
  fingerprint: string;
}
const shapes = new Map<string, Shape | null>();

/** How many texts the cache holds (tests). */
export function cachedStatementTexts(): number {
  return shapes.size;
}

function shapeOf(sql: string): Shape | null {
  let shape = shapes.get(sql);
  if (shape !== undefined) return shape;
  try {
    const text = normalizeSql(sql);
    shape = { text, fingerprint: createHash('sha256').update(text, 'utf8').digest('hex').slice(0, 16) };
  } catch {
    shape = null;
  }
  if (sql.length > CACHE_MAX_CHARS) return shape;
  // The oldest entry goes first: agents' statement mixes are small, and a miss only costs a normalization.
  if (shapes.size >= CACHE_SIZE) shapes.delete(shapes.keys().next().value as string);
  shapes.set(sql, shape);
  return shape;
}

/**
 * `sql` with its constants replaced by `$n` (policy normalizeSql). Text that does not parse keeps nothing of its
 * content: the point of the mode is that the trail holds no values, and unparseable text cannot be told apart.
 */
export function normalizedText(sql: string): string {
  return shapeOf(sql)?.text ?? `[unparseable statement, ${sql.length} characters]`;
}

/**
 * The first 16 hex digits of the SHA-256 of the normalized text (`statement.fingerprint`, DESIGN §5): statements of
 * one shape, differing only in their constants, share it, so a trail can be grouped by what ran, with values or
 * without. Undefined for text that does not parse. Not libpg_query's own fingerprint call: measured here, each extra
 * kind of parser call grows the parser's WebAssembly heap for good (its fingerprint ~+70 MiB RSS over 100k distinct
 * statements, docs/audit.md), and this one needs only the normalization `normalized` text makes anyway.
 */
export function statementFingerprint(sql: string): string | undefined {
  return shapeOf(sql)?.fingerprint;
}

/** Fingerprinted copies of verdicts: decisions cached by the policy engine share one verdict, so one copy serves. */
const fingerprinted = new WeakMap<Verdict, Verdict>();

/**
 * The record with a fingerprint on each analysed statement (`audit.statementText: full` with `audit.fingerprint`).
 * Only statements the policy analysed (verdict.statements) get one: a sidecar without a policy parses nothing.
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
            const shape = shapeOf(s.text);
            return shape
              ? { ...s, text: shape.text, fingerprint: shape.fingerprint }
              : { ...s, text: normalizedText(s.text) };
          }),
        }
      : verdict,
  };
}
