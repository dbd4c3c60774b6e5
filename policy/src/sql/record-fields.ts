import type { AnalysisContext } from './analysis-context.js';
import { BUILTIN_FUNCTIONS } from './builtin-functions.js';
import type { Node } from './parser.js';

/**
 * Built-in functions returning a record whose fields clients read in field notation, by `schema.name`. pgjdbc's
 * getPrimaryKeys, getIndexInfo and getBestRowIdentifier select `(information_schema._pg_expandarray(i.indkey)).n`
 * and `(keys).x`. Only a superuser can add a function to these schemas.
 */
const RECORD_FIELDS: ReadonlyMap<string, ReadonlySet<string>> = new Map([
  ['information_schema._pg_expandarray', new Set(['x', 'n'])],
]);

/**
 * Whether `(arg).field` selects a field rather than calling `field(arg)`: PostgreSQL tries a projection first when
 * the argument is a record with that field (ParseFuncOrColumn, `could_be_projection`), so no function runs. The
 * raw tree has no types, so only these shapes are known to be records: a call of a RECORD_FIELDS function, and a
 * column `alias.col` of a subquery in the innermost query's FROM whose target `col` is such a call. Anything else
 * is a call.
 */
export function selectsRecordField(arg: unknown, field: string, ctx: AnalysisContext): boolean {
  const a = arg as Node | undefined;
  if (a?.FuncCall) return recordFields(a.FuncCall as Node, ctx)?.has(field) === true;
  const ref = (a?.ColumnRef as { fields?: Node[] } | undefined)?.fields;
  if (ref?.length !== 2) return false;
  const [alias, column] = ref.map((f) => (f.String as { sval?: string } | undefined)?.sval);
  if (alias === undefined || column === undefined) return false;
  const target = subqueryTarget(ctx.queryLevels?.at(-1)?.node, alias, column);
  return target?.FuncCall !== undefined && recordFields(target.FuncCall as Node, ctx)?.has(field) === true;
}

function recordFields(call: Node, ctx: AnalysisContext): ReadonlySet<string> | undefined {
  if (call.over !== undefined) return undefined;
  const parts = ((call.funcname as Node[]) ?? []).map((n) => (n.String as { sval?: string } | undefined)?.sval);
  let qualified: string | undefined;
  if (parts.length === 2) qualified = `${parts[0]}.${parts[1]}`;
  // Unqualified, only a name pg_catalog has and that no schema before it on search_path can shadow.
  else if (parts.length === 1 && BUILTIN_FUNCTIONS.has(parts[0] ?? '') && !ctx.state.catalogExplicit)
    qualified = `pg_catalog.${parts[0]}`;
  return qualified === undefined ? undefined : RECORD_FIELDS.get(qualified);
}

/**
 * The expression a subquery in `select`'s FROM gives as `alias.column`, when that reference can mean nothing else:
 * every FROM item's name is known, exactly one is `alias`, it is a plain subquery without column aliases, and
 * exactly one of its targets is named `column`. Outer query levels are not searched (a CTE body or a subquery
 * there would resolve the name elsewhere than the walk's stack says).
 */
function subqueryTarget(select: Node | undefined, alias: string, column: string): Node | undefined {
  if (select === undefined) return undefined;
  const items: Array<{ name: string; node: Node }> = [];
  for (const item of (select.fromClause as Node[]) ?? []) if (!fromItemNames(item, items)) return undefined;
  const matches = items.filter((i) => i.name === alias);
  const sub = matches.length === 1 ? (matches[0].node.RangeSubselect as Node | undefined) : undefined;
  const subAlias = sub?.alias as { colnames?: unknown[] } | undefined;
  const query = (sub?.subquery as Node | undefined)?.SelectStmt as Node | undefined;
  if (subAlias?.colnames !== undefined || query === undefined) return undefined;
  const targets = ((query.targetList as Node[]) ?? [])
    .map((t) => t.ResTarget as Node)
    .filter((t) => t?.name === column);
  return targets.length === 1 ? (targets[0].val as Node) : undefined;
}

/** Collects the names a FROM item makes visible; false when one cannot be told from the tree. */
function fromItemNames(item: Node, out: Array<{ name: string; node: Node }>): boolean {
  const alias = (n: Node) => (n.alias as { aliasname?: string } | undefined)?.aliasname;
  if (item.RangeVar) {
    const rv = item.RangeVar as Node;
    out.push({ name: alias(rv) ?? String(rv.relname), node: item });
    return true;
  }
  if (item.RangeSubselect) {
    const name = alias(item.RangeSubselect as Node);
    if (name !== undefined) out.push({ name, node: item });
    return name !== undefined;
  }
  if (item.JoinExpr) {
    const j = item.JoinExpr as Node;
    const name = alias(j);
    // An aliased join hides the names inside it.
    if (name !== undefined) out.push({ name, node: item });
    else return fromItemNames(j.larg as Node, out) && fromItemNames(j.rarg as Node, out);
    return true;
  }
  // Function scans, XMLTABLE, TABLESAMPLE…: their implicit names are not worth deriving here.
  return false;
}
