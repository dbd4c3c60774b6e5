import type { StatementKind } from '../api/access-policy-schema.js';
import { type AnalysisContext, MAX_NESTING } from './analysis-context.js';
import type { RelationAccess } from './analysis-types.js';
import { CATALOG_RELATIONS } from './catalog-relations.js';
import { fieldReference } from './field-references.js';
import { callFunction, callInFieldNotation } from './function-calls.js';
import { IMPLICIT_CODE_NODES, recordImplicitCode } from './operator-uses.js';
import type { Node } from './parser.js';
import { walkStatementNode } from './statement-handlers.js';

/** The CTE names visible where a relation name is read: such a name is the CTE, not a table. */
export interface Scope {
  has(name: string): boolean;
  /** The CommonTableExpr a visible CTE name stands for. */
  cte(name: string): Node | undefined;
  /** The names visible in the body of the CTE `name` stands for (where its own FROM items are read). */
  cteScope(name: string): Scope | undefined;
}
const EMPTY: Scope = { has: () => false, cte: () => undefined, cteScope: () => undefined };

/**
 * The names of one WITH clause whose index is below `visible`, then the enclosing scope. Sibling CTEs share the
 * one index: copying the scope for each sibling made a WITH of n CTEs cost n² (10 000 CTEs, 228 kB of SQL, held
 * the sidecar's only thread for 3 s).
 */
class WithScope implements Scope {
  constructor(
    private readonly outer: Scope,
    private readonly index: ReadonlyMap<string, number>,
    private readonly visible: number,
    private readonly ctes: readonly Node[],
    private readonly recursive: boolean,
  ) {}

  has(name: string): boolean {
    const i = this.index.get(name);
    return (i !== undefined && i < this.visible) || this.outer.has(name);
  }

  cte(name: string): Node | undefined {
    const i = this.index.get(name);
    return i !== undefined && i < this.visible ? this.ctes[i] : this.outer.cte(name);
  }

  cteScope(name: string): Scope | undefined {
    const i = this.index.get(name);
    if (i === undefined || i >= this.visible) return this.outer.cteScope(name);
    // A member's body sees the members before it, or with RECURSIVE all of them (this scope's own view).
    return this.recursive ? this : new WithScope(this.outer, this.index, i, this.ctes, false);
  }
}

/**
 * Node types whose subtrees are only literals and names (PostgreSQL's A_Const, value nodes, column and parameter
 * references): they can hold no relation, function call or statement, so the walker does not descend into them.
 * https://github.com/postgres/postgres/blob/REL_18_STABLE/src/include/nodes/parsenodes.h
 */
const LEAF_NODES: ReadonlySet<string> = new Set([
  'A_Const',
  'String',
  'Integer',
  'Float',
  'Boolean',
  'BitString',
  'ColumnRef',
  'ParamRef',
  'A_Star',
]);

/**
 * Walks any parse-tree fragment and records relations, functions and nested operations into ctx.facts.
 * Wrapped statement nodes (`{DeleteStmt: ...}`) go to their handlers; `withClause` opens a CTE scope so CTE
 * names are not mistaken for relations — but only inside that scope, so a CTE cannot hide a real table.
 */
export function walk(node: unknown, scope: Scope, ctx: AnalysisContext): void {
  if (node === null || typeof node !== 'object') return;
  if (Array.isArray(node)) {
    for (let i = 0; i < node.length; i++) walk(node[i], scope, ctx);
    return;
  }
  walkObject(node as Node, undefined, scope, ctx);
}

/** Walks one object node as `walk` does, except for the field `skip` (which the caller has handled). */
export function walkObject(o: Node, skip: string | undefined, scope: Scope, ctx: AnalysisContext): void {
  if (typeof o.relname === 'string') {
    // Bare RangeVar-shaped target (the trap: DML targets carry no wrapper).
    addRangeVar(o, 'read', scope, ctx);
    return;
  }
  if (o.withClause !== undefined && skip !== 'withClause') walkWithScope(o, skip, scope, ctx);
  else walkFields(o, skip, undefined, scope, ctx);
}

