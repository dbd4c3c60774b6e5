import { parseDuration } from '@pgwarden/policy';

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
 * decision engine denies every statement that could change it back. search_path is pinned so that unqualified
 * names resolve upstream exactly as the analyser resolves them (a role or database default search_path, or a
 * schema named like the role via "$user", would otherwise make them differ). statement_timeout makes PostgreSQL
 * itself cancel long statements (the proxy enforces the same limit on its side).
 */
export function sessionSetupSql(spec: { role?: string; guardrails?: { statementTimeout?: string } }): string[] {
  const sql: string[] = [];
  if (spec.role) sql.push(`SET ROLE ${quoteIdent(spec.role)}`);
  sql.push(`SET search_path TO ${INITIAL_SEARCH_PATH.map(quoteIdent).join(', ')}`);
  const timeout = spec.guardrails?.statementTimeout;
  if (timeout) {
    const ms = parseDuration(timeout);
    if (ms === undefined) throw new Error(`invalid guardrails.statementTimeout "${timeout}"`);
    sql.push(`SET statement_timeout = ${ms}`);
  }
  return sql;
}
