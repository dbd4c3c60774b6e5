import type { AnalysisContext } from './analysis-context.js';
import { StatementFacts } from './analysis-context.js';
import { analyzeEmbeddedSql, analyzePlpgsql } from './embedded-sql.js';
import {
  addFunctionName,
  callFunction,
  literalString,
  nameParts,
  parseSearchPathValue,
  recordSearchPath,
} from './function-calls.js';
import { dangerousFunction } from './function-catalog.js';
import type { Node } from './parser.js';
import { unsafeSettingValue } from './session-settings.js';
import { buildAnalysis } from './statement-analysis.js';
import { kindOfNode, unwrap } from './statement-kind.js';
import { addRangeVar, EMPTY_SCOPE, operation, type Scope, walk, walkIn, walkObject } from './statement-walker.js';

const QUERY_LEVELS: ReadonlySet<string> = new Set([
  'SelectStmt',
  'InsertStmt',
  'UpdateStmt',
  'DeleteStmt',
  'MergeStmt',
]);

/** Walks every key of `body` except the listed ones. */
function walkRest(body: Node, skip: readonly string[], scope: Scope, ctx: AnalysisContext): void {
  for (const k in body) if (!skip.includes(k)) walk(body[k], scope, ctx);
}

function rangeVars(list: unknown): Node[] {
  return ((list as Node[]) ?? []).map((n) => (n.RangeVar as Node) ?? n);
}

/** A WHERE clause that references no column (`WHERE true`, `WHERE 1=1`) does not restrict rows. */
function restrictsRows(where: unknown): boolean {
  if (where === undefined || where === null) return false;
  const json = JSON.stringify(where);
  return json.includes('"ColumnRef"') || json.includes('"CurrentOfExpr"');
}

/**
 * Records what one statement node does. `nested` is true for a statement inside another (subquery, INSERT's
 * source, CTE body): a nested SELECT adds no `select` operation — its reads show as relations — while nested
 * writes (data-modifying CTEs) count in full.
 */
export function walkStatementNode(type: string, body: Node, scope: Scope, ctx: AnalysisContext, nested = false): void {
  ctx.queryLevels ??= [];
  const levels = ctx.queryLevels;
  // DML bodies too: their target and FROM/USING items are what `t.f` in them names.
  levels.push({ node: QUERY_LEVELS.has(type) ? body : undefined, scope });
  try {
    walkStatementBody(type, body, scope, ctx, nested);
  } finally {
    levels.pop();
  }
}

