import { textKey } from '../protocol/frontend-messages.js';
import type { StatementDetail, StatementResult } from './hooks.js';

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
 * Of a Query that failed after its first `results.length` statements completed (PostgreSQL runs a multi-statement
 * Query's statements in order, each ending in a CommandComplete, and stops at the first error: postgres.c,
 * exec_simple_query), what those completed ones may have removed; undefined when the proxy cannot tell (no kinds, a
 * procedural statement, or tags that do not follow the statements' kinds). The failed statement and those behind it
 * removed nothing: a DEALLOCATE, CLOSE or DECLARE that fails leaves every name as it was. What the completed ones
 * removed stays removed although the implicit transaction rolls back: prepared statements are not transactional, and
 * a closed portal is dropped at once (a DECLAREd cursor goes with the rollback anyway).
 */
export function removedBy(
  details: readonly StatementDetail[] | undefined,
  results: readonly StatementResult[],
): NamesTouched | undefined {
  const done = results.length;
  if (details === undefined || done >= details.length) return undefined;
  const touched = new NamesTouched();
  for (let i = 0; i < done; i++) {
    const kind = details[i].kind;
    if (kind === undefined || PROCEDURAL_KINDS.has(kind) || !tagFits(kind, results[i].tag)) return undefined;
    if (NAME_KINDS.has(kind)) touched.add(details[i].text);
  }
  return touched;
}

/** Whether a statement of `kind` could have completed with `tag` (CommandComplete tags: cmdtaglist.h). */
function tagFits(kind: string, tag: string | undefined): boolean {
  if (tag === undefined) return false;
  const nameTag = nameKindOfTag(tag);
  return kind === 'cursor'
    ? nameTag === 'cursor' || /^(FETCH|MOVE) /.test(tag)
    : nameTag === (NAME_KINDS.has(kind) ? kind : undefined);
}

function nameKindOfTag(tag: string): string | undefined {
  if (tag === 'DEALLOCATE' || tag === 'DEALLOCATE ALL') return 'deallocate';
  if (tag === 'DECLARE CURSOR' || tag === 'CLOSE CURSOR' || tag === 'CLOSE CURSOR ALL') return 'cursor';
  if (tag.startsWith('DISCARD')) return 'discard';
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
