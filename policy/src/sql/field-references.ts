import type { AnalysisContext } from './analysis-context.js';
import type { FunctionRef } from './analysis-types.js';
import { BUILTIN_FUNCTIONS } from './builtin-functions.js';
import { catalogColumns, hasColumnAfter, SYSTEM_COLUMNS } from './catalog-columns.js';
import { CATALOG_RELATIONS } from './catalog-relations.js';
import { dangerousFunction } from './function-catalog.js';
import { figureColname, outputNames } from './output-names.js';
import type { Node } from './parser.js';
import type { Scope } from './statement-walker.js';

const str = (n: Node | undefined) => (n?.String as { sval?: string } | undefined)?.sval;

/**
 * `t.f` reads column f of t, or calls `f(t)` when t has no column f and a function f takes t's row type
 * (https://www.postgresql.org/docs/current/xfunc-sql.html#XFUNC-SQL-COMPOSITE-FUNCTIONS; PostgreSQL's
 * transformColumnRef falls back to ParseFuncOrColumn). The raw tree has no catalog: a reference the analysis cannot
 * show to be a column (of a catalog relation, a subquery, a CTE or a function in FROM) is recorded as a possible
 * call, with the relation t names when it names one, for the catalog (resolveWithCatalog) or, without one, the rules
 * to judge. Where t is a subquery or CTE whose every column name the tree shows and f is none of them, it is a call
 * (or an error) whatever the catalog holds: recorded as one, so a function created since the catalog was loaded
 * counts too.
 */
export function fieldReference(ref: Node, ctx: AnalysisContext): void {
  const fields = (ref.fields as Node[] | undefined) ?? [];
  if (fields.length < 2) return;
  const parts = fields.map(str);
  const name = parts[parts.length - 1];
  // `t.*`, and system columns, which PostgreSQL resolves before any function.
  if (name === undefined || SYSTEM_COLUMNS.has(name)) return;
  const qualifier = parts.slice(0, -1);
  if (qualifier.some((q) => q === undefined)) return;
  const found = qualifiedItem(qualifier as string[], ctx);
  let relations: CatalogColumnCheck | undefined;
  if (found !== undefined) {
    // CTE names resolve where the item is read, not where the reference sits (a nested WITH may shadow them there).
    const shown = columnOf(found.node, name, found.scope, ctx);
    if (shown === true) return;
    if (shown === 'call') {
      for (const f of unqualifiedCall(name, ctx)) ctx.facts.addFunction(f.schema, f.name, false);
      const danger = dangerousFunction(name);
      if (danger) ctx.facts.addDangerous({ category: danger, detail: `${parts.join('.')} (field notation)` });
      return;
    }
    relations = shown === false ? undefined : shown;
  }
  ctx.facts.addFieldCall({
    name,
    ...(relations ? { relations: relations.relations } : {}),
    ...(relations?.renamed ? { renamed: relations.renamed } : {}),
    functions: unqualifiedCall(name, ctx),
  });
}

/**
 * Relation candidates for the catalog to tell whether one has a column `name`; `renamed`: how many of its first
 * columns an alias's column list renamed (`FROM t o(a)`), which no longer answer to their own names.
 */
interface CatalogColumnCheck {
  relations: Array<{ schema: string; name: string }>;
  renamed?: number;
}

/** The functions an unqualified call of `name` may resolve to (as addFunctionName records them). */
export function unqualifiedCall(name: string, ctx: AnalysisContext): FunctionRef[] {
  const out: FunctionRef[] = [];
  if (BUILTIN_FUNCTIONS.has(name)) out.push({ schema: 'pg_catalog', name, qualified: false });
  if (out.length > 0 && !ctx.state.catalogExplicit) return out;
  for (const s of ctx.state.searchPath) out.push({ schema: s, name, qualified: false });
  return out;
}

/**
 * The FROM item `qualifier` names, searching the walk's query levels from the innermost out, as PostgreSQL does, with
 * the CTE names visible at its level.
 */
function qualifiedItem(qualifier: string[], ctx: AnalysisContext): { node: Node; scope: Scope } | undefined {
  if (qualifier.length > 2) return undefined;
  const levels = ctx.queryLevels ?? [];
  for (let i = levels.length - 1; i >= 0; i--) {
    const level = levels[i].node;
    if (level === undefined) continue;
    const items: FromItem[] = [];
    for (const item of (level.fromClause as Node[] | undefined) ?? []) fromItems(item, items);
    for (const item of (level.usingClause as Node[] | undefined) ?? []) fromItems(item, items);
    if (level.sourceRelation) fromItems(level.sourceRelation as Node, items);
    // A DML target: a bare RangeVar-shaped object.
    const target = level.relation as Node | undefined;
    if (typeof target?.relname === 'string') fromItems({ RangeVar: target }, items, true);
    const hit =
      qualifier.length === 1
        ? items.find((it) => it.name === qualifier[0])
        : items.find((it) => it.schema === qualifier[0] && it.name === qualifier[1]);
    if (hit) return { node: hit.target ? { DmlTarget: hit.node.RangeVar } : hit.node, scope: levels[i].scope };
  }
  return undefined;
}