function walkStatementBody(type: string, body: Node, scope: Scope, ctx: AnalysisContext, nested: boolean): void {
  const kind = kindOfNode(type, body);
  switch (type) {
    case 'InsertStmt':
      operation(ctx, 'insert', true);
      addRangeVar(body.relation as Node, 'write', scope, ctx);
      if ((body.onConflictClause as Node | undefined)?.action === 'ONCONFLICT_UPDATE') operation(ctx, 'update', true);
      walkDml(body, scope, ctx);
      return;
    case 'UpdateStmt':
    case 'DeleteStmt': {
      const op = type === 'UpdateStmt' ? 'update' : 'delete';
      operation(ctx, op, true);
      if (ctx.mode === 'exec' && !restrictsRows(body.whereClause)) ctx.facts.missingWhere.add(op);
      addRangeVar(body.relation as Node, 'write', scope, ctx);
      walkDml(body, scope, ctx);
      return;
    }
    case 'MergeStmt': {
      operation(ctx, 'merge', true);
      addRangeVar(body.relation as Node, 'write', scope, ctx);
      for (const w of (body.mergeWhenClauses as Node[]) ?? []) {
        const t = (w.MergeWhenClause as Node | undefined)?.commandType;
        if (t === 'CMD_UPDATE') operation(ctx, 'update', true);
        else if (t === 'CMD_DELETE') operation(ctx, 'delete', true);
        else if (t === 'CMD_INSERT') operation(ctx, 'insert', true);
      }
      walkDml(body, scope, ctx);
      return;
    }
    case 'TruncateStmt':
      operation(ctx, 'delete', true);
      if (ctx.mode === 'exec') {
        ctx.facts.missingWhere.add('delete');
        ctx.facts.truncates = true;
      }
      for (const rv of rangeVars(body.relations)) addRangeVar(rv, 'write', scope, ctx);
      return;
    case 'LockStmt':
      operation(ctx, 'lock', true);
      for (const rv of rangeVars(body.relations)) addRangeVar(rv, 'lock', scope, ctx);
      return;
    case 'CopyStmt':
      copy(body, scope, ctx);
      return;
    case 'ExplainStmt': {
      // EXPLAIN ANALYZE executes the statement; plain EXPLAIN only plans it.
      // https://www.postgresql.org/docs/current/sql-explain.html
      operation(ctx, 'explain', false);
      const analyze = ((body.options as Node[]) ?? []).some((o) => {
        const d = o.DefElem as Node;
        if (d?.defname !== 'analyze') return false;
        const v = literalBool(d.arg);
        return v !== false;
      });
      walkIn(ctx, analyze ? 'exec' : 'definition', (inner) => walk(body.query, scope, inner));
      return;
    }
    case 'PrepareStmt': {
      operation(ctx, 'prepare', false);
      prepare(body, ctx);
      return;
    }
    case 'ExecuteStmt': {
      // EXECUTE counts as the statement it runs; its own kind shows only when the name is unknown.
      ctx.run.usedPrepared = true;
      const name = String(body.name);
      const variants = ctx.state.preparedVariants(name);
      if (variants === undefined) ctx.facts.unknownPrepared ??= name;
      else for (const v of variants) ctx.facts.merge(v, ctx.mode === 'exec');
      walk(body.params, scope, ctx);
      return;
    }
    case 'DeclareCursorStmt': {
      // FETCH returns what the query reads, so DECLARE counts as running it (kinds, relations, FOR UPDATE), as
      // PREPARE's statement counts at EXECUTE; a rule for `cursor` alone must not let any table be read.
      operation(ctx, 'cursor', false);
      const [qt, q] = unwrap(body.query as Node);
      walkStatementNode(qt, q, scope, ctx);
      return;
    }
    case 'DoStmt':
      operation(ctx, 'do', true);
      doBlock(body, ctx);
      return;
    case 'CreateFunctionStmt':
      operation(ctx, 'ddl', true);
      functionBody(body, ctx);
      // options are walked too: a `SET role = ...` clause is an identity change.
      walkRest(body, ['sql_body', 'funcname'], scope, ctx);
      return;
    case 'CallStmt':
      // CALL's target is a bare FuncCall (no wrapper). https://www.postgresql.org/docs/current/sql-call.html
      operation(ctx, 'call', true);
      if (body.funccall) callFunction(body.funccall as Node, scope, ctx);
      walkRest(body, ['funccall', 'funcexpr'], scope, ctx);
      return;
    case 'CreateTrigStmt':
      operation(ctx, 'ddl', true);
      addRangeVar(body.relation as Node, 'write', scope, ctx);
      walkIn(ctx, 'definition', (inner) => addFunctionName(nameParts(body.funcname), inner));
      walkRest(body, ['relation', 'funcname'], scope, ctx);
      return;
    case 'DefineStmt':
    case 'CreateCastStmt':
      operation(ctx, kind, true);
      supportFunctions(type, body, ctx);
      walk(body, scope, ctx);
      return;
    case 'RuleStmt':
      operation(ctx, 'ddl', true);
      addRangeVar(body.relation as Node, 'write', scope, ctx);
      walkIn(ctx, 'definition', (inner) => walkRest(body, ['relation'], scope, inner));
      return;
    case 'ViewStmt':
      operation(ctx, 'ddl', true);
      addRangeVar(body.view as Node, 'write', scope, ctx);
      walkIn(ctx, 'definition', (inner) => walkRest(body, ['view'], scope, inner));
      return;
    case 'VariableSetStmt':
      operation(ctx, 'set', false);
      variableSet(body, ctx);
      return;
    case 'AlterRoleSetStmt':
    case 'AlterDatabaseSetStmt':
      // The setting applies to later sessions (through pgwarden too): the same values are refused. Its setstmt is
      // a bare VariableSetStmt (no wrapper), which the generic walk would not recognise.
      operation(ctx, kind, true);
      if (body.setstmt) variableSet(body.setstmt as Node, ctx);
      walkRest(body, ['setstmt'], scope, ctx);
      return;
    case 'DiscardStmt':
      operation(ctx, 'discard', false);
      // DISCARD ALL includes SET SESSION AUTHORIZATION DEFAULT (https://www.postgresql.org/docs/current/sql-discard.html).
      // The sidecar restores its role right behind one that a client sends (sidecar/src/proxy/session-reset.ts), not
      // behind one run inside a function or DO block, where PostgreSQL refuses it anyway (25001).
      if (body.target === 'DISCARD_ALL' && (ctx.depth > 0 || ctx.mode !== 'exec'))
        ctx.facts.identity('DISCARD ALL inside a function or DO block (resets session authorization)');
      return;
    case 'AlterSystemStmt':
      operation(ctx, 'utility', true);
      ctx.facts.addDangerous({ category: 'alter-system', detail: 'ALTER SYSTEM' });
      // Allowing ALTER SYSTEM (allowDangerous) must not allow the values no rule can.
      if (body.setstmt) variableSet(body.setstmt as Node, ctx);
      return;
    case 'LoadStmt':
      operation(ctx, 'utility', true);
      ctx.facts.addDangerous({ category: 'server-admin', detail: 'LOAD (shared library)' });
      return;
    case 'SelectStmt':
      if (!nested || kind === 'ddl') operation(ctx, kind, kind === 'ddl');
      if (body.intoClause) addRangeVar((body.intoClause as Node).rel as Node, 'write', scope, ctx);
      walkObject(body, 'intoClause', scope, ctx);
      return;
    case 'CreateTableAsStmt':
      operation(ctx, 'ddl', true);
      addRangeVar((body.into as Node).rel as Node, 'write', scope, ctx);
      walk(body.query, scope, ctx);
      return;
    default:
      operation(ctx, kind, kind !== 'show' && kind !== 'transaction' && kind !== 'cursor' && kind !== 'listen');
      walk(body, scope, ctx);
  }
}

