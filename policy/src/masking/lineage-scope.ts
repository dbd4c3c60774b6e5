/** Name scopes for lineage: FROM items, their columns and lineage, and how column references resolve. */
import { addLineage, emptyLineage, type Lineage, type OutputColumn, unknownLineage } from './lineage.js';

export type Node = any;

export const str = (n: Node): string | undefined => n?.String?.sval;

export interface ScopeColumn {
  name: string;
  lin: Lineage;
  /** pg_type OID of a catalog relation's column (undefined: not known, e.g. a subquery's or CTE's). */
  typeOid?: number;
  /**
   * Not a column of every relation an unqualified name may be (or renamed away in some by an alias's column list):
   * there `t.name` is PostgreSQL's call name(t), which reads the whole row.
   */
  maybeCall?: true;
}

export interface RangeItem {
  /** Names a qualified reference may use: the alias, or relname and schema.relname. */
  names: string[];
  /** null when the item's columns are unknown (functions, unknown relations). */
  columns: ScopeColumn[] | null;
  /** Lineage of any column of an item with unknown columns. */
  anyLin: Lineage;
  /**
   * An unqualified name that may be relations of different columns (one per schema a search_path may reach): `columns`
   * holds each name once, with every candidate's lineage, but no candidate's order, so `*` expands to an unknown number
   * of columns.
   */
  unordered?: true;
  /**
   * On the item `*` and unqualified names read of a join in FROM: the items inside the join, for a name the join's
   * own columns cannot answer (its columns unknown).
   */
  leaves?: RangeItem[];
}

export interface Scope {
  items: RangeItem[];
  parent?: Scope;
  ctes: Map<string, DerivedColumns>;
  /** What an unqualified `*` expands to, when not `items` (a join's columns come once, in its order). */
  star?: RangeItem[];
  /** While a WITH RECURSIVE list is read: reads a member not read yet (see LineageWalker.withClause). */
  pendingCte?: (name: string) => DerivedColumns | undefined;
}

/** The columns a subquery or CTE gives the FROM item that reads it. */
export interface DerivedColumns {
  /** null when they are not known one by one (see derivedColumns). */
  columns: ScopeColumn[] | null;
  /** Lineage of any column when `columns` is null. */
  anyLin: Lineage;
}

/**
 * The FROM-item columns of a query's outputs, renamed by a column list (`WITH x(a, b)`, `AS s(a, b)`) by position.
 * A `*` over something whose columns are unknown (a function in FROM, `(composite).*`) stands for any number of
 * columns: the names after it no longer sit at the positions the list renames, and a name read through the item may
 * be one of the star's. Such outputs give an item of unknown columns whose every column has the lineage of all of
 * them, as a function in FROM does: otherwise `WITH x(a, b, c) AS (SELECT * FROM jsonb_to_record(…) AS j(p, q),
 * orders o)` named q (a masked value) `b` with the lineage of orders.id.
 */
export function derivedColumns(outs: readonly OutputColumn[], colnames?: Node[]): DerivedColumns {
  if (outs.some((o) => o.expands)) {
    const anyLin = emptyLineage();
    for (const o of outs) addLineage(anyLin, o.lin);
    return { columns: null, anyLin };
  }
  return { columns: outs.map((o, i) => ({ name: str(colnames?.[i]) ?? o.name, lin: o.lin })), anyLin: emptyLineage() };
}

