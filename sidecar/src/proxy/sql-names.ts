import { textKey } from '../protocol/frontend-messages.js';

/**
 * The SQL statements that remove a prepared statement or portal by name (DEALLOCATE, CLOSE, DISCARD) or may replace
 * a portal (DECLARE), read from their text, and how to tell from a Query's CommandComplete tags which of them ran.
 * https://www.postgresql.org/docs/current/sql-deallocate.html, sql-close.html, sql-declare.html, sql-discard.html
 */

/** Cheap test before the scan below: most statements name none of these. */
export const SQL_NAMES_HINT = /deallocate|declare|close|discard/i;
/**
 * Statement kinds (policy/src/sql/statement-kind.ts) of DEALLOCATE, DECLARE/CLOSE and DISCARD. Not PREPARE: it
 * fails on a name that exists (42P05, protocol and SQL statements share one hash), so it can never replace a
 * statement the proxy knows, and one it creates is unknown to the proxy, as unchecked as a name it never saw.
 */
export const NAME_KINDS = new Set(['deallocate', 'cursor', 'discard']);
/** Procedural code: PL/pgSQL can CLOSE and OPEN a refcursor under a portal's name the text does not show. */
export const PROCEDURAL_KINDS = new Set(['do', 'call']);
/** A keyword that removes a statement or portal by name (or may replace a portal: DECLARE), and what follows it. */
const SQL_NAMES = /\b(deallocate(?:\s+prepare)?|declare|close|discard)\b\s*("(?:[^"]|"")*"|[^\s;(]*)/gi;

/** What DISCARD may be followed by other than ALL (https://www.postgresql.org/docs/current/sql-discard.html). */
const DISCARD_OTHER = /^(plans|temp|temporary|sequences)$/i;

/**
 * Calls `each` for every name `sql` may remove: whether it is a statement's, a portal's or both (DISCARD), and the
 * name as the protocol keys it, or undefined for every one of them (ALL, or a name the proxy cannot read for certain:
 * a comment, a U& identifier).
 */
export function scanSqlNames(
  sql: string,
  each: (statements: boolean, portals: boolean, name: string | undefined) => void,
): void {
  if (!SQL_NAMES_HINT.test(sql)) return;
  SQL_NAMES.lastIndex = 0;
  for (let m = SQL_NAMES.exec(sql); m !== null; m = SQL_NAMES.exec(sql)) {
    const kw = m[1].toUpperCase();
    // DISCARD PLANS, TEMP[ORARY] and SEQUENCES remove no statement or portal; only DISCARD ALL does.
    if (kw === 'DISCARD' && DISCARD_OTHER.test(m[2])) continue;
    each(
      kw.startsWith('DEALLOCATE') || kw === 'DISCARD',
      kw === 'DECLARE' || kw === 'CLOSE' || kw === 'DISCARD',
      identifier(m[2]),
    );
  }
}

/** The names some statements may have removed (scanSqlNames), gathered. */
export class NamesTouched {
  allStatements = false;
  allPortals = false;
  readonly statements = new Set<string>();
  readonly portals = new Set<string>();

  add(sql: string): void {
    scanSqlNames(sql, (statements, portals, name) => {
      if (statements) {
        if (name === undefined) this.allStatements = true;
        else this.statements.add(name);
      }
      if (portals) {
        if (name === undefined) this.allPortals = true;
        else this.portals.add(name);
      }
    });
  }

  statement(name: string): boolean {
    return this.allStatements || this.statements.has(name);
  }

  portal(name: string): boolean {
    return this.allPortals || this.portals.has(name);
  }
}

/**
 * Of a Query that failed after its first `ran.length` statements completed (PostgreSQL runs a multi-statement Query's
 * statements in order, each ending in a CommandComplete, and stops at the first error: postgres.c,
 * exec_simple_query), what those completed ones and the failed one may have removed; undefined when the proxy cannot
 * tell (a kind unknown, or tags that do not follow the statements' kinds). A DEALLOCATE, CLOSE or DECLARE that fails
 * leaves every name as it was, and the statements behind the failed one never ran. Procedural code (DO, CALL) that
 * ran, completed or failed, may have closed any portal (a refcursor's name is a value), removed the statements its
 * text names (PL/pgSQL runs a DEALLOCATE itself) and, with an EXECUTE in its text, any statement (the EXECUTE's text
 * may be computed): those stay removed. What ran stays removed although the implicit transaction rolls back:
 * prepared statements are not transactional, and a closed portal is dropped at once (a DECLAREd cursor goes with the
 * rollback anyway).
 */
