/**
 * Per-statement lineage facts for masking: output columns, predicate and write usage of columns, COPY TO
 * sources, and cursor / prepared-statement names (so FETCH and EXECUTE find the lineage of their query).
 */
import { literalString } from '../sql/function-calls.js';
import type { CatalogSnapshot } from './catalog-snapshot.js';
import { emptyLineage, type Lineage, type OutputColumn, unknownLineage } from './lineage.js';
import { resolveRef } from './lineage-scope.js';
import { LineageWalker } from './lineage-walker.js';
import type { SessionPaths } from './search-path.js';
import { parseStatements, type RawStmt } from './sql-parse.js';

export interface MaskAnalysis {
  /** The parse node type, e.g. `SelectStmt`, `FetchStmt`. */
  kind: string;
  /** True when the statement can send a RowDescription. */
  returnsRows: boolean;
  /** Output columns (in order) when returnsRows. */
  outputs: OutputColumn[];
  predicate: Lineage;
  written: Lineage;
  /** COPY ... TO STDOUT / TO file: the lineage of what it copies out. */
  copyOut?: { lin: Lineage; binary: boolean };
  /** User-defined code runs (functions outside pg_catalog, DO, CALL): notices and errors may carry anything. */
  opaque?: boolean;
  /** Reads data the parse tree cannot trace (see LineageSink.untraceable). */
  untraceable?: boolean;
  /** Calls set_config() (see LineageSink.setsConfig). */
  setsConfig?: boolean;
  /** An unqualified relation name had candidates in more than one schema (see LineageSink.ambiguousNames). */
  ambiguousNames?: boolean;
  /** `SET search_path`: the schemas it names, or `unknown` where they are not constants. */
  searchPath?: readonly string[] | 'unknown';
  /**
   * Defines code that later statements can run without naming it as a function (an operator, cast, domain CHECK,
   * trigger, rule, constraint) or a function: the catalog snapshot does not know it until the client's transaction
   * commits and the snapshot is reloaded.
   */
  definesCode?: boolean;
  /** Relations a DDL statement alters (for the masked-DDL check), as [schema or undefined, name]. */
  ddlTargets?: Array<[string | undefined, string]>;
  /** DECLARE name CURSOR / PREPARE name AS: the outputs later FETCH / EXECUTE return. */
  names?: { kind: 'cursor' | 'prepared'; name: string; outputs: OutputColumn[] };
}

/** Cursor and prepared statement outputs the session has seen declared (SQL-level DECLARE / PREPARE). */
export interface NamedOutputs {
  cursor(name: string): OutputColumn[] | undefined;
  prepared(name: string): OutputColumn[] | undefined;
}

/** Statements that define code, whatever their contents. */
const CODE_DEFINITIONS = new Set([
  'CreateFunctionStmt',
  'DefineStmt',
  'CreateDomainStmt',
  'AlterDomainStmt',
  'CreateCastStmt',
  'CreateTrigStmt',
  'CreateEventTrigStmt',
  'RuleStmt',
  'CreatePolicyStmt',
  'AlterPolicyStmt',
  'CreateTransformStmt',
  'CreateOpClassStmt',
  'AlterOperatorStmt',
]);

const UNKNOWN_ROWS: OutputColumn[] = [{ name: '*', lin: unknownLineage(), expands: true }];

type Node = any;

function optionValue(options: Node[] | undefined, name: string): string | undefined {
  for (const o of options ?? []) {
    if (o.DefElem?.defname === name) return o.DefElem.arg?.String?.sval ?? 'true';
  }
  return undefined;
}

function relationNames(node: Node, out: Array<[string | undefined, string]> = []): Array<[string | undefined, string]> {
  if (node === null || typeof node !== 'object') return out;
  if (Array.isArray(node)) {
    for (const n of node) relationNames(n, out);
    return out;
  }
  if (typeof node.relname === 'string') out.push([node.schemaname, node.relname]);
  for (const v of Object.values(node)) if (v && typeof v === 'object') relationNames(v, out);
  return out;
}

