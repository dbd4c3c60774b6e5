/**
 * What the masking code knows about the database's relations: plain data the sidecar loads from pg_catalog
 * (pg_class, pg_namespace, pg_attribute, pg_get_viewdef, pg_proc) and hands in. RowDescription fields carry a
 * table OID and attribute number (https://www.postgresql.org/docs/current/protocol-message-formats.html,
 * RowDescription); this snapshot turns them into schema.table.column.
 */

export interface CatalogColumn {
  attnum: number;
  name: string;
  typeOid: number;
}

export interface CatalogRelation {
  oid: number;
  schema: string;
  name: string;
  /** pg_class.relkind: r table, p partitioned, v view, m matview, f foreign, ... */
  kind: string;
  columns: CatalogColumn[];
  /** pg_get_viewdef() for views and materialized views. */
  viewSql?: string;
}

export interface CatalogRow {
  oid: number;
  schema: string;
  name: string;
  kind: string;
  attnum: number | null;
  attname: string | null;
  atttypid: number | null;
  viewdef: string | null;
  /** OIDs of the direct parents (pg_inherits: partitions and inheritance children). */
  parents?: number[];
}

export interface CatalogSnapshot {
  byOid: Map<number, CatalogRelation>;
  byName: Map<string, CatalogRelation[]>;
  /** Names of functions defined outside pg_catalog / information_schema (their bodies may read anything). */
  userFunctions: Set<string>;
  /** The schemas defining each of userFunctions, when the loader said (an unqualified call may resolve to any). */
  userFunctionSchemas: Map<string, Set<string>>;
  /** OIDs of relations with user triggers or rules: DML on them runs code whose output is not analysed. */
  triggerRelations: Set<number>;
  /**
   * OIDs of relations whose row-level-security policy expressions run user code: any statement reading or writing
   * them runs it (https://www.postgresql.org/docs/current/ddl-rowsecurity.html).
   */
  readCodeRelations: Set<number>;
  /** Names of operators (outside pg_catalog) whose function a client could have written. */
  userOperators: Set<string>;
  /**
   * For each name in userOperators, the operand types (`left,right` pg_type OIDs) of its user operators and of
   * pg_catalog's operators of that name: an operator use whose operand types are known resolves by them.
   */
  operatorSignatures: Map<string, { user: Set<string>; builtin: Set<string> }>;
  /**
   * For each built-in base type that is not an array (pg_type OID), the types it converts to implicitly (pg_cast,
   * castcontext 'i'): where no operator of a name takes exactly the operand types, these decide which ones can be
   * chosen. A type missing here may convert to more than pg_cast says (arrays, domains, pseudo-types).
   */
  implicitCasts: Map<number, Set<number>>;
  /**
   * Names of types a cast to or from may run user code: domains (their CHECK), both user-defined ends of a cast
   * made WITH FUNCTION, and their array types.
   */
  codeTypes: Set<string>;
  /** The user-defined source types among codeTypes, by name and OID: a value of one can be cast without naming it. */
  castSources: Set<string>;
  castSourceOids: Set<number>;
  /**
   * The policy's view of the same code (sql/catalog-resolution.ts): for each operator name with a definition outside
   * pg_catalog/information_schema, those definitions' schemas and functions (pg_operator.oprcode), whatever language
   * the function is in (`CREATE OPERATOR !! (RIGHTARG = int, FUNCTION = pg_terminate_backend)` runs a built-in).
   */
  operatorFunctions: Map<string, OperatorFunction[]>;
  /**
   * For each aggregate name outside pg_catalog/information_schema, the aggregates' schemas and the support functions
   * a call runs (transition, final, combine, serial, moving-aggregate functions): `CREATE AGGREGATE a(bigint, bigint)
   * (SFUNC = pg_read_file, STYPE = text)` makes `a(0, 100)` a call of pg_read_file.
   */
  aggregateFunctions: Map<string, OperatorFunction[]>;
  /** Every operator name the database defines, pg_catalog's included; undefined when the loader did not say. */
  operatorNames: Set<string> | undefined;
  /**
   * For each type name (pg_type.typname, arrays under their element's name too), the functions a cast to it may run:
   * a user cast's function (pg_cast.castfunc outside pg_catalog) and, for a domain, those its CHECK constraints (and
   * its base domains') call directly or through an operator.
   */
  typeFunctions: Map<string, QualifiedName[]>;
  /**
   * For each relation (`schema.name`), the functions a write to it may run without a call in the text: its triggers'.
   */
  relationFunctions: Map<string, QualifiedName[]>;
  /** Memo of per-view output lineage, filled by the lineage code. */
  viewMemo: Map<number, unknown>;
  /**
   * Every ancestor (partitioned parent, inheritance parent, transitively) of a relation, keyed `schema.table`: a
   * column rule on `public.events` must also cover `SELECT * FROM events_2024_01`, whose RowDescription names the
   * partition, not the parent.
   */
  ancestors: Map<string, Array<{ schema: string; name: string }>>;
}

