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
  let re = '^';
  for (const ch of pattern) {
    if (ch === '*') re += '.*';
    else if (ch === '?') re += '.';
    else re += ch.replace(/[\\^$.|+()[\]{}]/g, '\\$&');
  }
  const regex = new RegExp(`${re}$`, 's');
  return { source: pattern, test: (v) => regex.test(v) };
}

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
