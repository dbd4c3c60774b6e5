/** Globs over PostgreSQL names as the MaskingRule API uses them: `*` any run of characters, `?` one character. */

const cache = new Map<string, RegExp>();

export function globToRegExp(glob: string): RegExp {
  let re = cache.get(glob);
  if (!re) {
    const body = glob
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.');
    // Case-insensitive on purpose: a rule for `Customers` must not miss `customers` (failing towards masking).
    re = new RegExp(`^${body}$`, 'is');
    if (cache.size < 4096) cache.set(glob, re);
  }
  return re;
}

export function globMatches(glob: string, value: string): boolean {
  return globToRegExp(glob).test(value);
}

/**
 * A table glob is over `schema.table`. A glob without a dot also matches the bare table name in any schema, so
 * `customers` and `*` both cover `public.customers` and `pg_temp_3.customers`.
 */
export function tableGlobMatches(glob: string, schema: string, table: string): boolean {
  if (globMatches(glob, `${schema}.${table}`)) return true;
  return !glob.includes('.') && globMatches(glob, table);
}
