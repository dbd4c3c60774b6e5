import { PolicyError } from '../errors.js';

type LibPgQuery = typeof import('libpg-query');
let lib: LibPgQuery | undefined;
let loaded: Promise<LibPgQuery> | undefined;
let ready = false;

/**
 * Loads the PostgreSQL parser (WASM) once; every analysis after it is synchronous. Safe to call repeatedly. The
 * module itself is imported here, not at the top: merely importing it costs ~12 MiB of RSS, which a sidecar that
 * runs without a policy (allow-all, audit only) never needs.
 */
export function initSqlParser(): Promise<void> {
  return loadLibPgQuery().then(() => {
    ready = true;
  });
}

/** The libpg-query module, imported and its WASM instantiated once per process (shared with masking lineage). */
export function loadLibPgQuery(): Promise<LibPgQuery> {
  loaded ??= import('libpg-query').then(async (m) => {
    await m.loadModule();
    lib = m;
    return m;
  });
  return loaded;
}

export function isSqlParserReady(): boolean {
  return ready;
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

function assertReady(): void {
  if (!ready) throw new PolicyError('PGW_SQL_PARSER_NOT_LOADED', 'call await initSqlParser() before analysing SQL');
}

export function parseSql(sql: string): ParseOutcome {
  assertReady();
  try {
    const tree = lib!.parseSync(sql) as unknown as { stmts?: RawStmt[] };
    return { ok: true, stmts: tree.stmts ?? [] };
  } catch (e) {
    return { ok: false, error: failure(e) };
  }
}

/** Parses a PL/pgSQL function body (libpg-query wants it wrapped in CREATE FUNCTION). */
export function parsePlpgsqlBody(body: string): { ok: true; tree: unknown } | { ok: false; error: ParseFailure } {
  assertReady();
  // A dollar-quote tag that does not occur in the body, so the body cannot end the quoting early.
  let tag = 'pgw';
  while (body.includes(`$${tag}$`)) tag += 'x';
  const wrapped = `CREATE FUNCTION pgwarden_do() RETURNS void LANGUAGE plpgsql AS $${tag}$${body}$${tag}$`;
  try {
    return { ok: true, tree: lib!.parsePlPgSQLSync(wrapped) };
  } catch (e) {
    return { ok: false, error: failure(e) };
  }
}

/** Parses the PL/pgSQL body of a complete CREATE FUNCTION / CREATE PROCEDURE statement. */
export function parsePlpgsqlFunction(
  createStatement: string,
): { ok: true; tree: unknown } | { ok: false; error: ParseFailure } {
  assertReady();
  try {
    return { ok: true, tree: lib!.parsePlPgSQLSync(createStatement) };
  } catch (e) {
    return { ok: false, error: failure(e) };
  }
}

function failure(e: unknown): ParseFailure {
  const err = e as { message?: string; sqlDetails?: { cursorPosition?: number } };
  const pos = err.sqlDetails?.cursorPosition;
  return { message: err.message ?? String(e), position: typeof pos === 'number' ? pos + 1 : undefined };
}
