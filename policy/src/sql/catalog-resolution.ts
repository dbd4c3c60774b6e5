import type { CatalogSnapshot } from '../masking/catalog-snapshot.js';
import type { DangerousUse, FunctionRef, SqlAnalysis, StatementAnalysis } from './analysis-types.js';
import { catalogColumns, hasColumnAfter } from './catalog-columns.js';
import { type ImpliedCodeCatalog, impliedCalls } from './implied-calls.js';

/**
 * What the decision needs to know of the database: which schemas define a user function of a name, and a relation's
 * columns. The sidecar builds it from the catalog snapshot it loads (pg_proc, pg_attribute).
 */
export interface PolicyCatalog extends ImpliedCodeCatalog {
  /**
   * Schemas outside pg_catalog/information_schema defining a function `name`; `*` among them when the catalog knows
   * the name but not where. Undefined: no such user function.
   */
  functionSchemas(name: string): ReadonlySet<string> | undefined;
  /** The columns of `schema.name` in attnum order, or undefined when the relation is unknown. */
  columns(schema: string, name: string): ReadonlySet<string> | undefined;
}

const ANYWHERE: ReadonlySet<string> = new Set(['*']);
const catalogs = new WeakMap<CatalogSnapshot, PolicyCatalog>();

/** The PolicyCatalog of a masking catalog snapshot (one per snapshot; column sets built on first use). */
export function policyCatalogOf(snap: CatalogSnapshot): PolicyCatalog {
  let c = catalogs.get(snap);
  if (c !== undefined) return c;
  const columns = new Map<string, ReadonlySet<string> | undefined>();
  c = {
    functionSchemas: (name) =>
      snap.userFunctionSchemas.get(name) ?? (snap.userFunctions.has(name) ? ANYWHERE : undefined),
    operatorFunctions: (name) => snap.operatorFunctions.get(name),
    aggregateFunctions: (name) => snap.aggregateFunctions.get(name),
    operatorKnown: (name) => snap.operatorNames === undefined || snap.operatorNames.has(name),
    typeFunctions: (name) => snap.typeFunctions.get(name),
    relationFunctions(schema, name) {
      if (schema !== '*' && name !== '*') return snap.relationFunctions.get(`${schema}.${name}`);
      // A relation the analysis could not name (computed): any relation's triggers may run.
      return snap.relationFunctions.size === 0 ? undefined : [...snap.relationFunctions.values()].flat();
    },
    columns(schema, name) {
      const system = catalogColumns(schema, name);
      if (system !== undefined) return system;
      const key = `${schema}.${name}`;
      if (columns.has(key)) return columns.get(key);
      const rel = snap.byName.get(name)?.find((r) => r.schema === schema);
      // The snapshot loads no columns of system relations: one missing from catalogColumns stays unknown.
      const set = rel && rel.schema !== 'pg_catalog' ? new Set(rel.columns.map((col) => col.name)) : undefined;
      columns.set(key, set);
      return set;
    },
  };
  catalogs.set(snap, c);
  return c;
}

interface Resolution {
  catalog: ImpliedCodeCatalog;
  /** Made by resolveImpliedDanger (dangerous uses only), not resolveWithCatalog. */
  dangerOnly: boolean;
  path: string;
  result: SqlAnalysis;
  /** Some `t.f` was judged a column only because the catalog knows no relation t or no function f. */
  unknownNames: boolean;
}

const resolved = new WeakMap<SqlAnalysis, Resolution>();

/**
 * Whether the last resolveWithCatalog of `analysis` took a `t.f` for a column only because the catalog did not know a
 * name in it (a function f, or the relation t): a function or relation another connection created since the snapshot
 * was loaded would make it a call. The sidecar checks the catalog is current before deciding such a statement.
 */
export function resolvedByUnknownNames(analysis: SqlAnalysis): boolean {
  return resolved.get(analysis)?.unknownNames === true;
}

/**
 * The analysis as the database's catalog resolves it, for `decide`:
 * - a field reference `t.f` (fieldCalls) is a call of `f` when t is a relation the catalog knows without a column f
 *   (whatever functions the catalog knows: one created since it was loaded runs too), or when t is not a known
 *   relation (a CTE, a composite column…) and a user function f exists; else it is a column and dropped;
 * - an unqualified call resolved to pg_catalog also counts as a call of each user function of that name in a
 *   schema that may be on search_path: PostgreSQL picks the best match by argument types over the whole path
 *   (https://www.postgresql.org/docs/current/typeconv-func.html), so `public.lower(varchar)` beats
 *   `pg_catalog.lower(text)` for a varchar argument.
 * - the functions operators, casts and triggers run (implied-calls.ts) count as calls of them, and those that are
 *   dangerous as dangerous uses.
 * `searchPath` is the session's candidates after the analysis (a superset of those during it). Cached per analysis,
 * catalog and path; the same object comes back when nothing changes.
 */
export function resolveWithCatalog(
  analysis: SqlAnalysis,
  catalog: PolicyCatalog,
  searchPath: readonly string[],
  /** A string that changes whenever searchPath does (SessionState.resolutionKey), to save joining it. */
  pathKey: string = searchPath.join('\u0000'),
): SqlAnalysis {
  return cachedResolution(analysis, catalog, searchPath, pathKey, false);
}