/** `session`: what the sidecar knows of the session's search_path (unqualified names and operators resolve by it). */
export function analyzeStatementForMasking(
  raw: RawStmt,
  cat: CatalogSnapshot,
  named: NamedOutputs,
  session?: SessionPaths,
): MaskAnalysis {
  const node = raw.stmt ?? {};
  const kind = Object.keys(node)[0] ?? 'Unknown';
  const s = node[kind];
  const a: MaskAnalysis = { kind, returnsRows: false, outputs: [], predicate: emptyLineage(), written: emptyLineage() };
  const w = new LineageWalker(cat, a, 0, session);
  const rows = (outputs: OutputColumn[]): void => {
    a.returnsRows = true;
    a.outputs = outputs;
  };
  if (CODE_DEFINITIONS.has(kind)) a.definesCode = true;
  else if (kind === 'CreateStmt' || kind === 'AlterTableStmt') {
    // A CHECK, DEFAULT or generated column calling user code, or a column of a domain, runs on later writes.
    const scratch = new LineageWalker(cat, { predicate: emptyLineage(), written: emptyLineage() });
    scratch.expr(kind === 'CreateStmt' ? s.tableElts : s.cmds, scratch.scopeFor([]));
    a.definesCode = scratch.sink.opaque === true;
  }
  switch (kind) {
    case 'SelectStmt': {
      const outs = w.select(s);
      if (!s.intoClause) rows(outs);
      break;
    }
    case 'InsertStmt':
    case 'UpdateStmt':
    case 'DeleteStmt':
    case 'MergeStmt': {
      const outs = w.dml(node);
      if (s.returningClause || s.returningList) rows(outs);
      break;
    }
    case 'ExplainStmt': {
      // The plan text holds expressions and the client's own literals, not column values; the inner
      // statement still counts for predicates (EXPLAIN ANALYZE runs it) and writes.
      const inner = analyzeStatementForMasking({ stmt: s.query }, cat, named, session);
      a.predicate = inner.predicate;
      a.written = inner.written;
      // EXPLAIN ANALYZE runs the statement: its functions and triggers RAISE and notify as they would without it.
      a.opaque = inner.opaque;
      a.untraceable = inner.untraceable;
      a.setsConfig = inner.setsConfig;
      a.ambiguousNames = inner.ambiguousNames;
      rows([{ name: 'QUERY PLAN', lin: emptyLineage() }]);
      break;
    }
    case 'DeclareCursorStmt':
      a.names = { kind: 'cursor', name: s.portalname, outputs: w.statementOutputs(s.query) };
      break;
    case 'PrepareStmt':
      a.names = { kind: 'prepared', name: s.name, outputs: w.statementOutputs(s.query) };
      break;
    case 'ExecuteStmt': {
      const outs = named.prepared(s.name);
      if (!outs) a.untraceable = true;
      rows(outs ?? UNKNOWN_ROWS);
      break;
    }
    case 'FetchStmt': {
      const outs = named.cursor(s.portalname);
      if (!outs) a.untraceable = true;
      if (!s.ismove) rows(outs ?? UNKNOWN_ROWS);
      break;
    }
    case 'CopyStmt': {
      if (s.is_from) break;
      let lin: Lineage;
      if (s.query) {
        lin = w.statementOutputs(s.query).reduce((acc, o) => {
          for (const c of o.lin.cols) acc.cols.add(c);
          acc.unknown ||= o.lin.unknown;
          return acc;
        }, emptyLineage());
      } else {
        const cols: string[] = (s.attlist ?? []).map((n: Node) => n.String?.sval);
        const star = { ResTarget: { val: { ColumnRef: { fields: [{ A_Star: {} }] } } } };
        const scope = w.scopeFor(w.rangeItem({ RangeVar: s.relation }, w.scopeFor([])));
        const outs = cols.length
          ? cols.map((c) => ({ name: c, lin: resolveRef([{ String: { sval: c } }], scope) }))
          : w.targets([star], scope);
        lin = outs.reduce((acc, o) => {
          for (const c of o.lin.cols) acc.cols.add(c);
          acc.unknown ||= o.lin.unknown;
          return acc;
        }, emptyLineage());
      }
      a.copyOut = { lin, binary: optionValue(s.options, 'format')?.toLowerCase() === 'binary' || s.binary === true };
      break;
    }
    case 'CreateTableAsStmt':
      for (const o of w.statementOutputs(s.query)) {
        for (const c of o.lin.cols) a.written.cols.add(c);
        a.written.unknown ||= o.lin.unknown;
      }
      break;
    case 'ViewStmt':
      // The view's columns are resolved through the catalog once it exists; its WHERE/JOIN/ORDER clauses are the
      // creating client's predicates (a view the agent writes must not launder a predicate on a masked column).
      w.statementOutputs(s.query);
      break;
    case 'VariableSetStmt':
      // Each argument is one schema name, as written (an identifier is already folded to lower case by the parser).
      if (String(s.name).toLowerCase() === 'search_path' && s.kind === 'VAR_SET_VALUE') {
        const schemas = ((s.args ?? []) as Node[]).map((arg) => literalString(arg));
        a.searchPath = schemas.every((x) => x !== undefined) ? (schemas as string[]) : 'unknown';
      }
      break;
    case 'VariableShowStmt':
      rows([{ name: s.name, lin: emptyLineage() }]);
      break;
    case 'CallStmt':
      // Procedure OUT parameters (one row) and RAISE output: the body is not analysed here.
      a.opaque = true;
      a.untraceable = true;
      rows(UNKNOWN_ROWS);
      break;
    case 'DoStmt':
      // RAISE output only: a DO block returns no rows. Claiming it did would give the next statement's
      // RowDescription in a multi-statement Query (`DO …; SELECT 2`) this one's unknown lineage, and mask it whole.
      a.opaque = true;
      a.untraceable = true;
      break;
    case 'RenameStmt':
    case 'AlterTableStmt':
    case 'AlterObjectSchemaStmt':
    case 'CreateTrigStmt':
    case 'RuleStmt':
    case 'CreatePolicyStmt':
    case 'AlterPolicyStmt':
      // Renaming or moving a relation or column would take it out of a name-based rule; triggers, rules and
      // generated columns could copy its values elsewhere.
      a.ddlTargets = relationNames(s);
      if (s.renameType === 'OBJECT_SCHEMA' && typeof s.subname === 'string') {
        for (const rels of cat.byName.values())
          for (const r of rels) if (r.schema === s.subname) a.ddlTargets.push([r.schema, r.name]);
      }
      break;
    default:
      break;
  }
  return a;
}

/** Analyses every statement of a Query/Parse text. Throws MaskingError on unparseable SQL. */
export function analyzeForMasking(
  sql: string,
  cat: CatalogSnapshot,
  named: NamedOutputs,
  session?: SessionPaths,
): MaskAnalysis[] {
  // A DECLARE or PREPARE earlier in the same Query is visible to a FETCH or EXECUTE later in it.
  const local = new Map<string, OutputColumn[]>();
  const seen: NamedOutputs = {
    cursor: (n) => local.get(`c:${n}`) ?? named.cursor(n),
    prepared: (n) => local.get(`p:${n}`) ?? named.prepared(n),
  };
  let defined = false;
  return parseStatements(sql).map((raw) => {
    const a = analyzeStatementForMasking(raw, cat, seen, session);
    // `CREATE OPERATOR …; SELECT a =~~= b` in one Query: the snapshot cannot know the operator yet.
    if (defined) a.opaque = true;
    defined ||= a.definesCode === true;
    if (a.names) local.set(`${a.names.kind === 'cursor' ? 'c' : 'p'}:${a.names.name}`, a.names.outputs);
    return a;
  });
}
