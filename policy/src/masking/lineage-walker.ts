/**
 * Column lineage over libpg-query parse trees (PostgreSQL's raw parse tree, before analysis): for each output
 * column of a query, the base columns it is computed from. Scoping follows PostgreSQL's name resolution
 * (https://www.postgresql.org/docs/current/sql-expressions.html#SQL-EXPRESSIONS-COLUMN-REFS), resolved
 * conservatively: where a name could mean several things, the lineage is the union of all of them.
 */

import { figureColname } from '../sql/output-names.js';
import {
  type CatalogRelation,
  type CatalogSnapshot,
  isSystemRelation,
  LEAKY_SYSTEM_RELATIONS,
} from './catalog-snapshot.js';
import {
  OPAQUE_FUNCTIONS,
  SET_RETURNING_FUNCTIONS,
  SIDE_CHANNEL_FUNCTIONS,
  SYSTEM_FUNCTION_SCHEMAS,
} from './function-lineage.js';
import {
  addLineage,
  colKey,
  emptyLineage,
  type Lineage,
  type OutputColumn,
  sameLineage,
  unknownLineage,
} from './lineage.js';
import {
  derivedColumns,
  findCte,
  findItems,
  functionNames,
  joinColumns,
  type Node,
  type RangeItem,
  refType,
  renamed,
  resolveRef,
  type Scope,
  type ScopeColumn,
  str,
  usingAliasItem,
  wholeRow,
} from './lineage-scope.js';
import { onSearchPath, type SearchPaths, type SessionPaths } from './search-path.js';
import { parseViewQuery } from './sql-parse.js';
import {
  callsInFieldNotation,
  EQUALS,
  operatorRunsUserCode,
  typedOperatorRunsUserCode,
  typeRunsUserCode,
  UNKNOWN_TYPE,
} from './user-code.js';

/** pg_type OIDs of pg_catalog types a cast names as keywords (`::int`, `::varchar(5)`: parsed `pg_catalog.x`). */
const CATALOG_TYPE_OIDS: Record<string, number> = {
  bool: 16,
  int2: 21,
  int4: 23,
  int8: 20,
  float4: 700,
  float8: 701,
  numeric: 1700,
  varchar: 1043,
  bpchar: 1042,
  timestamp: 1114,
  timestamptz: 1184,
  interval: 1186,
};

/** Where predicate and write usage of columns is collected while walking. */
export interface LineageSink {
  /** Columns used in WHERE, JOIN ON, GROUP BY, HAVING, ORDER BY, window clauses, aggregate FILTER. */
  predicate: Lineage;
  /** Values flowing into tables (INSERT ... SELECT, UPDATE SET, SELECT INTO, CREATE TABLE AS) or side channels. */
  written: Lineage;
  /** Set when user-defined code runs (functions outside pg_catalog, DO, CALL): its RAISE output is opaque. */
  opaque?: boolean;
  /** Set when set_config() runs: it may change search_path (see search-path.ts). */
  setsConfig?: boolean;
  /** Set when an unqualified relation name had candidates in more than one schema. */
  ambiguousNames?: boolean;
  /**
   * Set when the statement reads data the parse tree cannot trace (SQL run from text, planner statistics, cursors
   * and prepared statements it did not see declared): what it reads may be masked. Names that resolve to nothing
   * do not set it.
   */
  untraceable?: boolean;
}

interface ViewMemo {
  outs: OutputColumn[];
  /** The definition calls user-defined code. */
  opaque: boolean;
  /** The definition calls set_config(). */
  setsConfig: boolean;
}

export class LineageWalker {
  /** Each JoinExpr's output columns as PostgreSQL orders them (joinColumns), for the join above it and its alias. */
  private joinOutputs?: WeakMap<Node, ScopeColumn[] | null>;

  private readonly paths?: SearchPaths;
  private readonly catalogFirst: boolean;

  /**
   * `session`: what the sidecar knows of the session's search_path (see search-path.ts). A view's definition never
   * gets it, as pg_get_viewdef qualifies names by the catalog connection's path, not the session's.
   */
  constructor(
    private readonly cat: CatalogSnapshot,
    readonly sink: LineageSink,
    private readonly depth = 0,
    session: SessionPaths = {},
  ) {
    this.paths = session.paths;
    this.catalogFirst = session.catalogFirst === true;
  }

