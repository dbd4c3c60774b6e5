import { nameParts } from './function-calls.js';
import { type Node, parseSql } from './parser.js';
import { unwrap } from './statement-kind.js';

/**
 * Whether every constant of a statement is a value compared with, or given to, a column of the one relation it
 * touches: `col = $1`, `col LIKE $1`, `col IN ($1, $2)`, `col BETWEEN $1 AND $2`, `SET col = $1`, the rows of an
 * INSERT's VALUES. Only then do two statements of one shape (one fingerprint: constants replaced) differ in which
 * rows or data they touch, the risk an approver takes with an approval grant (sidecar approval-grants.ts). Anywhere
 * else a constant can decide what the statement does as a whole: `WHERE id = 1 OR 1 = 0` and `… OR 1 = 1` share a
 * shape, as do `WHERE false` and `WHERE true`, `LIMIT 1` and `LIMIT 1000000`, `now() > '2030-01-01'` and
 * `> '2000-01-01'`, `'orders'::regclass` and `'pg_authid'::regclass`.
 *
 * Read off the parse tree of `normalized`, the statement's normalized text (every constant, literal or Bind
 * parameter, as `$n`): the tree is then exactly the shape a grant covers, so every statement that shares it gets the
 * same answer. Fail closed: each `$n` must sit in one of the places listed above; one that sits anywhere else, text
 * that does not parse, or a statement with a second relation (USING, FROM, JOIN, a WITH query, INSERT … SELECT)
 * makes the answer no. A statement with no constant at all is its own shape and may be granted.
 */
export function constantsOnlyAsValues(normalized: string): boolean {
  try {
    const parsed = parseSql(normalized);
    if (!parsed.ok || parsed.stmts.length === 0) return false;
    return parsed.stmts.every((raw) => statementConstantsAreValues(raw.stmt));
  } catch {
    // A tree deeper than the stack, or a parser not loaded: no grant.
    return false;
  }
}

function statementConstantsAreValues(stmt: Node): boolean {
  const params = new Set<unknown>();
  collectParams(stmt, params);
  if (params.size === 0) return true;
  const [type, body] = unwrap(stmt);
  const placed = new Set<unknown>();
  if (!placeConstants(type, body, placed)) return false;
  for (const p of params) if (!placed.has(p)) return false;
  return true;
}

/** Every ParamRef body under `node`. */
function collectParams(node: unknown, out: Set<unknown>): void {
  if (node === null || typeof node !== 'object') return;
  if (Array.isArray(node)) {
    for (const n of node) collectParams(n, out);
    return;
  }
  const o = node as Node;
  if (o.ParamRef !== undefined) out.add(o.ParamRef);
  for (const k in o) collectParams(o[k], out);
}

/**
 * Marks, in `placed`, the constants of one statement that are values of its one relation's columns; false when the
 * statement is not of a kind (or not of a shape) whose constants can be placed at all.
 */
function placeConstants(type: string, s: Node, placed: Set<unknown>): boolean {
  if (s.withClause !== undefined) return false;
  switch (type) {
    case 'DeleteStmt': {
      const ref = relationName(s.relation);
      if (ref === undefined || nonEmpty(s.usingClause)) return false;
      placeInCondition(s.whereClause, ref, placed);
      return true;
    }
    case 'UpdateStmt': {
      const ref = relationName(s.relation);
      if (ref === undefined || nonEmpty(s.fromClause)) return false;
      placeInAssignments(s.targetList, placed);
      placeInCondition(s.whereClause, ref, placed);
      return true;
    }
    case 'InsertStmt': {
      const ref = relationName(s.relation);
      // `excluded` names the proposed row in ON CONFLICT: its columns hold the constants of the VALUES, so comparing
      // one with another constant decides the update for every conflicting row at once.
      if (ref === undefined || ref === 'excluded') return false;
      const values = s.selectStmt === undefined ? undefined : valuesOnly(s.selectStmt as Node);
      if (values === false) return false;
      for (const row of values ?? []) for (const item of listItems(row)) placeValue(item, placed);
      const oc = s.onConflictClause as Node | undefined;
      if (oc?.action === 'ONCONFLICT_UPDATE') {
        placeInAssignments(oc.targetList, placed);
        placeInCondition(oc.whereClause, ref, placed);
      }
      return true;
    }
    case 'SelectStmt': {
      if (s.op !== 'SETOP_NONE' || s.intoClause !== undefined || nonEmpty(s.valuesLists)) return false;
      const from = s.fromClause as Node[] | undefined;
      if (from?.length !== 1) return false;
      const ref = relationName(from[0].RangeVar);
      if (ref === undefined) return false;
      placeInCondition(s.whereClause, ref, placed);
      return true;
    }
    default:
      return false;
  }
}

