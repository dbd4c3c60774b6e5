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
 * pg_catalog is always a user's, known to the snapshot or not. `catalogFirst`: every search_path the session may be
 * under searches pg_catalog first (see reachableUserOperators).
 */
export function operatorRunsUserCode(
  cat: CatalogSnapshot,
  name: Node[] | undefined,
  kind?: string,
  catalogFirst = false,
): boolean {
  if (!name?.length) return false;
  const parts = name.map(str);
  const schema = parts.length > 1 ? parts[parts.length - 2] : undefined;
  // `OPERATOR(pg_catalog.=)` looks in pg_catalog only.
  if (schema !== undefined) return !SYSTEM_FUNCTION_SCHEMAS.has(schema);
  // BETWEEN is parsed with its own name and becomes `>=` and `<=` (NOT BETWEEN: `<` and `>`).
  const ops = kind?.includes('BETWEEN') ? ['>=', '<=', '<', '>'] : [parts[parts.length - 1] ?? ''];
  return ops.some((o) => cat.userOperators.has(o) && (!catalogFirst || reachableUserOperators(cat, o, true).size > 0));
}

/** Whether pg_catalog hides some user operator (one of the same name and operand types) while searched first. */
export function hidesUserOperators(cat: CatalogSnapshot): boolean {
  for (const sigs of cat.operatorSignatures.values()) for (const k of sigs.user) if (sigs.builtin.has(k)) return true;
  return false;
}

/**
 * The operand types (`left,right` keys) of the user operators named `name` that an unqualified use can reach. Among
 * operators of one name and the same operand types only the one in the schema the search_path reaches first is a
 * candidate (namespace.c, OpernameGetCandidates), and pg_catalog comes first unless the path names it
 * (https://www.postgresql.org/docs/current/ddl-schemas.html#DDL-SCHEMAS-CATALOG): with `catalogFirst`, a user
 * `=` (text, text) is never chosen, for text operands or for varchar ones that convert to text, as pg_catalog's hides
 * it. Unknown signatures: all of them.
 */
export function reachableUserOperators(cat: CatalogSnapshot, name: string, catalogFirst: boolean): ReadonlySet<string> {
  const sigs = cat.operatorSignatures.get(name);
  if (sigs === undefined) return new Set(['?']);
  if (!catalogFirst) return sigs.user;
  return new Set([...sigs.user].filter((k) => !sigs.builtin.has(k)));
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
  return items.length === 0 || items.some((i) => !i.columns?.some((c) => c.name === name && !c.maybeCall));
}

/** A cast to a domain runs its CHECK; a cast to or from a type with a user cast runs the cast's function. */
export function typeRunsUserCode(cat: CatalogSnapshot, typeName: Node): boolean {
  const names: Node[] = typeName?.names ?? [];
  const name = str(names[names.length - 1]);
  return name !== undefined && cat.codeTypes.has(name);
}

/** pg_type OID of a literal or parameter whose type PostgreSQL resolves from the other operand. */
export const UNKNOWN_TYPE = 705;

/**
 * operatorRunsUserCode for uses whose operand types are known: `l op r`, each comparison of `x IN (…)`, NULLIF.
 * PostgreSQL takes the operator accepting exactly the operand types when one is visible, an unknown-typed literal
 * taking the other side's type, and pg_catalog is always searched
 * (https://www.postgresql.org/docs/current/typeconv-oper.html): where pg_catalog has that exact operator, only a
 * user operator of exactly those types can be chosen. Without an exact built-in, implicit coercions decide (step 3):
 * only operators whose operand types both operands convert to implicitly are candidates, so a user operator that is
 * not one cannot be chosen (`varchar = 'x'` resolves to pg_catalog's `text = text` beside a user `date = date`).
 * With a type not known, any user operator of the name may be: fail closed as the untyped check does.
 */
export function typedOperatorRunsUserCode(
  cat: CatalogSnapshot,
  name: Node[] | undefined,
  pairs: ReadonlyArray<readonly [number | undefined, number | undefined]>,
  catalogFirst = false,
): boolean {
  if (!operatorRunsUserCode(cat, name, undefined, catalogFirst)) return false;
  if (!name || name.length > 1) return true;
  const sigs = cat.operatorSignatures.get(str(name[0]) ?? '');
  if (!sigs || pairs.length === 0) return true;
  const user = reachableUserOperators(cat, str(name[0]) ?? '', catalogFirst);
  for (const [l0, r0] of pairs) {
    if (l0 === undefined || r0 === undefined || (l0 === UNKNOWN_TYPE && r0 === UNKNOWN_TYPE)) return true;
    const key = `${l0 === UNKNOWN_TYPE ? r0 : l0},${r0 === UNKNOWN_TYPE ? l0 : r0}`;
    if (user.has(key)) return true;
    if (!sigs.builtin.has(key) && userOperatorCandidate(cat, user, l0, r0)) return true;
  }
  return false;
}

/**
 * Whether some user operator (`left,right` keys) is a candidate for operands of types l and r under implicit
 * coercion (typeconv-oper step 3.a): an unknown-typed literal converts to anything. Operand types other than
 * built-in, non-array base types (domains, whose base type counts; arrays; user types) are not followed: true.
 * An operator type that is not such a built-in (a pseudo-type such as anyelement, a domain, a user type that may
 * have an implicit cast WITH INOUT from its owner) is taken as reachable.
 */
function userOperatorCandidate(cat: CatalogSnapshot, user: ReadonlySet<string>, l: number, r: number): boolean {
  const from = (t: number) => (t === UNKNOWN_TYPE ? undefined : cat.implicitCasts.get(t));
  const lt = from(l);
  const rt = from(r);
  if ((l !== UNKNOWN_TYPE && !lt) || (r !== UNKNOWN_TYPE && !rt)) return true;
  const reaches = (t: number, targets: ReadonlySet<number> | undefined, to: number) =>
    targets === undefined || t === to || targets.has(to) || !cat.implicitCasts.has(to);
  for (const key of user) {
    const [left, right] = key.split(',').map(Number) as [number, number];
    if (reaches(l, lt, left) && reaches(r, rt, right)) return true;
  }
  return false;
}