  /** Output columns of a SelectStmt body (also the bare larg/rarg objects of set operations). */
  select(stmt: Node, parent?: Scope): OutputColumn[] {
    if (!stmt) return [];
    const scope: Scope = { items: [], parent, ctes: new Map() };
    if (stmt.withClause) this.withClause(stmt.withClause, scope);
    if (stmt.op && stmt.op !== 'SETOP_NONE') {
      const l = this.select(stmt.larg, scope);
      const r = this.select(stmt.rarg, scope);
      const out = l.map((c, i) => ({
        ...c,
        lin: addLineage(addLineage(emptyLineage(), c.lin), r[i]?.lin ?? unknownLineage()),
      }));
      // INTERSECT, EXCEPT and UNION compare rows to keep or drop them (only UNION ALL does not): how many come back
      // says whether a guessed value is there, like a WHERE on it.
      if (!(stmt.op === 'SETOP_UNION' && stmt.all)) for (const c of out) addLineage(this.sink.predicate, c.lin);
      this.orderingUsage(stmt, scope, out);
      return out;
    }
    if (stmt.valuesLists) {
      const out: OutputColumn[] = [];
      for (const row of stmt.valuesLists) {
        (row.List?.items ?? []).forEach((e: Node, i: number) => {
          out[i] ??= { name: `column${i + 1}`, lin: emptyLineage() };
          addLineage(out[i].lin, this.expr(e, scope));
        });
      }
      return out;
    }
    for (const f of stmt.fromClause ?? []) {
      const items = this.rangeItem(f, scope);
      scope.items.push(...items);
      // `*` gives a join's columns once, in its own order (USING columns merged), not each side's.
      scope.star ??= [];
      if (f.JoinExpr) scope.star.push({ ...this.joinStarItem(f.JoinExpr, items), leaves: items });
      else scope.star.push(...items);
    }
    if (stmt.whereClause) addLineage(this.sink.predicate, this.expr(stmt.whereClause, scope));
    if (stmt.havingClause) addLineage(this.sink.predicate, this.expr(stmt.havingClause, scope));
    const out = this.targets(stmt.targetList ?? [], scope);
    this.orderingUsage(stmt, scope, out);
    for (const w of stmt.windowClause ?? []) addLineage(this.sink.predicate, this.expr(w, scope));
    // LIMIT/OFFSET decide how many rows come back: a masked value there is read through the row count.
    addLineage(this.sink.predicate, this.expr([stmt.limitCount, stmt.limitOffset], scope));
    if (stmt.intoClause) for (const c of out) addLineage(this.sink.written, c.lin);
    return out;
  }

  /** Expands a target list (SELECT list or RETURNING list) over a scope. */
  targets(list: Node[], scope: Scope): OutputColumn[] {
    const out: OutputColumn[] = [];
    for (const t of list) {
      const rt = t.ResTarget ?? t;
      const ref = rt.val?.ColumnRef;
      if (ref?.fields[ref.fields.length - 1]?.A_Star) {
        const qual: string[] = ref.fields.slice(0, -1).map(str);
        const items = qual.length === 0 ? (scope.star ?? scope.items) : findItems(scope, qual);
        if (items.length === 0) out.push({ name: '*', lin: unknownLineage(), expands: true });
        for (const item of items) {
          if (item.columns && !item.unordered) out.push(...item.columns.map((c) => ({ name: c.name, lin: c.lin })));
          else out.push({ name: '*', lin: wholeRow(item), expands: true });
        }
        continue;
      }
      const ind = rt.val?.A_Indirection;
      if (ind?.indirection?.[ind.indirection.length - 1]?.A_Star) {
        // `(composite).*` becomes as many columns as the composite has: it expands like `*`, so the columns after
        // it are not lined up with the wrong fields.
        out.push({ name: '*', lin: this.expr(rt.val, scope), expands: true });
        continue;
      }
      out.push({ name: rt.name ?? this.exprName(rt.val), lin: this.expr(rt.val, scope) });
    }
    return out;
  }

