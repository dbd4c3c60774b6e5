import { bindMessage, closeMessage, executeMessage, parseMessage, syncMessage } from '../protocol/frontend-messages.js';
import type { Verdict } from './hooks.js';

/**
 * DISCARD ALL is SET SESSION AUTHORIZATION DEFAULT, RESET ALL, DEALLOCATE ALL, CLOSE ALL, UNLISTEN *,
 * pg_advisory_unlock_all() and DISCARD PLANS/TEMP/SEQUENCES (https://www.postgresql.org/docs/current/sql-discard.html):
 * it undoes the session's setup SQL (the policy role's SET ROLE, statement_timeout). search_path and every other
 * startup parameter survive it, since RESET returns to them. So the proxy runs the setup SQL again right behind a
 * DISCARD ALL that succeeded, before anything else of the client's reaches the upstream, and the client sees only
 * the DISCARD ALL's own answer. A restore that fails ends the session rather than let it go on as the login role.
 */

/** Statement kinds (policy/src/sql/statement-kind.ts) a DISCARD ALL is reported under. */
const RESET_KINDS = new Set(['discard']);

/**
 * Whether `sql` may run a DISCARD ALL. With the parser's kind for every statement (a policy's verdict) only a
 * DISCARD can; otherwise the text decides, erring towards yes (the cost is one round trip of waiting). ALL is a
 * keyword, so it is in the text as such: DISCARD PLANS, TEMP and SEQUENCES go on without waiting.
 */
export function mayResetSession(sql: string, verdict: Verdict): boolean {
  if (!/all/i.test(sql)) return false;
  const details = verdict.statements;
  if (details !== undefined && details.length > 0 && details.every((d) => d.kind !== undefined))
    return details.some((d) => RESET_KINDS.has(d.kind!));
  return /discard/i.test(sql);
}

/**
 * Name of the statement and portal a restore runs through: no client names its statements like this, and the DISCARD
 * ALL just before it dropped every named statement and portal anyway.
 */
const RESTORE_NAME = '\u0001pgwarden-restore';

/**
 * The setup SQL as the messages that restore it: one statement per Sync, each in its own transaction, as at login
 * (upstream/setup-sql.ts). Not as simple Queries: a Query replaces the unnamed statement and portal
 * (exec_simple_query), which a DISCARD ALL run through the extended protocol leaves in place (it drops only named
 * statements), so the client's next Bind of the unnamed statement would fail where PostgreSQL's succeeds.
 */
export function restoreMessages(setup: readonly string[]): Buffer[] | undefined {
  if (setup.length === 0) return undefined;
  return setup.map((sql) =>
    Buffer.concat([
      parseMessage(RESTORE_NAME, sql),
      bindMessage(RESTORE_NAME, RESTORE_NAME),
      executeMessage(RESTORE_NAME, 0),
      closeMessage('S', RESTORE_NAME),
      syncMessage(),
    ]),
  );
}

/**
 * The session could not be put back as it was set up after a DISCARD ALL (the restore failed, or a DISCARD ALL ran
 * that the proxy had not held the client for): the session ends with FATAL, as one that cannot be governed.
 */
export class SessionResetError extends Error {
  readonly sqlstate: string;

  constructor(sqlstate: string, message: string) {
    super(message);
    this.name = 'SessionResetError';
    this.sqlstate = sqlstate;
  }
}