/**
 * The name a relation's columns are qualified with in the statement (its alias, else its name), or undefined when
 * `rv` is not a plain relation named by identifier.
 */
function relationName(rv: unknown): string | undefined {
  const r = rv as Node | undefined;
  if (!r || typeof r.relname !== 'string') return undefined;
  const alias = (r.alias as Node | undefined)?.aliasname;
  // Column aliases rename the relation's columns: a qualified reference is still to them, but keep it simple.
  if (nonEmpty((r.alias as Node | undefined)?.colnames)) return undefined;
  return typeof alias === 'string' ? alias : r.relname;
}

/** An INSERT's source as its VALUES rows, undefined for DEFAULT VALUES, false for anything else (a SELECT). */
function valuesOnly(select: Node): Node[] | undefined | false {
  const [type, s] = unwrap(select);
  if (type !== 'SelectStmt' || s.op !== 'SETOP_NONE') return false;
  const rows = s.valuesLists as Node[] | undefined;
  if (!nonEmpty(rows)) return false;
  // Only the rows: no ORDER BY, LIMIT, OFFSET, locking or WITH around them (any constant there stays unplaced,
  // but a VALUES that is more than rows is not one this reads).
  for (const k in s)
    if (k !== 'valuesLists' && k !== 'op' && k !== 'limitOption' && (k !== 'all' || s.all !== false)) return false;
  return rows;
}

/** `SET col = <value>` (ON CONFLICT's too): a value given to a column of the target. */
function placeInAssignments(targets: unknown, placed: Set<unknown>): void {
  for (const t of (targets as Node[] | undefined) ?? []) {
    const rt = t.ResTarget as Node | undefined;
    // `SET col[1] = …`, `SET col.field = …` and `SET (a, b) = (…)` are more than a column given a value.
    if (!rt || typeof rt.name !== 'string' || nonEmpty(rt.indirection) || rt.val === undefined) continue;
    placeValue(rt.val as Node, placed);
  }
}

/**
 * The comparisons of a condition joined by AND, OR and NOT; each one comparing a column of the relation with
 * values places them. Nothing else is entered: a constant inside a CASE, a function call, a subquery or a
 * comparison of two constants stays unplaced.
 */
function placeInCondition(cond: unknown, ref: string, placed: Set<unknown>): void {
  const n = cond as Node | undefined;
  if (!n) return;
  const bool = n.BoolExpr as Node | undefined;
  if (bool) {
    for (const a of (bool.args as Node[] | undefined) ?? []) placeInCondition(a, ref, placed);
    return;
  }
  const e = n.A_Expr as Node | undefined;
  if (!e) return;
  const lhsColumn = isColumn(e.lexpr, ref);
  switch (e.kind) {
    case 'AEXPR_OP':
    case 'AEXPR_DISTINCT':
    case 'AEXPR_NOT_DISTINCT': {
      if (!COMPARISONS.has(operatorName(e.name) ?? '')) return;
      // Either side: `$1 < col` chooses rows as `col > $1` does.
      if (lhsColumn) placeValue(e.rexpr as Node, placed);
      else if (isColumn(e.rexpr, ref)) placeValue(e.lexpr as Node, placed);
      return;
    }
    case 'AEXPR_LIKE':
    case 'AEXPR_ILIKE':
      // The pattern is the constant, matched against the column; a column used as the pattern is not placed.
      if (lhsColumn && operatorName(e.name) !== undefined) placeValue(e.rexpr as Node, placed);
      return;
    case 'AEXPR_IN':
    case 'AEXPR_BETWEEN':
    case 'AEXPR_NOT_BETWEEN':
    case 'AEXPR_BETWEEN_SYM':
    case 'AEXPR_NOT_BETWEEN_SYM':
      if (e.kind === 'AEXPR_IN' && !COMPARISONS.has(operatorName(e.name) ?? '')) return;
      if (lhsColumn) for (const v of listItems(e.rexpr as Node)) placeValue(v, placed);
      return;
    default:
      // `= ANY($1)`: one array constant may hold any number of values, all rows' or one's.
      return;
  }
}

