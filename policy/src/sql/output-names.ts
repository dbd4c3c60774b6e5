/**
 * The names PostgreSQL gives a query's output columns, read off the raw parse tree: an `AS` name, else what
 * FigureColname (src/backend/parser/parse_target.c) derives from the expression, else `?column?`. A CTE's or a
 * `FROM` subquery's columns are these names (https://www.postgresql.org/docs/current/queries-with.html), so they
 * decide whether `x.f` on such an item reads a column or calls `f(x)`.
 *
 * A name is given only where it is certain; other expressions (JSON constructors, newer nodes) have none
 * (undefined): for them `x.f` stays a possible call, and lineage names them `?column?`, so a lookup by their real name
 * is unknown (masked). Giving a wrong name would be the unsafe error: `x.name` would pass as a column while
 * PostgreSQL calls `name(x)`.
 */
import type { Node } from './parser.js';

const str = (n: Node | undefined) => (n?.String as { sval?: string } | undefined)?.sval;

const XML_NAMES: Readonly<Record<string, string>> = {
  IS_XMLCONCAT: 'xmlconcat',
  IS_XMLELEMENT: 'xmlelement',
  IS_XMLFOREST: 'xmlforest',
  IS_XMLPARSE: 'xmlparse',
  IS_XMLPI: 'xmlpi',
  IS_XMLROOT: 'xmlroot',
  IS_XMLSERIALIZE: 'xmlserialize',
};

/** Expressions PostgreSQL never names (FigureColnameInternal finds nothing, so `?column?`). */
const UNNAMED: ReadonlySet<string> = new Set(['A_Const', 'ParamRef', 'BoolExpr', 'NullTest', 'BooleanTest']);

type Figure = [name: string | undefined, strength: number] | undefined;

/**
 * FigureColnameInternal: a name and its strength (2: a real name, 1: a type or construct name, 0: none), or
 * undefined when this code does not know what PostgreSQL names the node.
 */
function figure(node: Node | undefined): Figure {
  if (node === undefined || node === null) return undefined;
  const type = Object.keys(node)[0];
  if (type !== undefined && UNNAMED.has(type)) return [undefined, 0];
  if (node.ColumnRef) {
    const fields = ((node.ColumnRef as Node).fields as Node[] | undefined) ?? [];
    const last = str(fields[fields.length - 1]);
    return last === undefined ? [undefined, 0] : [last, 2];
  }
  if (node.A_Indirection) {
    const ind = node.A_Indirection as Node;
    let name: string | undefined;
    for (const i of (ind.indirection as Node[] | undefined) ?? []) name = str(i) ?? name;
    return name !== undefined ? [name, 2] : figure(ind.arg as Node);
  }
  if (node.FuncCall) {
    const names = ((node.FuncCall as Node).funcname as Node[] | undefined) ?? [];
    const last = str(names[names.length - 1]);
    return last === undefined ? [undefined, 0] : [last, 2];
  }
  if (node.A_Expr) return (node.A_Expr as Node).kind === 'AEXPR_NULLIF' ? ['nullif', 2] : [undefined, 0];
  if (node.TypeCast) {
    const tc = node.TypeCast as Node;
    const inner = figure(tc.arg as Node);
    if (inner === undefined || inner[1] > 1) return inner;
    const names = ((tc.typeName as Node | undefined)?.names as Node[] | undefined) ?? [];
    const last = str(names[names.length - 1]);
    return last === undefined ? undefined : [last, 1];
  }
  if (node.CollateClause) return figure((node.CollateClause as Node).arg as Node);
  if (node.GroupingFunc) return ['grouping', 2];
  if (node.SubLink) {
    const sl = node.SubLink as Node;
    if (sl.subLinkType === 'EXISTS_SUBLINK') return ['exists', 2];
    if (sl.subLinkType === 'ARRAY_SUBLINK') return ['array', 2];
    if (sl.subLinkType === 'EXPR_SUBLINK') {
      const first = outputNames(sl.subselect as Node)?.[0];
      return first === undefined ? undefined : [first, 2];
    }
    return [undefined, 0];
  }
  if (node.CaseExpr) {
    const def = (node.CaseExpr as Node).defresult as Node | undefined;
    const inner: Figure = def === undefined ? [undefined, 0] : figure(def);
    if (inner === undefined) return undefined;
    return inner[1] > 1 ? inner : ['case', 1];
  }
  if (node.A_ArrayExpr) return ['array', 1];
  if (node.RowExpr) return ['row', 1];
  if (node.CoalesceExpr) return ['coalesce', 2];
  if (node.MinMaxExpr) return [(node.MinMaxExpr as Node).op === 'IS_GREATEST' ? 'greatest' : 'least', 2];
  if (node.XmlExpr) {
    const name = XML_NAMES[String((node.XmlExpr as Node).op)];
    return name === undefined ? undefined : [name, 2];
  }
  if (node.XmlSerialize) return ['xmlserialize', 2];
  if (node.SQLValueFunction) {
    // current_date, current_time(3), localtimestamp, current_user, user… are named like the function they act as.
    const op = String((node.SQLValueFunction as Node).op);
    return op.startsWith('SVFOP_') ? [op.slice(6).replace(/_N$/, '').toLowerCase(), 2] : undefined;
  }
  return undefined;
}

/** The name PostgreSQL gives a target without `AS`; undefined where this code cannot tell. */
export function figureColname(node: Node | undefined): string | undefined {
  const f = figure(node);
  if (f === undefined) return undefined;
  return f[1] > 0 && f[0] !== undefined ? f[0] : '?column?';
}

/**
 * Output column names of a statement node (`{SelectStmt}`, or INSERT/UPDATE/DELETE/MERGE with RETURNING): a set
 * operation's are its leftmost branch's, VALUES' are column1…n; an entry is undefined where figureColname cannot
 * tell. Undefined when their number is not known: a `*`, `(composite).*`, DML without RETURNING, anything else.
 */
export function outputNames(stmt: Node | undefined): Array<string | undefined> | undefined {
  const dml = (stmt?.InsertStmt ?? stmt?.UpdateStmt ?? stmt?.DeleteStmt ?? stmt?.MergeStmt) as Node | undefined;
  if (dml !== undefined) {
    const returning = ((dml.returningClause as Node | undefined)?.exprs ?? dml.returningList) as Node[] | undefined;
    return returning === undefined || returning.length === 0 ? undefined : targetListNames(returning);
  }
  let s = stmt?.SelectStmt as Node | undefined;
  while (s && s.op !== undefined && s.op !== 'SETOP_NONE') s = s.larg as Node;
  if (s === undefined) return undefined;
  const values = s.valuesLists as Node[] | undefined;
  if (values !== undefined) {
    const first = ((values[0]?.List as { items?: Node[] } | undefined)?.items ?? []).length;
    return Array.from({ length: first }, (_, i) => `column${i + 1}`);
  }
  return targetListNames((s.targetList as Node[] | undefined) ?? []);
}

function targetListNames(list: Node[]): Array<string | undefined> | undefined {
  const out: Array<string | undefined> = [];
  for (const t of list) {
    const rt = (t.ResTarget ?? t) as Node;
    const val = rt.val as Node | undefined;
    const fields = (val?.ColumnRef as Node | undefined)?.fields as Node[] | undefined;
    if (fields?.[fields.length - 1]?.A_Star) return undefined;
    const ind = (val?.A_Indirection as Node | undefined)?.indirection as Node[] | undefined;
    if (ind?.[ind.length - 1]?.A_Star) return undefined;
    out.push(typeof rt.name === 'string' ? rt.name : figureColname(val));
  }
  return out;
}
