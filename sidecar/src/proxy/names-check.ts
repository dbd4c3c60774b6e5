import { createHash, randomBytes } from 'node:crypto';
import { bindMessage, closeMessage, executeMessage, parseMessage, textKey } from '../protocol/frontend-messages.js';
import type { ForgottenNames } from './pipeline.js';

/**
 * After a DO block or CALL ran, the proxy has forgotten the names it may have removed (relay-state.ts, forget): any
 * portal (PL/pgSQL closes and opens a refcursor under a name given as a value) and, with an EXECUTE in its text, any
 * statement. PostgreSQL itself knows which are left, so the proxy asks it, on the same connection (after the Query or
 * Sync, or within the batch ahead of a message that needs the answer: namesCheckInBatch), and takes back what still
 * exists as it was:
 * - pg_prepared_statements lists the session's named prepared statements, those of SQL PREPARE (`from_sql`) and of
 *   the protocol's Parse alike; not the unnamed one, which no SQL can remove. A DO or CALL cannot make a statement
 *   with `from_sql` false (only a Parse does: postgres.c exec_parse_message, StorePreparedStatement), and the
 *   client's Parses all pass the proxy, so such a name is the very statement the proxy knew.
 * - pg_cursors lists the open portals, every Bind's included, the unnamed one too (only a simple Query's own portal is
 *   hidden: portal->visible, exec_simple_query). PL/pgSQL may have closed a portal and opened another under its name
 *   (not the unnamed one, which it can only move or close: a refcursor '' opens under a name of its own): one comes
 *   back only when its text is still the one its statement was checked for (compared by md5), and it is described
 *   again before its next Execute (client-relay.ts runPortal), so its rows are planned from what it now returns.
 * https://www.postgresql.org/docs/current/view-pg-prepared-statements.html, view-pg-cursors.html
 *
 * The question goes in the client's own transaction state and must leave it as it was: outside a transaction block as
 * a batch of its own (its Sync ends only its own implicit transaction); inside one between a savepoint and its
 * release, so that a failure of its own (a statement_timeout the client set) is rolled back to the savepoint. In a
 * failed transaction any query fails: then nothing is asked, and what was forgotten stays forgotten (fails closed).
 * It uses a statement and portal of the proxy's own name, never the unnamed ones, which the client may still use.
 */

/**
 * Name of the proxy's statement and portal for the question, with a suffix drawn per process: a DO can open a cursor
 * under any name it knows (a refcursor's value), and one opened under this name would make the question fail.
 */
const OWN = randomBytes(6).toString('hex');
export const NAMES_CHECK_NAME = `\u0001pgwarden-names-${OWN}`;
const UNDO_NAME = `\u0001pgwarden-names-undo-${OWN}`;
const SAVEPOINT = '"pgwarden names check"';

export const NAMES_CHECK_SQL =
  "SELECT 'S'::pg_catalog.text, name::pg_catalog.text, NULL::pg_catalog.text FROM pg_catalog.pg_prepared_statements " +
  "WHERE NOT from_sql UNION ALL SELECT 'P', name::pg_catalog.text, pg_catalog.md5(statement) FROM pg_catalog.pg_cursors " +
  'WHERE NOT is_holdable';

/** Runs `sql` through the proxy's own statement and portal, leaving neither behind. */
function run(name: string, sql: string): Buffer[] {
  return [
    parseMessage(name, sql),
    bindMessage(name, name),
    executeMessage(name, 0),
    closeMessage('P', name),
    closeMessage('S', name),
  ];
}

const SYNC = Buffer.from([0x53, 0, 0, 0, 4]);
const FLUSH = Buffer.from([0x48, 0, 0, 0, 4]);

/**
 * The messages that ask, for a session whose last ReadyForQuery said `status` ('I' or 'T'). The statement is closed
 * first, in case an earlier question that failed left it behind.
 */