/**
 * For a policy no function name can change the decision of (no `functions` list, blockedFunctions or
 * maxRowsAffected): the analysis with only the dangerous operations the functions operators, aggregates, casts and
 * writes run add (implied-calls.ts), for the dangerous categories that apply under every policy. Nothing else of the
 * catalog is read, so a snapshot holding only the implied code will do. resolvedByUnknownNames tells afterwards
 * whether an operator name the catalog did not know decided it. Cached per analysis, catalog and path, as
 * resolveWithCatalog is.
 */
export function resolveImpliedDanger(
  analysis: SqlAnalysis,
  catalog: ImpliedCodeCatalog,
  searchPath: readonly string[],
  pathKey: string = searchPath.join('\u0000'),
): SqlAnalysis {
  return cachedResolution(analysis, catalog, searchPath, pathKey, true);
}

/** A statement with the dangerous uses its implied code adds (resolveImpliedDanger). */
function withImpliedDanger(
  s: StatementAnalysis,
  catalog: ImpliedCodeCatalog,
  searchPath: readonly string[],
  unknown: { names: boolean },
): StatementAnalysis {
  const implied = impliedCalls(s, catalog, searchPath, unknown);
  if (implied === undefined || implied.dangerous.length === 0) return s;
  return { ...s, dangerous: withDangerous(s.dangerous, implied.dangerous) };
}

/**
 * The analysis with each statement resolved (resolveStatement, or only its implied danger), cached per analysis,
 * catalog, path and kind of resolution; the same object comes back when no statement changed.
 */
function cachedResolution(
  analysis: SqlAnalysis,
  catalog: ImpliedCodeCatalog,
  searchPath: readonly string[],
  path: string,
  dangerOnly: boolean,
): SqlAnalysis {
  if (!analysis.ok) return analysis;
  const hit = resolved.get(analysis);
  if (hit !== undefined && hit.catalog === catalog && hit.path === path && hit.dangerOnly === dangerOnly)
    return hit.result;
  let changed = false;
  const unknown = { names: false };
  const statements = analysis.statements.map((s) => {
    const r = dangerOnly
      ? withImpliedDanger(s, catalog, searchPath, unknown)
      : resolveStatement(s, catalog as PolicyCatalog, searchPath, unknown);
    if (r !== s) changed = true;
    return r;
  });
  const result: SqlAnalysis = changed ? { ok: true, statements } : analysis;
  resolved.set(analysis, { catalog, path, result, unknownNames: unknown.names, dangerOnly });
  return result;
}

/** `known` and those of `more` it lacks (by category and detail). */
function withDangerous(known: readonly DangerousUse[], more: readonly DangerousUse[]): DangerousUse[] {
  const seen = new Set(known.map((d) => `${d.category}\u0000${d.detail}`));
  const all = [...known];
  for (const d of more) {
    const k = `${d.category}\u0000${d.detail}`;
    if (seen.has(k)) continue;
    seen.add(k);
    all.push(d);
  }
  return all;
}

function resolveStatement(
  s: StatementAnalysis,
  catalog: PolicyCatalog,
  searchPath: readonly string[],
  unknown: { names: boolean },
): StatementAnalysis {
  const calls: FunctionRef[] = [];
  for (const c of s.fieldCalls ?? []) {
    const known = c.relations?.map((r) => catalog.columns(r.schema, r.name));
    const call = known?.every((cols) => cols !== undefined)
      ? known.some((cols) => !hasColumnAfter(cols, c.name, c.renamed ?? 0))
      : catalog.functionSchemas(c.name) !== undefined;
    if (call) calls.push(...c.functions);
    // A column because f is no function the catalog knows (t being no relation it knows): one created since the
    // snapshot was loaded would run.
    else if (!known?.every((cols) => cols !== undefined)) unknown.names = true;
  }
  const implied = impliedCalls(s, catalog, searchPath, unknown);
  const functions = [...s.functions, ...calls, ...(implied?.functions ?? [])];
  for (const f of [...functions]) {
    if (f.schema !== 'pg_catalog' || f.qualified) continue;
    const schemas = catalog.functionSchemas(f.name);
    if (schemas === undefined) continue;
    const anywhere = schemas.has('*') || searchPath.includes('*');
    for (const p of searchPath)
      if (p !== 'pg_catalog' && (anywhere || schemas.has(p)))
        functions.push({ schema: p, name: f.name, qualified: false });
  }
  if (s.fieldCalls === undefined && implied === undefined && functions.length === s.functions.length) return s;
  const seen = new Set<string>();
  const unique = functions.filter((f) => {
    const k = `${f.schema}\u0000${f.name}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
  const { fieldCalls: _resolved, ...rest } = s;
  const resolvedStatement: StatementAnalysis = { ...rest, functions: unique };
  if (implied !== undefined && implied.dangerous.length > 0)
    resolvedStatement.dangerous = withDangerous(s.dangerous, implied.dangerous);
  return resolvedStatement;
}