  scopeFor(items: RangeItem[], parent?: Scope): Scope {
    return { items, parent, ctes: new Map() };
  }

  private orderingUsage(stmt: Node, scope: Scope, out: OutputColumn[]): void {
    // ORDER BY / GROUP BY / DISTINCT ON may name output columns by alias or position.
    // Names not found among the FROM items fall back to output columns.
    const outputs: Scope = {
      items: [{ names: [], columns: out, anyLin: emptyLineage() }],
      parent: scope.parent,
      ctes: new Map(),
    };
    const sc: Scope = { items: scope.items, parent: outputs, ctes: scope.ctes };
    const use = (n: Node): void => {
      const node = n?.SortBy ? n.SortBy.node : n;
      const pos = node?.A_Const?.ival?.ival;
      if (typeof pos === 'number' && out[pos - 1]) addLineage(this.sink.predicate, out[pos - 1].lin);
      else addLineage(this.sink.predicate, this.expr(node, sc));
      // A bare name that is an output alias (and not a FROM column) refers to the output column.
      const name = node?.ColumnRef?.fields?.length === 1 ? str(node.ColumnRef.fields[0]) : undefined;
      const o = name ? out.find((c) => c.name === name) : undefined;
      if (o) addLineage(this.sink.predicate, o.lin);
    };
    for (const n of stmt.sortClause ?? []) use(n);
    for (const n of stmt.groupClause ?? []) use(n);
    for (const n of stmt.distinctClause ?? []) if (n && Object.keys(n).length) use(n);
    // Plain DISTINCT compares whole output rows, as GROUP BY on every column would.
    if (stmt.distinctClause?.length === 1 && !Object.keys(stmt.distinctClause[0] ?? {}).length)
      for (const c of out) addLineage(this.sink.predicate, c.lin);
  }

  /**
   * A WITH list's members into `scope.ctes`. Without RECURSIVE a member sees the members before it (and, under the
   * same name, an outer CTE or table, not itself); with RECURSIVE it sees every member, also later ones: PostgreSQL
   * orders them by their references (https://www.postgresql.org/docs/current/queries-with.html), so each member is
   * read the first time a member refers to it. The query body and nested queries see all of them, innermost WITH
   * first (findCte).
   */
  private withClause(w: Node, scope: Scope): void {
    const list: Node[] = (w.ctes ?? []).map((c: Node) => c.CommonTableExpr);
    if (!w.recursive) {
      for (const cte of list)
        scope.ctes.set(cte.ctename, derivedColumns(this.statementOutputs(cte.ctequery, scope), cte.aliascolnames));
      return;
    }
    const pending = new Map<string, Node>();
    for (const cte of list) if (!pending.has(cte.ctename)) pending.set(cte.ctename, cte);
    scope.pendingCte = (name) => {
      const cte = pending.get(name);
      if (cte === undefined) return undefined;
      pending.delete(name);
      this.recursiveCte(cte, scope);
      return scope.ctes.get(name);
    };
    for (const cte of list) scope.pendingCte(cte.ctename);
    scope.pendingCte = undefined;
  }