export function removedBy(
  statements: readonly { text: string; kind?: string }[],
  ran: readonly (string | undefined)[],
  failedRan = true,
): NamesTouched | undefined {
  const done = ran.length;
  if (done >= statements.length) return undefined;
  const touched = new NamesTouched();
  // `failedRan` false: the failed statement was refused before it started (notStarted), as those behind it.
  for (let i = 0; i < done || (failedRan && i === done); i++) {
    const { kind, text } = statements[i];
    if (kind === undefined || (i < done && !tagFits(kind, ran[i]))) return undefined;
    if (PROCEDURAL_KINDS.has(kind)) {
      // PL/pgSQL runs a DEALLOCATE, CLOSE or DECLARE in its text as well (SPI), and what EXECUTE runs is computed.
      touched.allPortals = true;
      if (/\bexecute\b/i.test(text)) touched.allStatements = true;
      touched.add(text);
    } else if (i < done && NAME_KINDS.has(kind)) touched.add(text);
  }
  return touched;
}

/**
 * The statement kind a statement's first keyword gives, for the kinds the proxy needs (NAME_KINDS, PROCEDURAL_KINDS);
 * `other` for the rest, none of which removes a name or is procedural (sql-statements.ts splits a Query without a
 * policy's parser).
 */
export function kindOfKeyword(first: string): string {
  switch (first) {
    case 'deallocate':
    case 'discard':
    case 'do':
    case 'call':
      return first;
    case 'declare':
    case 'close':
    case 'fetch':
    case 'move':
      return 'cursor';
    default:
      return 'other';
  }
}

/** Whether a statement of `kind` could have completed with `tag` (CommandComplete tags: cmdtaglist.h). */
function tagFits(kind: string, tag: string | undefined): boolean {
  if (tag === undefined) return false;
  return kindOfTag(tag) === (NAME_KINDS.has(kind) || PROCEDURAL_KINDS.has(kind) ? kind : undefined);
}

/** The kind of statement that completes with `tag`, when it is one of NAME_KINDS or PROCEDURAL_KINDS. */
function kindOfTag(tag: string): string | undefined {
  if (tag === 'DEALLOCATE' || tag === 'DEALLOCATE ALL') return 'deallocate';
  if (tag === 'DECLARE CURSOR' || tag === 'CLOSE CURSOR' || tag === 'CLOSE CURSOR ALL') return 'cursor';
  if (/^(FETCH|MOVE) \d+$/.test(tag)) return 'cursor';
  if (tag.startsWith('DISCARD')) return 'discard';
  if (tag === 'DO') return 'do';
  if (tag === 'CALL') return 'call';
  return undefined;
}

/**
 * The name an SQL identifier stands for (quoted: as written; plain: ASCII letters folded to lower case, as
 * PostgreSQL's scanner does), or undefined for ALL and whatever is not plainly an identifier. Names of 63 bytes
 * and more are undefined too: PostgreSQL truncates them to NAMEDATALEN - 1.
 */
function identifier(text: string): string | undefined {
  let name: string;
  if (/^"(?:[^"]|"")*"$/.test(text)) name = text.slice(1, -1).replaceAll('""', '"');
  else if (/^[A-Za-z_\u0080-\uffff][\w$\u0080-\uffff]*$/.test(text) && !/^all$/i.test(text))
    name = text.replace(/[A-Z]+/g, (c) => c.toLowerCase());
  else return undefined;
  // The protocol's names are byte keys (frontend-messages.ts nameKey).
  return name === '' || Buffer.byteLength(name) >= 63 ? undefined : textKey(name);
}

/**
 * Whether an error says its statement was refused before anything of it ran: 25P02 raised by postgres.c itself
 * (exec_simple_query, exec_execute_message, …: "current transaction is aborted") in a failed transaction. The routine
 * field is the server's source, which no RAISE in user code can set.
 */
export function notStarted(fields: ReadonlyMap<string, string>): boolean {
  return fields.get('C') === '25P02' && fields.get('F') === 'postgres.c';
}