export function findItems(scope: Scope, qual: string[]): RangeItem[] {
  const q = qual.slice(-2).join('.');
  const last = qual[qual.length - 1];
  for (let s: Scope | undefined = scope; s; s = s.parent) {
    const hit = s.items.filter((i) => i.names.includes(q) || (qual.length === 1 && i.names.includes(last)));
    if (hit.length) return hit;
  }
  return [];
}
/** The lineage of a whole-row reference (`t`, `t.*`): every column of the item. */
export function wholeRow(item: RangeItem): Lineage {
  const lin = addLineage(emptyLineage(), item.anyLin);
  for (const c of item.columns ?? []) addLineage(lin, c.lin);
  return lin;
}
/** Adds to `lin` the lineage of every column `name` of `items` may be; false when none may be. */
function columnOf(items: RangeItem[], name: string, lin: Lineage): boolean {
  let found = false;
  for (const item of items) {
    if (!item.columns) {
      if (item.leaves) found = columnOf(item.leaves, name, lin) || found;
      else {
        addLineage(lin, item.anyLin);
        found = true;
      }
    } else
      for (const c of item.columns)
        if (c.name === name) {
          addLineage(lin, c.lin);
          found = true;
        }
  }
  return found;
}

/** Resolves a ColumnRef's fields against the scope chain (union of every candidate). */
export function resolveRef(fields: Node[], scope: Scope): Lineage {
  const names = fields.map((f) => (f.A_Star ? '*' : str(f)));
  if (names.some((n) => n === undefined)) return unknownLineage();
  const last = names[names.length - 1] as string;
  if (names.length === 1) {
    for (let s: Scope | undefined = scope; s; s = s.parent) {
      if (last === '*') return s.items.reduce((acc, i) => addLineage(acc, wholeRow(i)), emptyLineage());
      const lin = emptyLineage();
      // An unqualified name reads a join's own columns, not its sides' (parse_clause.c makes the sides' columns
      // invisible to unqualified names): a merged USING column is the one value PostgreSQL gives it, not both sides.
      let found = columnOf(s.star ?? s.items, last, lin);
      // `SELECT t FROM t`: a bare relation name is a whole-row reference.
      for (const item of s.items) {
        if (!item.names.includes(last)) continue;
        addLineage(lin, wholeRow(item));
        found = true;
      }
      if (found) return lin;
    }
    return unknownLineage();
  }
  const items = findItems(scope, names.slice(0, -1) as string[]);
  if (items.length === 0) return unknownLineage();
  const lin = emptyLineage();
  for (const item of items) {
    if (last === '*' || !item.columns) addLineage(lin, wholeRow(item));
    else {
      const c = item.columns.find((col) => col.name === last);
      addLineage(lin, c ? c.lin : unknownLineage());
      if (c?.maybeCall) addLineage(lin, wholeRow(item));
    }
  }
  return lin;
}
/**
 * The pg_type OID a ColumnRef resolves to, when every column it may name is a catalog column of that one type;
 * undefined when any candidate's type is not known (a whole row, a function's or subquery's column).
 */
export function refType(fields: Node[], scope: Scope): number | undefined {
  const names = fields.map(str);
  if (names.length === 0 || names.some((n) => n === undefined)) return undefined;
  const last = names[names.length - 1] as string;
  const cols: ScopeColumn[] = [];
  if (names.length === 1) {
    for (let s: Scope | undefined = scope; s && cols.length === 0; s = s.parent) {
      for (const item of s.items) {
        if (!item.columns || item.names.includes(last)) return undefined;
        for (const c of item.columns) if (c.name === last) cols.push(c);
      }
    }
  } else {
    for (const item of findItems(scope, names.slice(0, -1) as string[])) {
      const c = item.columns?.find((col) => col.name === last);
      if (!c) return undefined;
      cols.push(c);
    }
  }
  const t = cols[0]?.typeOid;
  return t !== undefined && cols.every((c) => c.typeOid === t) ? t : undefined;
}
/** The CTE a relation name stands for: the innermost WITH's member of that name that is visible there. */
export function findCte(name: string, scope: Scope | undefined): DerivedColumns | undefined {
  for (let s = scope; s; s = s.parent) {
    const c = s.ctes.get(name) ?? s.pendingCte?.(name);
    if (c) return c;
  }
  return undefined;
}
/**
 * A join's output columns as PostgreSQL orders them, which an alias's column list renames by position (`(a JOIN b
 * USING (id)) AS j(x, y)`): with USING or NATURAL the shared columns first, once each, then the left side's others,
 * then the right side's (https://www.postgresql.org/docs/current/queries-table-expressions.html#QUERIES-JOIN).
 * null when a side's columns are not known one by one. A shared column's value is what PostgreSQL's
 * buildMergedJoinVar (parse_clause.c) makes it: the left column's for LEFT JOIN, the right one's for RIGHT JOIN,
 * `COALESCE(left, right)` for FULL JOIN (both lineages); for an inner join the left one unless it needs a coercion to
 * the common type and the right one does not, so the left one only where both are catalog columns of one type (a
 * typmod difference relabels both, which keeps the left), else both.
 */
