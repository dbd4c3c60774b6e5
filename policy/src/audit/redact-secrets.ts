/**
 * Removes secrets from SQL text before it goes into an audit event: role passwords
 * (CREATE/ALTER ROLE|USER ... [ENCRYPTED] PASSWORD '...', \password-style literals), and `password=` inside
 * libpq connection strings (dblink, postgres_fdw OPTIONS). See
 * https://www.postgresql.org/docs/current/sql-createrole.html and
 * https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING.
 * Text-level on purpose: it also runs on SQL the parser rejected.
 */

const REDACTED = "'[REDACTED]'";

/**
 * PASSWORD followed by an escape (E'' with backslashes), standard or dollar-quoted string literal; this also
 * covers `OPTIONS (password '...')` of user mappings.
 */
const PASSWORD_LITERAL = /\b(PASSWORD\s+)(?:E'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*'|(\$[A-Za-z_0-9]*\$)[\s\S]*?\2)/gi;
/** `password=value` / `password = 'value'` inside a connection string (key=value form). */
const CONNSTRING_PASSWORD = /\b(password\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^\s']+)/gi;
/** postgresql://user:secret@host URIs. */
const URI_PASSWORD = /\b(postgres(?:ql)?:\/\/[^:/@\s']*:)[^@\s']*@/gi;

export function redactSecrets(sql: string): string {
  if (!/password|postgres/i.test(sql)) return sql;
  return sql
    .replace(PASSWORD_LITERAL, (_m, head: string) => `${head}${REDACTED}`)
    .replace(CONNSTRING_PASSWORD, (_m, head: string) => `${head}[REDACTED]`)
    .replace(URI_PASSWORD, (_m, head: string) => `${head}[REDACTED]@`);
}