function walkFields(
  o: Node,
  skip: string | undefined,
  skip2: string | undefined,
  scope: Scope,
  ctx: AnalysisContext,
): void {
  for (const key in o) {
    const v = o[key];
    // Scalars (names, literals, enum values, locations) carry nothing to record.
    if (v === null || typeof v !== 'object' || key === skip || key === skip2) continue;
    const first = key.charCodeAt(0);
    if (first >= 65 && first <= 90) {
      // A node-type wrapper `{ TypeName: body }`: PostgreSQL node names start upper case, fields lower case.
      if (key === 'RangeVar') addRangeVar(v as Node, 'read', scope, ctx);
      else if (key === 'FuncCall') callFunction(v as Node, scope, ctx);
      else if (key === 'A_Indirection') callInFieldNotation(v as Node, scope, ctx);
      else if (key === 'ColumnRef') fieldReference(v as Node, ctx);
      else if (key.endsWith('Stmt')) walkStatementNode(key, v as Node, scope, ctx, true);
      else if (IMPLICIT_CODE_NODES.has(key)) {
        recordImplicitCode(key, v as Node, ctx);
        walk(v, scope, ctx);
      } else if (!LEAF_NODES.has(key)) walk(v, scope, ctx);
    } else if ((key === 'larg' || key === 'rarg') && typeof o.op === 'string' && o.op !== 'SETOP_NONE') {
      // A branch of UNION/INTERSECT/EXCEPT is a query level of its own: its FROM items name its columns.
      ctx.queryLevels ??= [];
      const levels = ctx.queryLevels;
      levels.push({ node: v as Node, scope });
      try {
        walk(v, scope, ctx);
      } finally {
        levels.pop();
      }
    } else if (key === 'lockingClause') {
      if (Array.isArray(v) && v.length > 0) operation(ctx, 'lock', true);
    } else walk(v, scope, ctx);
  }
}

function walkWithScope(o: Node, skip: string | undefined, scope: Scope, ctx: AnalysisContext): void {
  const w = o.withClause as { ctes?: Node[]; recursive?: boolean };
  const ctes = (w.ctes ?? []).map((c) => (c as { CommonTableExpr: Node }).CommonTableExpr);
  const index = new Map<string, number>();
  ctes.forEach((c, i) => {
    const name = String(c.ctename);
    if (!index.has(name)) index.set(name, i);
  });
  const all = new WithScope(scope, index, ctes.length, ctes, w.recursive === true);
  ctes.forEach((cte, i) => {
    // A CTE body sees the earlier siblings; WITH RECURSIVE lets it see all of them.
    // https://www.postgresql.org/docs/current/queries-with.html
    walk(cte.ctequery, w.recursive ? all : new WithScope(scope, index, i, ctes, false), ctx);
  });
  // The level this WITH belongs to reads its FROM items where these names are visible.
  const level = ctx.queryLevels?.at(-1);
  if (level !== undefined && level.node === o) level.scope = all;
  walkFields(o, skip, 'withClause', all, ctx);
}

export function addRangeVar(rv: Node, access: RelationAccess, scope: Scope, ctx: AnalysisContext): void {
  const name = String(rv.relname);
  const schema = typeof rv.schemaname === 'string' ? rv.schemaname : undefined;
  if (schema !== undefined) {
    ctx.facts.addRelation(schema, name, access, true);
    return;
  }
  if (access === 'read' && scope.has(name)) return; // a CTE reference, not a table
  addUnqualifiedRelation(name, access, ctx);
}

/**
 * An unqualified name may resolve in pg_catalog (searched first; only system relations, all named pg_*) or in
 * any schema that may be on search_path: record every candidate so a rule has to allow all of them.
 * https://www.postgresql.org/docs/current/ddl-schemas.html#DDL-SCHEMAS-PATH
 */
export function addUnqualifiedRelation(name: string, access: RelationAccess, ctx: AnalysisContext): void {
  if (CATALOG_RELATIONS.has(name) && !ctx.state.catalogExplicit) {
    ctx.facts.addRelation('pg_catalog', name, access, false);
    return;
  }
  if (name.startsWith('pg_')) ctx.facts.addRelation('pg_catalog', name, access, false);
  for (const s of ctx.state.searchPath) ctx.facts.addRelation(s, name, access, false);
}

/** Records an operation the statement performs (only when the SQL executes now, not when it is stored). */
export function operation(ctx: AnalysisContext, kind: StatementKind, writes: boolean): void {
  if (ctx.mode !== 'exec') return;
  ctx.facts.kinds.add(kind);
  if (writes) ctx.facts.writes = true;
}

export function walkIn(
  ctx: AnalysisContext,
  mode: AnalysisContext['mode'],
  fn: (inner: AnalysisContext) => void,
): void {
  if (ctx.depth >= MAX_NESTING) {
    ctx.facts.addDangerous({ category: 'dynamic-sql', detail: 'nesting too deep to analyse' });
    return;
  }
  // Once in a definition, everything below stays a definition.
  fn({ ...ctx, mode: ctx.mode === 'definition' ? 'definition' : mode, depth: ctx.depth + 1 });
}

export { EMPTY as EMPTY_SCOPE };
