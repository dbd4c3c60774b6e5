import type { OperatorFunction, QualifiedName } from '../masking/catalog-snapshot.js';
import type { DangerousUse, FunctionRef, StatementAnalysis } from './analysis-types.js';
import { dangerousFunction } from './function-catalog.js';

/** What resolveWithCatalog needs to know of operators, casts and triggers (see CatalogSnapshot). */
export interface ImpliedCodeCatalog {
  /** The definitions of operator `name` outside pg_catalog/information_schema; undefined when there are none. */
  operatorFunctions(name: string): readonly OperatorFunction[] | undefined;
  /** The support functions of the aggregates `name` outside pg_catalog/information_schema, with their schemas. */
  aggregateFunctions(name: string): readonly OperatorFunction[] | undefined;
  /** Whether the database defines an operator `name` at all (true when the catalog does not say). */
  operatorKnown(name: string): boolean;
  /** The functions a cast to the type `name` may run (a user cast's function, a domain's CHECK). */
  typeFunctions(name: string): readonly QualifiedName[] | undefined;
  /** The functions a write to `schema.name` runs (its triggers'); `*` for either part: any relation's. */
  relationFunctions(schema: string, name: string): readonly QualifiedName[] | undefined;
}

const SYSTEM = new Set(['pg_catalog', 'information_schema']);

/**
 * The calls a statement makes without naming them, as the catalog tells:
 * - each operator it uses (OperatorRef) runs the function of every definition of that name outside pg_catalog that
 *   the use may resolve to: in the schema `OPERATOR(schema.op)` names, else in any schema that may be on search_path
 *   (PostgreSQL picks by operand types, which the raw tree does not have: https://www.postgresql.org/docs/current/typeconv-oper.html).
 *   pg_catalog's own operators run PostgreSQL's comparison and arithmetic functions and are not looked up;
 * - a cast to a type (casts, and a call of a type's name, which is a cast when no such function exists) runs that
 *   type's cast functions and domain CHECKs;
 * - a call of a user aggregate runs its support functions;
 * - a write to a relation runs its triggers' functions (and those of its CHECKs, defaults, domain columns).
 * Undefined when there are none. `unknown.names` is set when the decision rests on an operator name the catalog does
 * not know (one another connection created since it was loaded: PolicySession then checks the catalog first).
 */
export function impliedCalls(
  s: StatementAnalysis,
  catalog: ImpliedCodeCatalog,
  searchPath: readonly string[],
  unknown: { names: boolean },
): { functions: FunctionRef[]; dangerous: DangerousUse[] } | undefined {
  let out: { functions: FunctionRef[]; dangerous: DangerousUse[] } | undefined;
  const add = (f: QualifiedName, via: string) => {
    out ??= { functions: [], dangerous: [] };
    out.functions.push({ schema: f.schema, name: f.name, qualified: true, via });
    const danger = dangerousFunction(f.name);
    if (danger) out.dangerous.push({ category: danger, detail: `${f.schema}.${f.name}() (${via})` });
  };
  const anywhere = searchPath.includes('*');
  for (const o of s.operators ?? []) {
    if (o.schema !== undefined && SYSTEM.has(o.schema)) continue;
    const defs = catalog.operatorFunctions(o.name);
    if (defs === undefined) {
      // A name PostgreSQL would not find is an error there; one the snapshot does not know may be newer than it.
      if (o.schema !== undefined || !catalog.operatorKnown(o.name)) unknown.names = true;
      continue;
    }
    const via = `run by operator ${o.schema === undefined ? '' : `${o.schema}.`}${o.name}`;
    let found = false;
    for (const d of defs) {
      const reachable = o.schema !== undefined ? d.schema === o.schema : anywhere || searchPath.includes(d.schema);
      if (!reachable) continue;
      found = true;
      add(d.function, via);
    }
    if (!found && o.schema !== undefined) unknown.names = true;
  }
  // A user aggregate runs its support functions; the call names the aggregate only (all its candidate schemas).
  const calls = s.functions.length;
  for (let i = 0; i < calls; i++) {
    const f = s.functions[i];
    if (SYSTEM.has(f.schema)) continue;
    for (const d of catalog.aggregateFunctions(f.name) ?? [])
      if (d.schema === f.schema || f.schema === '*') add(d.function, `run by aggregate ${d.schema}.${f.name}`);
  }
  const castTo = (t: string) => {
    for (const f of catalog.typeFunctions(t) ?? []) add(f, `run by a cast to ${t}`);
  };
  for (const t of s.casts ?? []) castTo(t);
  // `mydomain('x')` is a cast when no function of that name takes the argument (duplicates are dropped by the caller).
  for (const f of s.functions) if (!SYSTEM.has(f.schema) && s.casts?.includes(f.name) !== true) castTo(f.name);
  for (const r of s.relations) {
    if (r.access !== 'write') continue;
    for (const f of catalog.relationFunctions(r.schema, r.name) ?? []) add(f, `run by writing ${r.schema}.${r.name}`);
  }
  return out;
}