const COMPARISONS = new Set(['=', '<>', '<', '>', '<=', '>=', '~~', '!~~', '~~*', '!~~*']);

/** The operator of an A_Expr (`=`, `OPERATOR(pg_catalog.=)`), undefined when another schema's. */
function operatorName(name: unknown): string | undefined {
  const parts = nameParts(name);
  if (parts.length === 1) return parts[0];
  if (parts.length === 2 && parts[0] === 'pg_catalog') return parts[1];
  return undefined;
}

/**
 * A reference to a column of the one relation: `col`, or `<ref>.col`. Never `*`, a subscript or a deeper path;
 * `current_user`, `now()`, `CASE … END` and the like are other node types.
 */
function isColumn(node: unknown, ref: string): boolean {
  const c = (node as Node | undefined)?.ColumnRef as Node | undefined;
  const fields = c?.fields as Node[] | undefined;
  if (!fields?.every((f) => typeof (f.String as Node | undefined)?.sval === 'string')) return false;
  const names = fields.map((f) => (f.String as Node).sval as string);
  if (names.length === 1) return true;
  return names.length === 2 && names[0] === ref;
}

/**
 * Marks `node` placed when it is a constant as a value: `$n`, `-$n`, or either cast to a plain built-in type. A cast
 * to any other type runs that type's input function on the constant (`'pg_authid'::regclass` looks a name up), so
 * it stays unplaced.
 */
function placeValue(node: Node | undefined, placed: Set<unknown>): void {
  const v = constantOf(node);
  if (v !== undefined) placed.add(v);
}

function constantOf(node: Node | undefined, depth = 0): unknown {
  if (!node || depth > 4) return undefined;
  if (node.ParamRef !== undefined) return node.ParamRef;
  const cast = node.TypeCast as Node | undefined;
  if (cast) return plainType(cast.typeName as Node | undefined) ? constantOf(cast.arg as Node, depth + 1) : undefined;
  const e = node.A_Expr as Node | undefined;
  if (e && e.kind === 'AEXPR_OP' && e.lexpr === undefined && operatorName(e.name) === '-')
    return constantOf(e.rexpr as Node, depth + 1);
  return undefined;
}

/** Built-in types whose input function only reads the text into a value (no catalog lookup, no user code). */
const PLAIN_TYPES = new Set([
  'bool',
  'int2',
  'int4',
  'int8',
  'float4',
  'float8',
  'numeric',
  'text',
  'varchar',
  'bpchar',
  'char',
  'uuid',
  'date',
  'time',
  'timetz',
  'timestamp',
  'timestamptz',
  'interval',
  'bytea',
  'json',
  'jsonb',
  'inet',
  'cidr',
]);

/**
 * Whether a cast's type is one of PLAIN_TYPES: bare (pg_catalog is searched first) or in pg_catalog, with no
 * constant in its modifiers (those are part of the shape; a `$n` there would be unplaced anyway).
 */
function plainType(t: Node | undefined): boolean {
  if (!t || t.setof === true || t.pct_type === true) return false;
  const parts = nameParts(t.names);
  const name = parts.length === 1 ? parts[0] : parts.length === 2 && parts[0] === 'pg_catalog' ? parts[1] : undefined;
  return name !== undefined && PLAIN_TYPES.has(name);
}

function listItems(node: Node | undefined): Node[] {
  const items = (node?.List as Node | undefined)?.items;
  return Array.isArray(items) ? (items as Node[]) : [];
}

const nonEmpty = (v: unknown): boolean => Array.isArray(v) && v.length > 0;