  /** One member of a WITH RECURSIVE list into `scope.ctes`, its self-reference read to a fixed point. */
  private recursiveCte(cte: Node, scope: Scope): void {
    // Until its seed is known, a reference to it (only mutual recursion, which PostgreSQL rejects) reads as unknown.
    scope.ctes.set(cte.ctename, { columns: null, anyLin: unknownLineage() });
    // The self-reference's columns start empty and grow, position by position, to a fixed point.
    // Seed with the non-recursive term (the leftmost branch of the UNION).
    let seedTerm = cte.ctequery?.SelectStmt;
    while (seedTerm?.larg) seedTerm = seedTerm.larg;
    const seed = seedTerm && seedTerm !== cte.ctequery?.SelectStmt ? this.select(seedTerm, scope) : [];
    const entry = derivedColumns(seed, cte.aliascolnames);
    scope.ctes.set(cte.ctename, entry);
    let converged = false;
    for (let i = 0; i < 6 && !converged; i++) {
      const next = derivedColumns(this.statementOutputs(cte.ctequery, scope), cte.aliascolnames);
      const cols = entry.columns;
      if (cols === null || next.columns === null) {
        // Columns not known one by one on either side: every column has the lineage of all of them.
        const all = addLineage(addLineage(emptyLineage(), entry.anyLin), next.anyLin);
        for (const col of [...(cols ?? []), ...(next.columns ?? [])]) addLineage(all, col.lin);
        converged = cols === null && sameLineage(all, entry.anyLin);
        entry.columns = null;
        entry.anyLin = all;
        continue;
      }
      converged = cols.length === next.columns.length;
      next.columns.forEach((o, j) => {
        cols[j] ??= { name: o.name, lin: emptyLineage() };
        const merged = addLineage(addLineage(emptyLineage(), cols[j].lin), o.lin);
        if (!sameLineage(merged, cols[j].lin)) converged = false;
        cols[j].lin = merged;
      });
    }
    if (!converged) {
      entry.columns = null;
      entry.anyLin = unknownLineage();
    }
  }

  /** Outputs of a statement node that can appear as a CTE or subquery (SELECT, or DML with RETURNING). */
  statementOutputs(node: Node, scope?: Scope): OutputColumn[] {
    if (node?.SelectStmt) return this.select(node.SelectStmt, scope);
    const dml = node?.InsertStmt ?? node?.UpdateStmt ?? node?.DeleteStmt ?? node?.MergeStmt;
    if (dml) return this.dml(node, scope);
    return [{ name: '?', lin: unknownLineage(), expands: true }];
  }

  /** INSERT/UPDATE/DELETE/MERGE: records predicate and write usage; returns the RETURNING outputs. */
  dml(node: Node, parent?: Scope): OutputColumn[] {
    const s = node.InsertStmt ?? node.UpdateStmt ?? node.DeleteStmt ?? node.MergeStmt;
    const scope: Scope = { items: [], parent, ctes: new Map() };
    if (s.withClause) this.withClause(s.withClause, scope);
    // The target is always a table or view: a CTE of the same name does not hide it
    // (https://www.postgresql.org/docs/current/sql-update.html: table_name), so its columns are the table's.
    scope.items.push(this.relationItem(s.relation, scope, true));
    // Triggers and rules on the target run user code (RAISE, pg_notify) the parse tree does not show.
    const targets = this.cat.byName.get(s.relation?.relname) ?? [];
    if (targets.some((r) => this.cat.triggerRelations.has(r.oid))) this.sink.opaque = true;
    for (const f of [...(s.fromClause ?? []), ...(s.usingClause ?? [])]) scope.items.push(...this.rangeItem(f, scope));
    if (s.sourceRelation) scope.items.push(...this.rangeItem(s.sourceRelation, scope));
    if (node.InsertStmt && s.selectStmt) {
      for (const o of this.statementOutputs(s.selectStmt, scope)) addLineage(this.sink.written, o.lin);
    }
    for (const t of s.targetList ?? []) addLineage(this.sink.written, this.expr(t.ResTarget?.val ?? t, scope));
    // INSERT ... ON CONFLICT DO UPDATE SET ... WHERE ...: values written, and a predicate.
    const conflict = s.onConflictClause;
    if (conflict) {
      for (const t of conflict.targetList ?? []) addLineage(this.sink.written, this.expr(t.ResTarget?.val ?? t, scope));
      addLineage(this.sink.predicate, this.expr([conflict.whereClause, conflict.infer?.whereClause], scope));
    }
    for (const w of s.mergeWhenClauses ?? []) {
      const m = w.MergeWhenClause;
      addLineage(this.sink.predicate, this.expr(m?.condition, scope));
      addLineage(this.sink.written, this.expr([m?.targetList, m?.values], scope));
    }
    addLineage(this.sink.predicate, this.expr([s.whereClause, s.joinCondition], scope));
    const returning = s.returningClause?.exprs ?? s.returningList;
    return returning ? this.targets(returning, scope) : [];
  }

