import type { AnalysisContext } from './analysis-context.js';
import { parsePlpgsqlBody, parsePlpgsqlFunction, parseSql } from './parser.js';
import { walkStatementNode } from './statement-handlers.js';
import { unwrap } from './statement-kind.js';
import { textSlicer } from './statement-text.js';
import { EMPTY_SCOPE, walk, walkIn } from './statement-walker.js';

/**
 * Analyses SQL that arrives as a string inside a statement (a function body, query_to_xml's argument, a
 * PL/pgSQL expression) into the current statement's facts. SQL that does not parse cannot be judged: it is
 * recorded as dynamic SQL, which only an explicit rule can allow.
 */
export function analyzeEmbeddedSql(
  sql: string,
  ctx: AnalysisContext,
  mode: AnalysisContext['mode'],
  what: string,
): void {
  walkIn(ctx, mode, (inner) => {
    const parsed = parseSql(sql);
    if (!parsed.ok) {
      inner.facts.addDangerous({ category: 'dynamic-sql', detail: `${what}: unparseable SQL` });
      return;
    }
    const slice = textSlicer(sql, parsed.stmts.length);
    for (const raw of parsed.stmts) {
      const [type, body] = unwrap(raw.stmt);
      walkStatementNode(type, body, EMPTY_SCOPE, { ...inner, text: slice(raw) });
    }
  });
}

/**
 * PL/pgSQL: every embedded SQL statement and expression is analysed; EXECUTE of a string, FOR ... EXECUTE and
 * OPEN ... FOR EXECUTE are dynamic SQL. https://www.postgresql.org/docs/current/plpgsql-statements.html
 */
export function analyzePlpgsql(
  body: string,
  ctx: AnalysisContext,
  mode: AnalysisContext['mode'],
  what: string,
  createFunctionText?: string,
): void {
  walkIn(ctx, mode, (inner) => {
    // A CREATE FUNCTION is parsed whole, so its return type, parameters and trigger variables are known.
    const parsed = createFunctionText === undefined ? parsePlpgsqlBody(body) : parsePlpgsqlFunction(createFunctionText);
    const funcs = parsed.ok ? (parsed.tree as { plpgsql_funcs?: unknown[] }).plpgsql_funcs : undefined;
    if (!parsed.ok || !funcs || funcs.length !== 1) {
      // Exactly one function body is expected; anything else means the text is not what we think it is.
      inner.facts.addDangerous({ category: 'dynamic-sql', detail: `${what}: PL/pgSQL does not parse` });
      return;
    }
    visitPlpgsql(parsed.tree, inner, what);
  });
}

function visitPlpgsql(node: unknown, ctx: AnalysisContext, what: string): void {
  if (node === null || typeof node !== 'object') return;
  if (Array.isArray(node)) {
    for (const n of node) visitPlpgsql(n, ctx, what);
    return;
  }
  for (const [key, v] of Object.entries(node as Record<string, unknown>)) {
    if (key === 'PLpgSQL_stmt_dynexecute' || key === 'PLpgSQL_stmt_dynfors' || key === 'dynquery') {
      ctx.facts.addDangerous({ category: 'dynamic-sql', detail: `${what}: EXECUTE of a string` });
    }
    if (key === 'PLpgSQL_expr') {
      const e = v as { query?: string; parseMode?: number };
      if (typeof e.query === 'string') analyzeExpression(e.query, e.parseMode ?? 0, ctx, what);
      continue;
    }
    visitPlpgsql(v, ctx, what);
  }
}

/** parseMode follows PostgreSQL's RawParseMode: 0 a statement, 2 an expression, 3–5 an assignment. */
function analyzeExpression(query: string, parseMode: number, ctx: AnalysisContext, what: string): void {
  let sql = query;
  if (parseMode === 2) sql = `SELECT ${query}`;
  else if (parseMode >= 3) {
    const at = assignmentOperator(query);
    if (at === undefined) {
      ctx.facts.addDangerous({ category: 'dynamic-sql', detail: `${what}: assignment does not parse` });
      return;
    }
    // The target's subscripts are expressions PostgreSQL evaluates too (`a[f()] := x`).
    walk(at.target, EMPTY_SCOPE, ctx);
    sql = `SELECT ${query.slice(at.valueStart)}`;
  }
  const parsed = parseSql(sql);
  if (!parsed.ok) {
    ctx.facts.addDangerous({ category: 'dynamic-sql', detail: `${what}: expression does not parse` });
    return;
  }
  const slice = textSlicer(sql, parsed.stmts.length);
  for (const raw of parsed.stmts) {
    const [type, body] = unwrap(raw.stmt);
    const stmtCtx = { ...ctx, text: slice(raw) };
    // An expression (modes 2–5) is wrapped in SELECT only to parse it: it is not a query of its own.
    walkStatementNode(type, body, EMPTY_SCOPE, stmtCtx, parseMode !== 0);
  }
}

/**
 * Where PostgreSQL splits a PL/pgSQL assignment `target[subscripts].field := value` (or `=`): its grammar reads the
 * target as `ColId opt_indirection`, which is exactly an UPDATE's SET target. The first `:=` or `=` before which the
 * text parses as such a target (with ` = NULL` after it, on the same line) is the operator: one inside a string, a
 * comment or brackets leaves the target unterminated, since ` = NULL` then lands inside it. Returns the target's
 * parse tree (its subscripts) and where the value starts.
 */
function assignmentOperator(query: string): { target: unknown; valueStart: number } | undefined {
  const re = /:=|=/g;
  for (let m = re.exec(query); m !== null; m = re.exec(query)) {
    const head = query.slice(0, m.index);
    // plassign_target is also a bare parameter ($1), which no SET target can be.
    if (/^\s*\$\d+\s*$/.test(head)) return { target: undefined, valueStart: m.index + m[0].length };
    const parsed = parseSql(`UPDATE pgwarden_target SET ${head} = NULL`);
    if (!parsed.ok || parsed.stmts.length !== 1) continue;
    const update = parsed.stmts[0].stmt.UpdateStmt as { targetList?: unknown[] } | undefined;
    const target = update?.targetList?.[0] as { ResTarget?: { indirection?: unknown } } | undefined;
    if (!target?.ResTarget || update?.targetList?.length !== 1) continue;
    return { target: target.ResTarget.indirection, valueStart: m.index + m[0].length };
  }
  return undefined;
}
