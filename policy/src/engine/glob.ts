/**
 * Globs over `schema.name` (tables, functions) and subject names: `*` matches any run of characters (dots
 * included), `?` one character; everything else is literal and case-sensitive, as identifiers are after
 * PostgreSQL's case folding. A table/function pattern without a dot applies to the name in any schema.
 */
export interface Glob {
  source: string;
  test(value: string): boolean;
}

export function compileGlob(pattern: string): Glob {
  if (!pattern.includes('*') && !pattern.includes('?')) return { source: pattern, test: (v) => v === pattern };
  return { source: pattern, test: (v) => wildcardMatch(pattern, v) };
}

/**
 * `*` any run of UTF-16 code units, `?` one, anything else itself. Greedy with one backtrack point (the last `*`):
 * O(pattern × value) at worst. A RegExp of `.*` runs backtracks polynomially in the number of stars, and the value
 * is often the agent's (a table name in its SQL): `*a*a*a*a*a*a*b` took seconds against one 63-character name.
 */
export function wildcardMatch(pattern: string, value: string): boolean {
  let p = 0;
  let v = 0;
  let star = -1;
  let resume = 0;
  while (v < value.length) {
    const c = pattern.charCodeAt(p);
    if (c === STAR) {
      star = p++;
      resume = v;
    } else if (p < pattern.length && (c === QUESTION || c === value.charCodeAt(v))) {
      p++;
      v++;
    } else if (star >= 0) {
      p = star + 1;
      v = ++resume;
    } else return false;
  }
  while (pattern.charCodeAt(p) === STAR) p++;
  return p === pattern.length;
}

const STAR = 0x2a;
const QUESTION = 0x3f;

/** For schema-qualified object patterns: `orders` means `*.orders`. */
export function compileObjectGlob(pattern: string): Glob {
  return compileGlob(pattern.includes('.') ? pattern : `*.${pattern}`);
}

/** Problems that make a pattern useless; used by `pgwarden policy lint`. */
export function globProblems(pattern: string, kind: 'object' | 'subject'): string[] {
  const out: string[] = [];
  if (kind === 'object') {
    const parts = pattern.split('.');
    if (parts.length > 2 && !pattern.includes('*'))
      out.push('has more than one dot: objects are matched as schema.name');
    if (parts.some((p) => p === '')) out.push('has an empty schema or name part');
    if (/[A-Z]/.test(pattern)) {
      out.push('contains upper case: unquoted identifiers are folded to lower case, so this only matches quoted names');
    }
    if (pattern.includes('"')) out.push('contains a double quote: write identifiers without quotes');
  }
  if (/\*\*/.test(pattern)) out.push('contains ** (same as *)');
  return out;
}