  rangeItem(node: Node, scope: Scope): RangeItem[] {
    if (node.RangeVar) return [this.relationItem(node.RangeVar, scope)];
    if (node.RangeSubselect) {
      const rs = node.RangeSubselect;
      const derived = derivedColumns(this.statementOutputs(rs.subquery, scope));
      return [renamed({ names: [rs.alias?.aliasname ?? ''], ...derived }, rs.alias)];
    }
    if (node.RangeFunction) {
      const rf = node.RangeFunction;
      const lin = this.expr(rf.functions, scope);
      return [{ names: rf.alias ? [rf.alias.aliasname] : functionNames(rf), columns: null, anyLin: lin }];
    }
    if (node.JoinExpr) {
      const j = node.JoinExpr;
      const leftItems = this.rangeItem(j.larg, scope);
      // A LATERAL right side reads the left side's columns (`JOIN LATERAL (SELECT c.ssn) s ON …`), as a LATERAL item
      // after a comma reads the items before it.
      const rightItems = this.rangeItem(j.rarg, {
        items: [...scope.items, ...leftItems],
        parent: scope.parent,
        ctes: scope.ctes,
      });
      const items = [...leftItems, ...rightItems];
      const inner: Scope = { items: [...scope.items, ...items], parent: scope.parent, ctes: scope.ctes };
      addLineage(this.sink.predicate, this.expr(j.quals, inner));
      for (const u of j.usingClause ?? []) addLineage(this.sink.predicate, resolveRef([u], inner));
      // USING and NATURAL compare the shared columns with the `=` their names resolve to.
      if (
        (j.usingClause?.length || j.isNatural) &&
        operatorRunsUserCode(this.cat, EQUALS, undefined, this.catalogFirst)
      )
        this.sink.opaque = true;
      if (j.isNatural) {
        // NATURAL JOIN compares every column name the two sides share (unknown columns: any of them).
        const names = (side: RangeItem[]) => new Set(side.flatMap((i) => (i.columns ?? []).map((c) => c.name)));
        const [l, r] = [names(leftItems), names(rightItems)];
        for (const item of items) {
          if (!item.columns) addLineage(this.sink.predicate, item.anyLin);
          else for (const c of item.columns) if (l.has(c.name) && r.has(c.name)) addLineage(this.sink.predicate, c.lin);
        }
      }
      const cols = joinColumns(this.sideColumns(j.larg, leftItems), this.sideColumns(j.rarg, rightItems), j);
      this.joinOutputs ??= new WeakMap();
      this.joinOutputs.set(j, cols);
      // Before the join's alias, which joinStarItem finds last.
      if (j.join_using_alias) items.push(usingAliasItem(j, cols, [...leftItems, ...rightItems]));
      if (j.alias) {
        const anyLin = items.reduce((acc, i) => addLineage(acc, wholeRow(i)), emptyLineage());
        items.push(renamed({ names: [j.alias.aliasname], columns: cols, anyLin }, j.alias));
      }
      return items;
    }
    if (node.RangeTableSample) return this.rangeItem(node.RangeTableSample.relation, scope);
    // XMLTABLE, JSON_TABLE and anything newer: columns unknown, lineage of every expression inside.
    const lin = this.expr(node, scope);
    return [{ names: [], columns: null, anyLin: lin }];
  }

  /** What `*` reads of a join in FROM: its alias's item, or one item of its output columns. */
  private joinStarItem(j: Node, items: RangeItem[]): RangeItem {
    if (j.alias) return items[items.length - 1];
    const anyLin = items.reduce((acc, i) => addLineage(acc, wholeRow(i)), emptyLineage());
    return { names: [], columns: this.joinOutputs?.get(j) ?? null, anyLin };
  }

  /**
   * The columns one side of a join gives it, in order: a nested join's output (as its alias's column list renames
   * it), else its one item's columns.
   */
  private sideColumns(side: Node, items: RangeItem[]): ScopeColumn[] | null {
    if (side?.JoinExpr) return this.joinStarItem(side.JoinExpr, items).columns;
    return items.length === 1 && !items[0].unordered ? items[0].columns : null;
  }

