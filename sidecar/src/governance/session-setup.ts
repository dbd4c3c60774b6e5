import { parseDuration, parseSearchPathValue } from '@pgwarden/policy';

/** A quoted identifier: PostgreSQL doubles embedded quotes (https://www.postgresql.org/docs/current/sql-syntax-lexical.html#SQL-SYNTAX-IDENTIFIERS). */
export function quoteIdent(name: string): string {
  if (name.includes('\0')) throw new Error('identifier contains NUL');
  return `"${name.replaceAll('"', '""')}"`;
}

/** The search_path every governed session starts with; the analyser's session state starts from the same value. */
export const INITIAL_SEARCH_PATH = ['public'] as const;

/**
 * SQL run upstream after login and before the client's first ReadyForQuery. SET ROLE makes the policy's role the
 * current_user for everything the agent sends (https://www.postgresql.org/docs/current/sql-set-role.html); the
 * decision engine denies every statement that could change it back. statement_timeout makes PostgreSQL itself cancel
 * long statements (the proxy enforces the same limit on its side). search_path is not set here but given at login
 * (pinnedSearchPath): a startup parameter outranks a role's or database's default and is what RESET returns to.
 */
export function sessionSetupSql(spec: { role?: string; guardrails?: { statementTimeout?: string } }): string[] {
  const sql: string[] = [];
  if (spec.role) sql.push(`SET ROLE ${quoteIdent(spec.role)}`);
  const timeout = spec.guardrails?.statementTimeout;
  if (timeout) {
    const ms = parseDuration(timeout);
    if (ms === undefined) throw new Error(`invalid guardrails.statementTimeout "${timeout}"`);
    sql.push(`SET statement_timeout = ${ms}`);
  }
  return sql;
}

/** The pinned path when the client gives none: `"public"`. */
export function defaultSearchPath(): string {
  return INITIAL_SEARCH_PATH.map(quoteIdent).join(', ');
}

/**
 * The search_path a governed session is pinned to: the client's own startup parameter when it sent one (pgjdbc's
 * `currentSchema`, postgres.js's `connection.search_path`), so its unqualified names resolve where it meant them,
 * else `"public"`. Returned as the value given to PostgreSQL at login (so RESET returns to it) and the schemas the
 * analyser starts with; a value the analyser cannot split for certain (a quoted name with a comma) adds `*`.
 */
export function pinnedSearchPath(params: Record<string, string>): { value: string; schemas: string[] } {
  const own = Object.entries(params).find(([k]) => k.toLowerCase() === 'search_path')?.[1];
  if (own === undefined || own.trim() === '') return { value: defaultSearchPath(), schemas: [...INITIAL_SEARCH_PATH] };
  const schemas = parseSearchPathValue(own);
  if (commaInQuotes(own)) schemas.push('*');
  return { value: own, schemas };
}

/** True when a comma sits inside a quoted name (`"a,b"`), which the list split cannot follow. */
function commaInQuotes(value: string): boolean {
  let quoted = false;
  for (const ch of value) {
    if (ch === '"') quoted = !quoted;
    else if (ch === ',' && quoted) return true;
  }
  return false;
}