export interface QualifiedName {
  schema: string;
  name: string;
}

/** A user-defined operator: the schema it is in and the function it runs. */
export interface OperatorFunction {
  schema: string;
  function: QualifiedName;
}

/** What the catalog says about user code that runs without a function call in the SQL text. */
export interface UserCodeEntries {
  operators?: readonly string[];
  /** See CatalogSnapshot.codeTypes; `source` marks a type a cast from runs user code. */
  types?: ReadonlyArray<{ oid: number; name: string; source: boolean }>;
  /** See CatalogSnapshot.readCodeRelations. */
  readRelations?: readonly number[];
  /** See CatalogSnapshot.operatorSignatures: `user` for a user operator, else one of pg_catalog's. */
  operatorSignatures?: ReadonlyArray<{ name: string; left: number; right: number; user: boolean }>;
  /** See CatalogSnapshot.implicitCasts. */
  implicitCasts?: ReadonlyArray<{ source: number; targets: readonly number[] }>;
  /** See CatalogSnapshot.operatorFunctions: one entry per operator outside pg_catalog/information_schema. */
  operatorFunctions?: ReadonlyArray<{ name: string } & OperatorFunction>;
  /** See CatalogSnapshot.aggregateFunctions: one entry per aggregate and support function. */
  aggregateFunctions?: ReadonlyArray<{ name: string } & OperatorFunction>;
  /** See CatalogSnapshot.operatorNames. */
  operatorNames?: readonly string[];
  /** See CatalogSnapshot.typeFunctions. */
  typeFunctions?: ReadonlyArray<{ type: string } & QualifiedName>;
  /** See CatalogSnapshot.relationFunctions; `relation` is `schema.name`. */
  relationFunctions?: ReadonlyArray<{ relation: string } & QualifiedName>;
}

export const SYSTEM_SCHEMAS = new Set(['pg_catalog', 'information_schema', 'pg_toast']);

/**
 * System relations whose contents are samples of user data or other sessions' SQL: planner statistics hold
 * most-common values and histogram bounds of every column (https://www.postgresql.org/docs/current/view-pg-stats.html).
 */
export const LEAKY_SYSTEM_RELATIONS = new Set([
  'pg_stats',
  'pg_stats_ext',
  'pg_stats_ext_exprs',
  'pg_statistic',
  'pg_statistic_ext_data',
  'pg_stat_activity',
  'pg_stat_statements',
  'pg_prepared_statements',
  'pg_cursors',
]);

export function emptyCatalog(): CatalogSnapshot {
  return {
    byOid: new Map(),
    byName: new Map(),
    userFunctions: new Set(),
    userFunctionSchemas: new Map(),
    triggerRelations: new Set(),
    readCodeRelations: new Set(),
    userOperators: new Set(),
    operatorSignatures: new Map(),
    implicitCasts: new Map(),
    codeTypes: new Set(),
    castSources: new Set(),
    castSourceOids: new Set(),
    operatorFunctions: new Map(),
    aggregateFunctions: new Map(),
    operatorNames: undefined,
    typeFunctions: new Map(),
    relationFunctions: new Map(),
    viewMemo: new Map(),
    ancestors: new Map(),
  };
}