  private relationItem(rv: Node, scope: Scope, target = false): RangeItem {
    const name: string = rv.relname;
    const alias = rv.alias;
    const names = alias ? [alias.aliasname] : [name];
    if (!rv.schemaname && !target) {
      const cte = findCte(name, scope);
      if (cte) return renamed({ names, columns: cte.columns, anyLin: cte.anyLin }, alias);
    }
    const all = this.cat.byName.get(name) ?? [];
    const candidates = rv.schemaname ? all.filter((r) => r.schema === rv.schemaname) : onSearchPath(all, this.paths);
    // Not untraceable: most such names are typos, whose error should name them (a relation created elsewhere since
    // the last catalog load is the exception; docs/masking.md, Not covered).
    if (candidates.length === 0) return { names, columns: null, anyLin: unknownLineage() };
    if (!alias) for (const c of candidates) names.push(`${c.schema}.${c.name}`);
    // Unqualified names may resolve to any schema on a search_path the session may be under (every schema when the
    // sidecar does not know the path): take every such candidate.
    const columns: ScopeColumn[] = [];
    const shapes = new Set<string>();
    const seen = new Map<string, number>();
    let read = 0;
    let anyLin = emptyLineage();
    for (const rel of candidates) {
      // A user cast from this row type, or from a column's type, runs when such a value is cast (`n::text`, or
      // implicitly): the SQL need not name the type.
      if (this.cat.castSources.has(rel.name) || rel.columns.some((c) => this.cat.castSourceOids.has(c.typeOid)))
        this.sink.opaque = true;
      // Row-level-security policies run their expressions on every row read or written, user code included.
      if (this.cat.readCodeRelations.has(rel.oid)) this.sink.opaque = true;
      if (isSystemRelation(rel)) {
        if (LEAKY_SYSTEM_RELATIONS.has(rel.name)) {
          anyLin = unknownLineage();
          this.sink.untraceable = true;
        } else if (rel.columns.length === 0) continue;
      }
      // An alias's column list renames each candidate's first columns by position (dropped columns are not in the
      // snapshot and do not count: https://www.postgresql.org/docs/current/queries-table-expressions.html), so a
      // name means a different column in candidates whose columns come in another order.
      const own = new Set<string>();
      rel.columns.forEach((col, i) => {
        const name = str(alias?.colnames?.[i]) ?? col.name;
        const lin = this.relationColumn(rel, col.name, col.attnum);
        const have = columns.find((c) => c.name === name);
        if (!own.has(name)) seen.set(name, (seen.get(name) ?? 0) + 1);
        own.add(name);
        if (have) {
          addLineage(have.lin, lin);
          if (have.typeOid !== col.typeOid) have.typeOid = undefined;
        } else columns.push({ name, lin, typeOid: col.typeOid || undefined });
      });
      read++;
      shapes.add(rel.columns.map((c) => c.name).join('\u0000'));
    }
    if (read > 1) this.sink.ambiguousNames = true;
    // Where a candidate has no column of the name, `t.name` on it is PostgreSQL's call name(t).
    for (const c of columns) if ((seen.get(c.name) ?? 0) < read) c.maybeCall = true;
    const onlyOpaque = candidates.every((r) => isSystemRelation(r) && r.columns.length === 0);
    const item: RangeItem = { names, columns: onlyOpaque || anyLin.unknown ? null : columns, anyLin };
    // Candidates whose columns differ in name or order: no position is known (positions of one, names of another
    // lined a masked column up with an unmasked one's lineage).
    if (shapes.size > 1) item.unordered = true;
    return item;
  }

  /** Lineage of one column of a catalog relation: itself, plus (for views) what the view computes it from. */
  relationColumn(rel: CatalogRelation, column: string, attnum: number): Lineage {
    const lin = emptyLineage();
    lin.cols.add(colKey(rel.schema, rel.name, column));
    if (rel.kind !== 'v' && rel.kind !== 'm') return lin;
    const outs = this.viewOutputs(rel);
    const idx = rel.columns.findIndex((c) => c.attnum === attnum);
    return addLineage(lin, outs?.[idx]?.lin ?? unknownLineage());
  }