/** The clauses of CREATE OPERATOR and CREATE AGGREGATE that name a function each use of the object runs. */
const SUPPORT_FUNCTIONS: Readonly<Record<string, ReadonlySet<string>>> = {
  OBJECT_OPERATOR: new Set(['function', 'procedure', 'restrict', 'join']),
  OBJECT_AGGREGATE: new Set([
    'sfunc',
    'finalfunc',
    'combinefunc',
    'serialfunc',
    'deserialfunc',
    'msfunc',
    'minvfunc',
    'mfinalfunc',
  ]),
};

/**
 * A dangerous function made an operator's, an aggregate's or a cast's is a dangerous operation already where it is
 * defined: its uses count it only once the catalog snapshot shows the new object, which it cannot while the
 * transaction that created it is open (`BEGIN; CREATE OPERATOR … (FUNCTION = pg_terminate_backend); SELECT 1 ## 2`).
 * https://www.postgresql.org/docs/current/sql-createoperator.html, sql-createaggregate.html, sql-createcast.html
 */
function supportFunctions(type: string, body: Node, ctx: AnalysisContext): void {
  const flag = (parts: string[], what: string) => {
    const danger = dangerousFunction(parts[parts.length - 1] ?? '');
    if (danger) ctx.facts.addDangerous({ category: danger, detail: `${parts.join('.')}() (${what})` });
  };
  if (type === 'CreateCastStmt') {
    const func = body.func as Node | undefined;
    if (func) flag(nameParts(func.objname), 'the function of a cast');
    return;
  }
  const clauses = SUPPORT_FUNCTIONS[String(body.kind)];
  if (clauses === undefined) return;
  const object = nameParts(body.defnames).join('.');
  for (const d of (body.definition as Node[] | undefined) ?? []) {
    const e = d.DefElem as Node | undefined;
    const arg = (e?.arg as Node | undefined)?.TypeName as Node | undefined;
    if (e === undefined || arg === undefined || !clauses.has(String(e.defname))) continue;
    flag(
      nameParts(arg.names),
      `${String(e.defname)} of ${body.kind === 'OBJECT_OPERATOR' ? 'operator' : 'aggregate'} ${object}`,
    );
  }
}

/** Walks the statement as one object (so its withClause and lockingClause are seen) minus its target. */
function walkDml(body: Node, scope: Scope, ctx: AnalysisContext): void {
  walkObject(body, 'relation', scope, ctx);
}

function literalBool(arg: unknown): boolean | undefined {
  if (arg === undefined) return undefined;
  const a = arg as Node;
  const s = (a.String as { sval?: string } | undefined)?.sval ?? literalString(a);
  if (s !== undefined) return !['false', 'off', 'no', '0'].includes(s.toLowerCase());
  const b = a.Boolean as { boolval?: boolean } | undefined;
  if (b) return b.boolval === true;
  const i = (a.Integer as { ival?: number } | undefined)?.ival;
  return i === undefined ? (a.Integer ? false : undefined) : i !== 0;
}

function copy(body: Node, scope: Scope, ctx: AnalysisContext): void {
  const from = body.is_from === true;
  operation(ctx, 'copy', true);
  if (from) operation(ctx, 'insert', true);
  if (body.relation) addRangeVar(body.relation as Node, from ? 'write' : 'read', scope, ctx);
  // https://www.postgresql.org/docs/current/sql-copy.html: PROGRAM runs a shell command, a file name is a server file.
  if (body.is_program) ctx.facts.addDangerous({ category: 'copy-program', detail: 'COPY ... PROGRAM' });
  else if (typeof body.filename === 'string')
    ctx.facts.addDangerous({ category: 'copy-file', detail: 'COPY ... server file' });
  walk(body.query, scope, ctx);
  walk(body.whereClause, scope, ctx);
}

