/** Globs over PostgreSQL names as the MaskingRule API uses them: `*` any run of characters, `?` one character. */

import { wildcardMatch } from '../engine/glob.js';

/** Case-insensitive on purpose: a rule for `Customers` must not miss `customers` (failing towards masking). */
export function globMatches(glob: string, value: string): boolean {
  return wildcardMatch(foldCase(glob), foldCase(value));
}

/**
 * The case folding of a RegExp's `i` flag without `u` (ECMA-262 Canonicalize), which these globs used before they
 * stopped being RegExps: each code unit upper-cased when that gives one code unit, never from non-ASCII to ASCII.
 */
function foldCase(s: string): string {
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const ch = s[i] as string;
    const up = ch.toUpperCase();
    out += up.length === 1 && !(ch.charCodeAt(0) >= 128 && up.charCodeAt(0) < 128) ? up : ch;
  }
  return out;
}

/**
 * A table glob is over `schema.table`. A glob without a dot also matches the bare table name in any schema, so
 * `customers` and `*` both cover `public.customers` and `pg_temp_3.customers`.
 */
export function tableGlobMatches(glob: string, schema: string, table: string): boolean {
  if (globMatches(glob, `${schema}.${table}`)) return true;
  return !glob.includes('.') && globMatches(glob, table);
}
