import { initSqlParser, parseSql } from '../sql/parser.js';
import { MaskingError } from './errors.js';

let ready = false;

/** Loads the PostgreSQL parser (WASM) once, the same instance the policy engine uses. Must finish before lineage. */
export function initMaskingParser(): Promise<void> {
  return initSqlParser().then(() => {
    ready = true;
  });
}

export type RawStmt = { stmt: any; stmt_location?: number; stmt_len?: number };

/** Parses SQL into raw statements; throws MaskingError PGW_MASK_PARSE on a syntax error. */
export function parseStatements(sql: string): RawStmt[] {
  if (!ready) throw new MaskingError('PGW_MASK_PARSER_NOT_LOADED', 'initMaskingParser() has not finished');
  const parsed = parseSql(sql);
  if (!parsed.ok) throw new MaskingError('PGW_MASK_PARSE', 'statement could not be parsed', { cause: parsed.error });
  return parsed.stmts as RawStmt[];
}

/** The single statement of a view definition (pg_get_viewdef output), or undefined when it does not parse. */
export function parseViewQuery(sql: string): any {
  try {
    const stmts = parseStatements(sql);
    return stmts.length === 1 ? stmts[0].stmt : undefined;
  } catch {
    return undefined;
  }
}