function defElemString(options: unknown, name: string): Node | undefined {
  for (const o of (options as Node[]) ?? []) {
    const d = o.DefElem as Node | undefined;
    if (d?.defname === name) return d.arg as Node;
  }
  return undefined;
}

function strings(arg: Node | undefined): string[] {
  if (arg === undefined) return [];
  if (arg.String) return [String((arg.String as Node).sval ?? '')];
  const items = (arg.List as { items?: Node[] } | undefined)?.items ?? [];
  return items.map((i) => String((i.String as Node | undefined)?.sval ?? ''));
}

function doBlock(body: Node, ctx: AnalysisContext): void {
  const code = strings(defElemString(body.args, 'as'))[0] ?? '';
  const language = (strings(defElemString(body.args, 'language'))[0] ?? 'plpgsql').toLowerCase();
  if (language !== 'plpgsql') {
    ctx.facts.addDangerous({ category: 'dynamic-sql', detail: `DO in language ${language}` });
    return;
  }
  analyzePlpgsql(code, ctx, 'exec', 'DO block');
}

function functionBody(body: Node, ctx: AnalysisContext): void {
  const language = (strings(defElemString(body.options, 'language'))[0] ?? 'sql').toLowerCase();
  if (body.sql_body) {
    walkIn(ctx, 'definition', (inner) => walk(body.sql_body, EMPTY_SCOPE, inner));
    return;
  }
  const src = strings(defElemString(body.options, 'as'))[0] ?? '';
  if (language === 'sql') analyzeEmbeddedSql(src, ctx, 'definition', 'function body');
  else if (language === 'plpgsql') analyzePlpgsql(src, ctx, 'definition', 'function body', ctx.text);
  else ctx.facts.addDangerous({ category: 'dynamic-sql', detail: `function in language ${language}` });
}

function prepare(body: Node, ctx: AnalysisContext): void {
  // The prepared statement is analysed now (with the search_path in effect now, as PostgreSQL resolves it)
  // and judged when EXECUTE runs it. https://www.postgresql.org/docs/current/sql-prepare.html
  const facts = new StatementFacts();
  const inner: AnalysisContext = { ...ctx, facts, mode: 'exec', depth: ctx.depth + 1 };
  const [type, q] = Object.entries(body.query as Node)[0] ?? ['', {}];
  walkStatementNode(type, q as Node, EMPTY_SCOPE, inner);
  const analysis = buildAnalysis(facts, `PREPARE ${String(body.name)}`, kindOfNode(type, q as Node));
  // Keyed by the parse tree (search_path candidates included via the relations), not by display text.
  const key = JSON.stringify([body.query, analysis.relations], (k, v) => (k === 'location' ? undefined : v));
  ctx.state.addPrepared(String(body.name), analysis, key);
  ctx.run.effects.push({ type: 'prepare', name: String(body.name), analysis, key });
}

/** SET / RESET. https://www.postgresql.org/docs/current/sql-set.html — setting names are case-insensitive. */
function variableSet(body: Node, ctx: AnalysisContext): void {
  const name = String(body.name ?? '').toLowerCase();
  if (name === 'role' || name === 'session_authorization') {
    ctx.facts.identity(`${body.kind === 'VAR_RESET' ? 'RESET' : 'SET'} ${name.toUpperCase().replace('_', ' ')}`);
    return;
  }
  const args = (body.args as Node[]) ?? [];
  if (body.kind === 'VAR_SET_VALUE') {
    // PostgreSQL refuses a list for these; a list is not a value pgwarden has checked.
    const value = args.length === 1 ? constantText(args[0]) : undefined;
    const unsafe = unsafeSettingValue(name, value, 'SET');
    if (unsafe) ctx.facts.unsafe(unsafe);
  }
  if (name === 'search_path' && body.kind === 'VAR_SET_VALUE') {
    const values = args.map((a) => literalString(a) ?? '*');
    recordSearchPath(
      values.flatMap((v) => (v === '*' ? ['*'] : parseSearchPathValue(`"${v.replace(/"/g, '""')}"`))),
      ctx,
    );
  }
  // RESET search_path, RESET ALL and `SET search_path TO DEFAULT` return to the path the session started with. The
  // governed sidecar gives the pinned path at login (a startup parameter, in place of any the client sent), so that
  // is the pin, never a role's or database's default; the analysis keeps the pin among its schemas throughout.
}

/** A SET value as PostgreSQL's GUC code sees it: a string or identifier as is, a number as written. */
function constantText(arg: Node): string | undefined {
  const s = literalString(arg);
  if (s !== undefined) return s;
  const c = arg.A_Const as { ival?: { ival?: number }; fval?: { fval?: string } } | undefined;
  if (c?.ival) return String(c.ival.ival ?? 0);
  if (c?.fval) return c.fval.fval;
  return undefined;
}