/** A FROM item by the name a qualified reference uses; `target`: the table an INSERT/UPDATE/DELETE/MERGE writes. */
interface FromItem {
  name: string;
  schema?: string;
  node: Node;
  target?: true;
}

function fromItems(item: Node, out: FromItem[], target?: true): void {
  const alias = (n: Node) => (n.alias as { aliasname?: string } | undefined)?.aliasname;
  if (item.RangeVar) {
    const rv = item.RangeVar as Node;
    const a = alias(rv);
    if (a !== undefined) out.push({ name: a, node: item, ...(target ? { target } : {}) });
    else
      out.push({
        name: String(rv.relname),
        schema: typeof rv.schemaname === 'string' ? rv.schemaname : undefined,
        node: item,
        ...(target ? { target } : {}),
      });
  } else if (item.JoinExpr) {
    const j = item.JoinExpr as Node;
    const a = alias(j);
    if (a !== undefined) out.push({ name: a, node: item });
    else {
      fromItems(j.larg as Node, out);
      fromItems(j.rarg as Node, out);
      // `a JOIN b USING (id) AS x` (PostgreSQL 14+): x names the USING columns, and hides neither side.
      const using = (j.join_using_alias as { aliasname?: string } | undefined)?.aliasname;
      if (using !== undefined) out.push({ name: using, node: { JoinUsingAlias: j } });
    }
  } else if (item.RangeTableSample) {
    const rv = (item.RangeTableSample as Node).relation as Node;
    if (rv) fromItems(rv, out);
  } else {
    const body = Object.values(item)[0] as Node | undefined;
    const a = body && alias(body);
    if (a !== undefined) out.push({ name: a, node: item });
    else if (item.RangeFunction) {
      // Without an alias a single function's item is named after the function.
      const fname = functionName(item.RangeFunction as Node);
      if (fname !== undefined) out.push({ name: fname, node: item });
    }
  }
}

function functionName(rf: Node): string | undefined {
  const fns = (rf.functions as Node[] | undefined) ?? [];
  if (fns.length !== 1) return undefined;
  const call = ((fns[0].List as { items?: Node[] } | undefined)?.items?.[0]?.FuncCall ?? undefined) as Node | undefined;
  const names = (call?.funcname as Node[] | undefined) ?? [];
  return str(names[names.length - 1]);
}

/**
 * Whether FROM item `item` has a column `name`: true when the tree shows it; 'call' when the tree shows every column
 * of the item (a subquery or CTE whose targets all have names) and none is `name`; the relation candidates it names
 * when a catalog must tell (a table or view); false when nothing can (a `*` over what the tree does not show, a
 * join's alias).
 */
function columnOf(
  item: Node,
  name: string,
  scope: Scope,
  ctx: AnalysisContext,
): true | false | 'call' | CatalogColumnCheck {
  const body = Object.values(item)[0] as Node;
  // A join's USING alias has the USING columns and no others: `x.f` for any other f calls f(x).
  if (item.JoinUsingAlias) return ((body.usingClause as Node[] | undefined) ?? []).map(str).includes(name) || 'call';
  const colnames = ((body.alias as { colnames?: Node[] } | undefined)?.colnames ?? []).map(str);
  if (item.DmlTarget) {
    // The written table itself: never a CTE, whatever the WITH clause names.
    if (colnames.includes(name)) return true;
    return catalogRelation(body, name, ctx);
  }
  if (item.RangeVar) {
    const rv = item.RangeVar as Node;
    const rel = String(rv.relname);
    if (typeof rv.schemaname !== 'string' && scope.has(rel)) {
      const cte = scope.cte(rel) as Node | undefined;
      const own = outputNames(cte?.ctequery as Node | undefined);
      const listed = ((cte?.aliascolnames as Node[] | undefined) ?? []).map(str);
      // `WITH x(a, b)` renames the first columns; more outputs keep their own names.
      if (own === undefined) {
        // A `*` in the CTE: the names its column list gives, or the star's table's by the catalog.
        if (listed.some((n, i) => (colnames[i] ?? n) === name) || colnames.includes(name)) return true;
        // The CTE's own FROM names resolve where its body is read.
        return listed.length === 0 && colnames.length === 0
          ? starColumn(cte?.ctequery as Node, name, scope.cteScope(rel) ?? scope, ctx)
          : false;
      }
      return shownColumn(
        own.map((n, i) => listed[i] ?? n),
        colnames,
        name,
      );
    }
    // `FROM t o(a)` renames t's first column: only the columns after the list answer to their own names.
    if (colnames.includes(name)) return true;
    return catalogRelation(rv, name, ctx, colnames.length);
  }
  if (item.RangeSubselect) {
    const names = outputNames(body.subquery as Node | undefined);
    if (names === undefined && colnames.length === 0) return starColumn(body.subquery as Node, name, scope, ctx);
    return shownColumn(names, colnames, name);
  }
  if (colnames.includes(name)) return true;
  if (item.RangeFunction) {
    const defs = ((body.coldeflist as Node[] | undefined) ?? []).map(
      (d) => (d.ColumnDef as { colname?: string } | undefined)?.colname,
    );
    // `AS t(a int, b text)` names every column the function gives.
    if (defs.length > 0) return defs.includes(name);
    // One function returning a scalar gives one column named after its alias (or itself), unless a column list
    // renames it; WITH ORDINALITY adds `ordinality` after it. A composite result's columns need the catalog.
    // https://www.postgresql.org/docs/current/queries-table-expressions.html#QUERIES-TABLEFUNCTIONS
    if (colnames.length > 0 || ((body.functions as Node[] | undefined) ?? []).length !== 1) return false;
    const own = (body.alias as { aliasname?: string } | undefined)?.aliasname ?? functionName(body);
    return own === name || (body.ordinality === true && name === 'ordinality');
  }
  return false;
}

