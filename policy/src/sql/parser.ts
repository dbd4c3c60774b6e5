import { PolicyError } from '../errors.js';
import { loadPgQuery, type PgQueryBinding, PgQueryError } from './libpg-query-wasm.js';

let pg: PgQueryBinding | undefined;

/**
 * Loads the PostgreSQL parser (WASM) once; every analysis after it is synchronous. Safe to call repeatedly. The
 * policy engine and masking lineage share the one instance.
 */
export function initSqlParser(): Promise<void> {
  return loadPgQuery().then((binding) => {
    pg = binding;
  });
}

export function isSqlParserReady(): boolean {
  return pg !== undefined;
}

export interface ParseFailure {
  message: string;
  /** 1-based character position PostgreSQL reports, when known. */
  position?: number;
}

export type ParseOutcome = { ok: true; stmts: RawStmt[] } | { ok: false; error: ParseFailure };

/** A RawStmt: the node plus its UTF-8 byte span in the source text (len 0 = to the end). */
export interface RawStmt {
  stmt: Node;
  stmt_location?: number;
  stmt_len?: number;
}

/** libpg-query nodes are `{ TypeName: { ...fields } }` objects; the walker treats them generically. */
export type Node = Record<string, unknown>;

function parser(): PgQueryBinding {
  if (pg === undefined) {
    throw new PolicyError('PGW_SQL_PARSER_NOT_LOADED', 'call await initSqlParser() before analysing SQL');
  }
  return pg;
}

export function parseSql(sql: string): ParseOutcome {
  const p = parser();
  // PostgreSQL answers an empty query string with EmptyQueryResponse (JDBC's isValid() sends one); libpg_query's
  // wrapper calls it an error.
  if (sql === '') return { ok: true, stmts: [] };
  try {
    const tree = JSON.parse(p.parseQueryJson(sql)) as { stmts?: RawStmt[] };
    return { ok: true, stmts: tree.stmts ?? [] };
  } catch (e) {
    return { ok: false, error: failure(e) };
  }
}

/**
 * The statement text with every constant (string, number, the body of a DO block) replaced by `$n`, as
 * pg_stat_statements shows queries: for audit trails that must not keep the values agents put in their SQL.
 * Throws PolicyError PGW_SQL_UNPARSEABLE when the text does not parse.
 */
export function normalizeSql(sql: string): string {
  const p = parser();
  if (sql === '') return '';
  try {
    return p.normalizeQuery(sql);
  } catch (e) {
    throw new PolicyError('PGW_SQL_UNPARSEABLE', `cannot normalize: ${failure(e).message}`);
  }
}

/** Parses a PL/pgSQL function body (libpg-query wants it wrapped in CREATE FUNCTION). */
export function parsePlpgsqlBody(body: string): { ok: true; tree: unknown } | { ok: false; error: ParseFailure } {
  // A dollar-quote tag that does not occur in the body, so the body cannot end the quoting early.
  let tag = 'pgw';
  while (body.includes(`$${tag}$`)) tag += 'x';
  const wrapped = `CREATE FUNCTION pgwarden_do() RETURNS void LANGUAGE plpgsql AS $${tag}$${body}$${tag}$`;
  return parsePlpgsqlFunction(wrapped);
}

/** Parses the PL/pgSQL body of a complete CREATE FUNCTION / CREATE PROCEDURE statement. */
export function parsePlpgsqlFunction(
  createStatement: string,
): { ok: true; tree: unknown } | { ok: false; error: ParseFailure } {
  const p = parser();
  try {
    const text = p.parsePlpgsqlText(createStatement);
    // Success is always a JSON object; anything else is libpg_query's error message.
    if (!text.startsWith('{')) return { ok: false, error: { message: text, position: undefined } };
    return { ok: true, tree: JSON.parse(text) };
  } catch (e) {
    return { ok: false, error: failure(e) };
  }
}

function failure(e: unknown): ParseFailure {
  if (e instanceof PgQueryError) {
    // PostgreSQL's "no position" (0) is reported as position 1, as the libpg-query wrapper used before did.
    const pos = e.cursorpos;
    return { message: e.message, position: pos === undefined ? undefined : Math.max(pos, 1) };
  }
  const err = e as { message?: string };
  return { message: err.message ?? String(e), position: undefined };
}