  viewOutputs(rel: CatalogRelation): OutputColumn[] | undefined {
    const memo = this.cat.viewMemo.get(rel.oid) as ViewMemo | 'busy' | undefined;
    if (memo === 'busy') return undefined; // a cycle: unknown
    if (memo) {
      // A view's user-defined functions run whenever it is read, and RAISE into the reader's session.
      if (memo.opaque) this.sink.opaque = true;
      if (memo.setsConfig) this.sink.setsConfig = true;
      return memo.outs;
    }
    if (!rel.viewSql || this.depth > 16) return undefined;
    this.cat.viewMemo.set(rel.oid, 'busy');
    let done: ViewMemo | undefined;
    try {
      const tree = parseViewQuery(rel.viewSql);
      // The view's own WHERE clause is the view owner's choice, not the client's: its usage is not recorded.
      const sink: LineageSink = { predicate: emptyLineage(), written: emptyLineage() };
      const walker = new LineageWalker(this.cat, sink, this.depth + 1);
      const outs = tree ? walker.statementOutputs(tree) : undefined;
      if (outs) done = { outs, opaque: sink.opaque === true, setsConfig: sink.setsConfig === true };
    } finally {
      if (done) this.cat.viewMemo.set(rel.oid, done);
      else this.cat.viewMemo.delete(rel.oid);
    }
    if (done?.opaque) this.sink.opaque = true;
    if (done?.setsConfig) this.sink.setsConfig = true;
    return done?.outs;
  }

  /** Lineage of any expression: the union over every column reference and subquery inside it. */
  expr(node: Node, scope: Scope): Lineage {
    if (node === null || typeof node !== 'object') return emptyLineage();
    if (Array.isArray(node))
      return node.reduce((acc: Lineage, n: Node) => addLineage(acc, this.expr(n, scope)), emptyLineage());
    if (node.ColumnRef) {
      if (callsInFieldNotation(this.cat, node.ColumnRef.fields, scope)) this.sink.opaque = true;
      return resolveRef(node.ColumnRef.fields, scope);
    }
    if (node.SubLink) {
      // `x IN (SELECT …)` is an ANY sublink whose `=` the parser leaves unnamed.
      const sl = node.SubLink;
      const op = sl.operName ?? (sl.subLinkType === 'ANY_SUBLINK' ? EQUALS : undefined);
      if (operatorRunsUserCode(this.cat, op, undefined, this.catalogFirst)) this.sink.opaque = true;
      const lin = this.expr(node.SubLink.testexpr, scope);
      for (const o of this.statementOutputs(node.SubLink.subselect, scope)) addLineage(lin, o.lin);
      return lin;
    }
    if (node.FuncCall) return this.funcCall(node.FuncCall, scope);
    if (node.SelectStmt)
      return this.statementOutputs(node, scope).reduce((acc, o) => addLineage(acc, o.lin), emptyLineage());
    if (node.TypeName && typeRunsUserCode(this.cat, node.TypeName)) this.sink.opaque = true;
    if (node.A_Const || node.TypeName || node.ParamRef) return emptyLineage();
    if (!this.sink.opaque && this.runsUserCode(node, scope)) this.sink.opaque = true;
    const lin = emptyLineage();
    for (const v of Object.values(node)) if (v && typeof v === 'object') addLineage(lin, this.expr(v, scope));
    return lin;
  }