/** Builds a snapshot from one row per (relation, column) — relations without columns come with attnum null. */
export function buildCatalogSnapshot(
  rows: readonly CatalogRow[],
  /** Names, or names with their schema (a name alone is a function in an unknown schema). */
  userFunctions: ReadonlyArray<string | { schema: string; name: string }>,
  triggerRelations: readonly number[] = [],
  code: UserCodeEntries = {},
): CatalogSnapshot {
  const snap = emptyCatalog();
  const parents = new Map<number, number[]>();
  for (const r of rows) {
    if (r.parents?.length && !parents.has(r.oid)) parents.set(r.oid, r.parents);
    let rel = snap.byOid.get(r.oid);
    if (!rel) {
      rel = { oid: r.oid, schema: r.schema, name: r.name, kind: r.kind, columns: [] };
      if (r.viewdef) rel.viewSql = r.viewdef;
      snap.byOid.set(r.oid, rel);
      const list = snap.byName.get(r.name) ?? [];
      list.push(rel);
      snap.byName.set(r.name, list);
    }
    if (r.attnum !== null && r.attname !== null) {
      rel.columns.push({ attnum: r.attnum, name: r.attname, typeOid: r.atttypid ?? 0 });
    }
  }
  for (const rel of snap.byOid.values()) rel.columns.sort((a, b) => a.attnum - b.attnum);
  for (const [oid, direct] of parents) {
    const rel = snap.byOid.get(oid);
    if (!rel) continue;
    const seen = new Set<number>([oid]);
    const found: Array<{ schema: string; name: string }> = [];
    const queue = [...direct];
    while (queue.length) {
      const p = queue.shift()!;
      if (seen.has(p)) continue;
      seen.add(p);
      const prel = snap.byOid.get(p);
      if (!prel) continue;
      found.push({ schema: prel.schema, name: prel.name });
      queue.push(...(parents.get(p) ?? []));
    }
    if (found.length) snap.ancestors.set(`${rel.schema}.${rel.name}`, found);
  }
  for (const f of userFunctions) {
    if (typeof f === 'string') {
      snap.userFunctions.add(f);
      continue;
    }
    snap.userFunctions.add(f.name);
    let schemas = snap.userFunctionSchemas.get(f.name);
    if (schemas === undefined) {
      schemas = new Set();
      snap.userFunctionSchemas.set(f.name, schemas);
    }
    schemas.add(f.schema);
  }
  for (const oid of triggerRelations) snap.triggerRelations.add(oid);
  for (const oid of code.readRelations ?? []) snap.readCodeRelations.add(oid);
  for (const o of code.operators ?? []) snap.userOperators.add(o);
  for (const o of code.operatorSignatures ?? []) {
    let sigs = snap.operatorSignatures.get(o.name);
    if (!sigs) {
      sigs = { user: new Set(), builtin: new Set() };
      snap.operatorSignatures.set(o.name, sigs);
    }
    (o.user ? sigs.user : sigs.builtin).add(`${o.left},${o.right}`);
  }
  for (const c of code.implicitCasts ?? []) snap.implicitCasts.set(c.source, new Set(c.targets));
  for (const [into, entries] of [
    [snap.operatorFunctions, code.operatorFunctions ?? []],
    [snap.aggregateFunctions, code.aggregateFunctions ?? []],
  ] as const) {
    for (const o of entries) {
      const list = into.get(o.name) ?? [];
      list.push({ schema: o.schema, function: o.function });
      into.set(o.name, list);
    }
  }
  if (code.operatorNames !== undefined) snap.operatorNames = new Set(code.operatorNames);
  for (const [into, entries] of [
    [snap.typeFunctions, (code.typeFunctions ?? []).map((t) => [t.type, t] as const)],
    [snap.relationFunctions, (code.relationFunctions ?? []).map((r) => [r.relation, r] as const)],
  ] as const) {
    for (const [key, f] of entries) {
      const list = into.get(key) ?? [];
      if (!list.some((x) => x.schema === f.schema && x.name === f.name)) list.push({ schema: f.schema, name: f.name });
      into.set(key, list);
    }
  }
  for (const t of code.types ?? []) {
    snap.codeTypes.add(t.name);
    if (!t.source) continue;
    snap.castSources.add(t.name);
    snap.castSourceOids.add(t.oid);
  }
  return snap;
}

export function isSystemRelation(rel: CatalogRelation): boolean {
  return SYSTEM_SCHEMAS.has(rel.schema);
}
