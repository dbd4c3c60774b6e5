import type { StatementKind } from '../api/access-policy-schema.js';
import type {
  DangerousUse,
  FieldCall,
  FunctionRef,
  OperatorRef,
  RelationAccess,
  RelationRef,
  StatementAnalysis,
} from './analysis-types.js';
import type { Node } from './parser.js';
import type { SessionState } from './session-state.js';
import type { Scope } from './statement-walker.js';

/**
 * System views and catalogs that show contents of other relations. Planner statistics: most-common values and
 * histogram bounds of every column the role may read, in every schema
 * (https://www.postgresql.org/docs/current/view-pg-stats.html). pg_sequences: every sequence's last value, as
 * `currval`/`pg_sequence_last_value` would read it (https://www.postgresql.org/docs/current/view-pg-sequences.html).
 * Reading one reads any table or sequence, so it also counts as reading the unknown relation `*`, which only
 * `*`-style globs cover.
 */
const CONTENT_RELATIONS: ReadonlySet<string> = new Set([
  'pg_stats',
  'pg_stats_ext',
  'pg_stats_ext_exprs',
  'pg_statistic',
  'pg_statistic_ext_data',
  'pg_sequences',
]);

/** Accumulates what one top-level statement does, including everything nested in it. */
export class StatementFacts {
  readonly kinds = new Set<StatementKind>();
  readonly relations: RelationRef[] = [];
  readonly functions: FunctionRef[] = [];
  readonly dangerous: DangerousUse[] = [];
  readonly fieldCalls: FieldCall[] = [];
  readonly operators: OperatorRef[] = [];
  readonly casts = new Set<string>();
  readonly missingWhere = new Set<'update' | 'delete'>();
  writes = false;
  truncates = false;
  identityChange: string | undefined;
  unsafeSetting: string | undefined;
  unknownPrepared: string | undefined;
  private readonly relKeys = new Set<string>();
  private readonly fnKeys = new Set<string>();
  private readonly dangerKeys = new Set<string>();
  private readonly fieldKeys = new Set<string>();
  private readonly opKeys = new Set<string>();

  addRelation(schema: string, name: string, access: RelationAccess, qualified: boolean): void {
    const key = `${access}\u0000${schema}\u0000${name}`;
    if (this.relKeys.has(key)) return;
    this.relKeys.add(key);
    this.relations.push({ schema, name, access, qualified });
    if (schema === 'pg_catalog' && CONTENT_RELATIONS.has(name)) this.addRelation('*', '*', 'read', false);
  }

  addFunction(schema: string, name: string, qualified: boolean): void {
    const key = `${schema}\u0000${name}`;
    if (this.fnKeys.has(key)) return;
    this.fnKeys.add(key);
    this.functions.push({ schema, name, qualified });
  }

  addFieldCall(call: FieldCall): void {
    const rels = call.relations?.map((r) => `${r.schema}.${r.name}`).join(',') ?? '?';
    const key = `${call.name}\u0000${rels}\u0000${call.renamed ?? 0}`;
    if (this.fieldKeys.has(key)) return;
    this.fieldKeys.add(key);
    this.fieldCalls.push(call);
  }

  addOperator(op: OperatorRef): void {
    const key = op.schema === undefined ? op.name : `${op.schema}\u0000${op.name}`;
    if (this.opKeys.has(key)) return;
    this.opKeys.add(key);
    this.operators.push(op);
  }

  addDangerous(use: DangerousUse): void {
    const key = `${use.category}\u0000${use.detail}`;
    if (this.dangerKeys.has(key)) return;
    this.dangerKeys.add(key);
    this.dangerous.push(use);
  }

  identity(reason: string): void {
    this.identityChange ??= reason;
  }

  unsafe(reason: string): void {
    this.unsafeSetting ??= reason;
  }

  /** Folds in a statement that this one executes (EXECUTE of a prepared statement, SQL inside a function). */
  merge(a: StatementAnalysis, executed: boolean): void {
    if (executed) {
      for (const k of a.kinds) this.kinds.add(k);
      for (const m of a.missingWhere) this.missingWhere.add(m);
      this.writes ||= a.writes;
      this.truncates ||= a.truncates === true;
    }
    for (const r of a.relations) this.addRelation(r.schema, r.name, r.access, r.qualified);
    for (const f of a.functions) this.addFunction(f.schema, f.name, f.qualified);
    for (const d of a.dangerous) this.addDangerous(d);
    for (const c of a.fieldCalls ?? []) this.addFieldCall(c);
    for (const o of a.operators ?? []) this.addOperator(o);
    for (const t of a.casts ?? []) this.casts.add(t);
    if (a.identityChange) this.identity(a.identityChange);
    if (a.unsafeSetting) this.unsafe(a.unsafeSetting);
    if (a.unknownPrepared) this.unknownPrepared ??= a.unknownPrepared;
  }
}

/** A change to session state a statement makes; replayed when an analysis comes from the cache. */
export type SessionEffect =
  | { type: 'search-path'; schemas: string[] }
  | { type: 'prepare'; name: string; analysis: StatementAnalysis; key: string };

export interface AnalysisContext {
  state: SessionState;
  facts: StatementFacts;
  /** 'exec': the SQL runs now; 'definition': it is stored (view, rule, function body, plain EXPLAIN, PREPARE). */
  mode: 'exec' | 'definition';
  depth: number;
  /**
   * The statements being walked, innermost last: the body of a SELECT (or of one branch of a set operation), INSERT,
   * UPDATE, DELETE or MERGE, or undefined for other statements (whose FROM items field notation does not look into).
   */
  queryLevels?: QueryLevel[];
  /** Text of the statement being walked (CREATE FUNCTION bodies are re-parsed from it). */
  text: string;
  /** Shared by every nested context of one analyzeSql call. */
  run: {
    effects: SessionEffect[];
    /** Set when the result depends on prepared statements (then it is not cacheable by text). */
    usedPrepared: boolean;
  };
}

/**
 * One query level of the walk: its statement body (undefined for statements without FROM items), and the CTE names
 * visible where its FROM items are read, its own WITH included (a qualified name found at an outer level is resolved
 * there, not where the reference sits).
 */
export interface QueryLevel {
  node: Node | undefined;
  scope: Scope;
}

export const MAX_NESTING = 6;

export function applyEffect(state: SessionState, e: SessionEffect): void {
  if (e.type === 'search-path') state.addSearchPath(e.schemas);
  else state.addPrepared(e.name, e.analysis, e.key);
}