export function joinColumns(left: ScopeColumn[] | null, right: ScopeColumn[] | null, j: Node): ScopeColumn[] | null {
  if (left === null || right === null) return null;
  const shared: string[] = j.isNatural
    ? left.filter((l) => right.some((r) => r.name === l.name)).map((l) => l.name)
    : (j.usingClause ?? []).map((u: Node) => str(u));
  if (shared.length === 0) return [...left, ...right];
  const merged: ScopeColumn[] = [];
  for (const name of shared) {
    const l = left.find((c) => c.name === name);
    const r = right.find((c) => c.name === name);
    // A USING name one side lacks is PostgreSQL's error; unknown keeps a wrong guess from passing.
    const lin = l && r ? mergedLineage(l, r, j.jointype) : unknownLineage();
    merged.push({ name, lin, typeOid: l?.typeOid === r?.typeOid ? l?.typeOid : undefined });
  }
  const rest = (side: ScopeColumn[]) => side.filter((c) => !shared.includes(c.name));
  return [...merged, ...rest(left), ...rest(right)];
}

function mergedLineage(l: ScopeColumn, r: ScopeColumn, jointype: string | undefined): Lineage {
  const both = () => addLineage(addLineage(emptyLineage(), l.lin), r.lin);
  switch (jointype) {
    case 'JOIN_LEFT':
      return addLineage(emptyLineage(), l.lin);
    case 'JOIN_RIGHT':
      return addLineage(emptyLineage(), r.lin);
    case 'JOIN_INNER':
      return l.typeOid !== undefined && l.typeOid === r.typeOid ? addLineage(emptyLineage(), l.lin) : both();
    default:
      return both();
  }
}

/**
 * The item a join's USING alias names (`a JOIN b USING (id) AS x`, PostgreSQL 14+): the shared columns only, as the
 * join gives them (https://www.postgresql.org/docs/current/sql-select.html#SQL-FROM, join_using_alias). `x.f` for
 * any other f is `f(x)`, and `x` the row of those columns. `joined`: the join's columns (joinColumns), null when not
 * known one by one; `sides`: its left and right items, whose columns of each name any shared column may then be.
 */
export function usingAliasItem(j: Node, joined: ScopeColumn[] | null, sides: RangeItem[]): RangeItem {
  const names: string[] = (j.usingClause ?? []).map((u: Node) => str(u) ?? '');
  const columns =
    joined?.slice(0, names.length) ??
    names.map((name) => ({ name, lin: resolveRef([{ String: { sval: name } }], { items: sides, ctes: new Map() }) }));
  return { names: [j.join_using_alias.aliasname], columns, anyLin: emptyLineage() };
}

/** Applies an alias column list (`AS a(x, y)`) positionally. */
export function renamed(item: RangeItem, alias: Node): RangeItem {
  if (!alias?.colnames || !item.columns) return item;
  const columns = item.columns.map((c, i) => ({ ...c, name: str(alias.colnames[i]) ?? c.name }));
  return { ...item, columns };
}
/** The name a function in FROM is referenced by when it has no alias. */
export function functionNames(rf: Node): string[] {
  const fc = rf.functions?.[0]?.List?.items?.[0]?.FuncCall;
  const n = fc?.funcname?.map(str);
  return n ? [n[n.length - 1]] : [];
}