export function namesCheckMessages(status: 'I' | 'T'): Buffer {
  const parts = [closeMessage('S', NAMES_CHECK_NAME)];
  if (status === 'T') parts.push(...run(NAMES_CHECK_NAME, `SAVEPOINT ${SAVEPOINT}`));
  parts.push(...run(NAMES_CHECK_NAME, NAMES_CHECK_SQL));
  if (status === 'T') parts.push(...run(NAMES_CHECK_NAME, `RELEASE SAVEPOINT ${SAVEPOINT}`));
  parts.push(SYNC);
  return Buffer.concat(parts);
}

/**
 * The question asked inside the client's batch, before its Sync, right ahead of a Bind or Execute that needs the answer
 * (client-relay.ts, afterNames). A Sync of its own would end the batch's implicit transaction, and a savepoint is
 * refused there (25P01, RequireTransactionBlock), so it has neither: a Flush has PostgreSQL send the answers, the last
 * of its NAMES_IN_BATCH_CLOSES CloseCompletes ends them, and an error puts PostgreSQL into its skip to the client's
 * Sync (the client's message then fails with that error, as if it had met it).
 */
export function namesCheckInBatch(): Buffer {
  return Buffer.concat([closeMessage('S', NAMES_CHECK_NAME), ...run(NAMES_CHECK_NAME, NAMES_CHECK_SQL), FLUSH]);
}

export const NAMES_IN_BATCH_CLOSES = 3;

/**
 * Inside a transaction block, the question failed after its savepoint: back to it (ROLLBACK TO is allowed in a failed
 * transaction), then the savepoint and the statement the failure left behind go.
 */
export function namesUndoMessages(): Buffer {
  return Buffer.concat([
    ...run(UNDO_NAME, `ROLLBACK TO SAVEPOINT ${SAVEPOINT}`),
    ...run(UNDO_NAME, `RELEASE SAVEPOINT ${SAVEPOINT}`),
    closeMessage('S', NAMES_CHECK_NAME),
    SYNC,
  ]);
}

/** What PostgreSQL says exists: named statements made by Parse, and named portals with the md5 of their text. */
export class NamesFound {
  readonly statements = new Set<string>();
  readonly portals = new Map<string, string>();

  /** Reads one DataRow body of NAMES_CHECK_SQL (text format). */
  row(body: Buffer): void {
    const cols = textColumns(body);
    if (cols.length !== 3 || cols[1] === null) return;
    // Names as the proxy keys them (frontend-messages.ts): the bytes of the name, PostgreSQL's 63 at most.
    const key = textKey(cols[1]);
    if (key === undefined) return;
    if (cols[0] === 'S') this.statements.add(key);
    else if (cols[0] === 'P' && cols[2] !== null) this.portals.set(key, cols[2]);
  }

  /** Of what `f` holds, what still exists upstream as the proxy knew it: the entries to put back. */
  kept(f: ForgottenNames): ForgottenNames {
    return {
      statements: f.statements.filter(([k]) => this.statements.has(k)),
      portals: f.portals.filter(([k, info]) => this.portals.get(k) === md5(info.request.sql)),
      // Bound to a statement the proxy never checked: it stays refused as such, as long as it exists.
      unchecked: f.unchecked.filter(([k]) => this.portals.has(k)),
      ran: [],
    };
  }
}

function md5(text: string): string {
  return createHash('md5').update(text, 'utf8').digest('hex');
}

/** The columns of a DataRow body in text format (null: SQL NULL). */
function textColumns(body: Buffer): (string | null)[] {
  const out: (string | null)[] = [];
  if (body.length < 2) return out;
  const n = body.readInt16BE(0);
  let at = 2;
  for (let i = 0; i < n && at + 4 <= body.length; i++) {
    const len = body.readInt32BE(at);
    at += 4;
    if (len < 0) out.push(null);
    else {
      out.push(body.toString('utf8', at, at + len));
      at += len;
    }
  }
  return out;
}