/**
 * A subquery's or CTE's column `name`, given its output names (undefined when their number is unknown) and the FROM
 * item's column list (`AS s(a, b)`), which renames them by position.
 */
function shownColumn(
  names: Array<string | undefined> | undefined,
  colnames: Array<string | undefined>,
  name: string,
): true | false | 'call' {
  if (names === undefined) return colnames.includes(name);
  const visible = names.map((n, i) => colnames[i] ?? n);
  if (visible.includes(name)) return true;
  return visible.every((n) => n !== undefined) ? 'call' : false;
}

/**
 * Column `name` of `SELECT [named targets,] * FROM one_table` (a CTE's or subquery's query): true when a named
 * target is it, else the table's candidates for the catalog to tell, as for `t.f` on the table itself. False (the
 * catalog's functions decide) for any other shape: a join, a nested WITH, a set operation, `(c).*`, a CTE as the
 * star's source.
 */
function starColumn(
  query: Node | undefined,
  name: string,
  scope: Scope,
  ctx: AnalysisContext,
): true | false | CatalogColumnCheck {
  const s = query?.SelectStmt as Node | undefined;
  const from = (s?.fromClause as Node[] | undefined) ?? [];
  if (s === undefined || s.withClause || (s.op !== undefined && s.op !== 'SETOP_NONE') || from.length !== 1)
    return false;
  const rv = from[0].RangeVar as Node | undefined;
  if (rv === undefined || (typeof rv.schemaname !== 'string' && scope.has(String(rv.relname)))) return false;
  const own = (rv.alias as { aliasname?: string } | undefined)?.aliasname ?? String(rv.relname);
  for (const t of (s.targetList as Node[] | undefined) ?? []) {
    const rt = t.ResTarget as Node;
    const fields = ((rt?.val as Node | undefined)?.ColumnRef as Node | undefined)?.fields as Node[] | undefined;
    if (fields?.[fields.length - 1]?.A_Star) {
      // `*` or `t.*` of the one table (`s.t.*` too); anything else is not this shape.
      if (fields.length > 1 && str(fields[fields.length - 2]) !== own) return false;
      continue;
    }
    const ind = ((rt?.val as Node | undefined)?.A_Indirection as Node | undefined)?.indirection as Node[] | undefined;
    if (ind?.[ind.length - 1]?.A_Star) return false; // `(c).*`: as many columns as c has
    const named = typeof rt?.name === 'string' ? rt.name : figureColname(rt?.val as Node | undefined);
    if (named === name) return true;
    if (named === undefined) return false;
  }
  if (((rv.alias as { colnames?: Node[] } | undefined)?.colnames ?? []).length > 0) return false;
  return catalogRelation(rv, name, ctx);
}

function catalogRelation(rv: Node, name: string, ctx: AnalysisContext, renamed = 0): true | CatalogColumnCheck {
  const relations = relationCandidates(rv, ctx);
  if (relations.every((r) => hasColumnAfter(catalogColumns(r.schema, r.name), name, renamed))) return true;
  return renamed > 0 ? { relations, renamed } : { relations };
}

/** The relations an unqualified or qualified RangeVar may be (as addRangeVar records them). */
function relationCandidates(rv: Node, ctx: AnalysisContext): Array<{ schema: string; name: string }> {
  const name = String(rv.relname);
  if (typeof rv.schemaname === 'string') return [{ schema: rv.schemaname, name }];
  if (CATALOG_RELATIONS.has(name) && !ctx.state.catalogExplicit) return [{ schema: 'pg_catalog', name }];
  const out = name.startsWith('pg_') ? [{ schema: 'pg_catalog', name }] : [];
  for (const s of ctx.state.searchPath) out.push({ schema: s, name });
  return out;
}
