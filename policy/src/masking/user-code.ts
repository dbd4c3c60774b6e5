/**
 * User-defined code a statement runs without calling it by name: an operator's function, a cast's function, a
 * domain's CHECK, a function in field notation. Its RAISE output can carry anything it was given, so the walker
 * marks such statements opaque. Resolved by name against the catalog snapshot, as the raw parse tree has no types.
 */
import type { CatalogSnapshot } from './catalog-snapshot.js';
import { SYSTEM_FUNCTION_SCHEMAS } from './function-lineage.js';
import { findItems, type Node, type Scope, str } from './lineage-scope.js';

/** The operator name `CASE x WHEN`, `IN (SELECT …)`, `JOIN … USING` and NATURAL JOIN compare with. */
export const EQUALS: Node[] = [{ String: { sval: '=' } }];

/**
 * An operator runs its function (https://www.postgresql.org/docs/current/sql-createoperator.html). An unqualified
 * name resolves by argument types over the search_path
 * (https://www.postgresql.org/docs/current/typeconv-oper.html), so a user operator of that name anywhere may be the
 * one chosen (`~~` on (varchar, varchar) beats pg_catalog's (text, text) for `v LIKE 'x'`); a qualified one outside
 * pg_catalog is always a user's, known to the snapshot or not.
 */
export function operatorRunsUserCode(cat: CatalogSnapshot, name: Node[] | undefined, kind?: string): boolean {
  if (!name?.length) return false;
  const parts = name.map(str);
  const schema = parts.length > 1 ? parts[parts.length - 2] : undefined;
  if (schema !== undefined && !SYSTEM_FUNCTION_SCHEMAS.has(schema)) return true;
  // BETWEEN is parsed with its own name and becomes `>=` and `<=` (NOT BETWEEN: `<` and `>`).
  const ops = kind?.includes('BETWEEN') ? ['>=', '<=', '<', '>'] : [parts[parts.length - 1] ?? ''];
  return ops.some((o) => cat.userOperators.has(o));
}

/**
 * `t.f` calls `f(t)` when t has no column f
 * (https://www.postgresql.org/docs/current/xfunc-sql.html#XFUNC-SQL-COMPOSITE-FUNCTIONS).
 */
export function callsInFieldNotation(cat: CatalogSnapshot, fields: Node[], scope: Scope): boolean {
  if (fields.length < 2) return false;
  const name = str(fields[fields.length - 1]);
  if (name === undefined || !cat.userFunctions.has(name)) return false;
  const items = findItems(scope, fields.slice(0, -1).map(str) as string[]);
  return items.length === 0 || items.some((i) => !i.columns?.some((c) => c.name === name));
}

/** A cast to a domain runs its CHECK; a cast to or from a type with a user cast runs the cast's function. */
export function typeRunsUserCode(cat: CatalogSnapshot, typeName: Node): boolean {
  const names: Node[] = typeName?.names ?? [];
  const name = str(names[names.length - 1]);
  return name !== undefined && cat.codeTypes.has(name);
}