  private funcCall(fc: Node, scope: Scope): Lineage {
    const names: (string | undefined)[] = fc.funcname.map(str);
    const fname = (names[names.length - 1] ?? '').toLowerCase();
    const schema = names.length > 1 ? names[names.length - 2] : undefined;
    if (fc.agg_filter) addLineage(this.sink.predicate, this.expr(fc.agg_filter, scope));
    if (fc.over) addLineage(this.sink.predicate, this.expr([fc.over.partitionClause, fc.over.orderClause], scope));
    const args = this.expr([fc.args, fc.agg_order], scope);
    // `checked(x)` is a cast to type `checked` when no function of that name exists.
    const userDefined =
      (schema ? !SYSTEM_FUNCTION_SCHEMAS.has(schema) : this.cat.userFunctions.has(fname)) ||
      this.cat.codeTypes.has(fname);
    if (SIDE_CHANNEL_FUNCTIONS.has(fname)) addLineage(this.sink.written, args);
    if (fname === 'set_config') this.sink.setsConfig = true;
    // A set-returning function's row count depends on its arguments: like a predicate, it can be read back.
    if (SET_RETURNING_FUNCTIONS.has(fname)) addLineage(this.sink.predicate, args);
    if (userDefined) this.sink.opaque = true;
    if (OPAQUE_FUNCTIONS.has(fname)) this.sink.untraceable = true;
    if (userDefined || OPAQUE_FUNCTIONS.has(fname)) return { cols: args.cols, unknown: true };
    // count()'s value depends only on how many rows (and non-NULL inputs) there are, not on the values: of a column
    // or `*`. Of an expression it counts the rows the expression makes non-NULL, `count(CASE WHEN ssn LIKE '0%'
    // THEN 1 END)`: a predicate on what the expression reads.
    if (fname === 'count') {
      const only = fc.args?.length === 1 ? fc.args[0] : undefined;
      if (only !== undefined && !only.ColumnRef) addLineage(this.sink.predicate, args);
      return emptyLineage();
    }
    return args;
  }

  /** Operators, `CASE x WHEN`, `(t).f` and casts (TypeCast, JSON/XML RETURNING types) that may run user code. */
  private runsUserCode(node: Node, scope: Scope): boolean {
    if (node.A_Expr) {
      const a = node.A_Expr;
      const type = (n: Node) => this.operandType(n, scope);
      if ((a.kind === 'AEXPR_OP' || a.kind === 'AEXPR_NULLIF') && a.lexpr && a.rexpr)
        return typedOperatorRunsUserCode(this.cat, a.name, [[type(a.lexpr), type(a.rexpr)]], this.catalogFirst);
      if (a.kind === 'AEXPR_IN' && a.rexpr?.List)
        return typedOperatorRunsUserCode(
          this.cat,
          a.name,
          (a.rexpr.List.items ?? []).map((i: Node) => [type(a.lexpr), type(i)] as const),
          this.catalogFirst,
        );
      return operatorRunsUserCode(this.cat, a.name, a.kind, this.catalogFirst);
    }
    // `CASE x WHEN v` compares with the `=` its name resolves to, as a written `x = v` would.
    if (node.CaseExpr?.arg) return operatorRunsUserCode(this.cat, EQUALS, undefined, this.catalogFirst);
    if (node.SortBy) return operatorRunsUserCode(this.cat, node.SortBy.useOp, undefined, this.catalogFirst);
    if (node.A_Indirection)
      return (node.A_Indirection.indirection ?? []).some((i: Node) => this.cat.userFunctions.has(str(i) ?? ''));
    return node.typeName !== undefined && typeRunsUserCode(this.cat, node.typeName);
  }

  /**
   * The type of an operator's operand where it is known without analysis: a catalog column, a literal (a string or
   * NULL is `unknown`), a cast to a pg_catalog keyword type. undefined otherwise.
   */
  private operandType(node: Node, scope: Scope): number | undefined {
    if (node?.ColumnRef) return refType(node.ColumnRef.fields, scope);
    const c = node?.A_Const;
    if (c) {
      if (c.isnull || c.sval) return UNKNOWN_TYPE;
      if (c.ival) return 23;
      if (c.boolval) return 16;
      return undefined; // fval: int8 or numeric by size
    }
    const names: Node[] | undefined = node?.TypeCast?.typeName?.names;
    if (names?.length === 2 && str(names[0]) === 'pg_catalog' && !node.TypeCast.typeName.arrayBounds)
      return CATALOG_TYPE_OIDS[str(names[1]) ?? ''];
    return undefined;
  }

  /** PostgreSQL's name for a target without AS; `?column?` where figureColname cannot tell (a lookup then fails). */
  private exprName(val: Node): string {
    return figureColname(val) ?? '?column?';
  }
}
