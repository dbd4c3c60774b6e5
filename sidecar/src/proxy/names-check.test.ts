import { createHash } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { dataRow } from '../protocol/backend-messages.js';
import { B } from '../protocol/codes.js';
import { errorOf, msg, RawClient, rowOf, types } from '../testing/raw-client.js';
import { type Fixture, ROLE, startFixture } from '../testing/sidecar-fixture.js';
import { allowAllHooks } from './allow-all-hooks.js';
import type { ProxyHooks, StatementRequest, Verdict } from './hooks.js';
import { NAMES_CHECK_NAME, NamesFound } from './names-check.js';
import type { ForgottenNames, PreparedInfo } from './pipeline.js';

// After a DO or CALL the proxy asks PostgreSQL which names are left (names-check.ts). Inside the client's transaction
// block the question runs between a savepoint and its release: when it fails (here: the client's lock_timeout, while
// a superuser holds a lock on pg_cursors), it is rolled back to that savepoint, the client's transaction goes on as
// if nothing had been asked, and what the CALL made the proxy forget stays forgotten (fails closed).

function decide(req: StatementRequest): Verdict {
  const kind = /^\s*CALL\b/i.test(req.sql) ? 'call' : /^\s*DO\b/i.test(req.sql) ? 'do' : 'select';
  return { action: 'allow', statements: [{ text: req.sql, kind }] };
}

const hooks: ProxyHooks = {
  ...allowAllHooks(),
  openSession() {
    return { ...allowAllHooks().openSession({} as never), checkQuery: decide, checkParse: decide };
  },
};

/**
 * A sidecar fixture with the names-check hooks and a superuser connection to the shared database (to take locks and
 * terminate backends), for the enclosing describe block.
 */
function withAdmin(): { readonly fx: Fixture; readonly admin: pg.Client } {
  let fx: Fixture | undefined;
  let admin: pg.Client | undefined;
  beforeAll(async () => {
    fx = await startFixture({ hooks });
    const shared = inject('pg');
    admin = new pg.Client({
      host: shared.host,
      port: shared.port,
      database: shared.database,
      user: ROLE.super.username,
      password: ROLE.super.password,
    });
    await admin.connect();
  });
  afterAll(async () => {
    await admin?.end();
    await fx?.sidecar.close(1000);
  });
  return {
    get fx() {
      if (!fx) throw new Error('withAdmin: the fixture starts in beforeAll');
      return fx;
    },
    get admin() {
      if (!admin) throw new Error('withAdmin: the connection opens in beforeAll');
      return admin;
    },
  };
}

describe('a question of names that fails inside a transaction block', () => {
  const w = withAdmin();

  it("is rolled back to its savepoint: the client's transaction and savepoints are as before, the portals forgotten", async () => {
    const { client } = await RawClient.startup(w.fx.sidecar.port);
    const run = async (...m: Buffer[]) => {
      client.send(...m);
      return client.untilReady();
    };
    const status = (m: { type: number; buf: Buffer }[]) => String.fromCharCode(m[m.length - 1].buf[5]);
    try {
      await run(msg.query('CREATE PROCEDURE pg_temp.nop() LANGUAGE plpgsql AS $$BEGIN END$$'));
      await run(msg.query('BEGIN'));
      await run(msg.query("SET LOCAL lock_timeout = '200ms'"));
      await run(msg.query('CREATE TEMP TABLE kept (x int); INSERT INTO kept VALUES (1)'));
      await run(msg.query('SAVEPOINT mine'));
      await run(msg.parse('', 'SELECT 5 AS five'), msg.bind('p', ''), msg.sync());
      await w.admin.query('BEGIN');
      await w.admin.query('LOCK TABLE pg_catalog.pg_cursors IN ACCESS EXCLUSIVE MODE');
      let called: { type: number; buf: Buffer }[];
      try {
        called = await run(msg.query('CALL pg_temp.nop()'));
        // The proxy's question waits for the lock, then fails; the client's next Query waits for the undo.
        const after = await run(msg.query('SELECT x FROM kept'));
        expect(types(after)).toBe('T D C Z');
        expect(after.filter((m) => m.type === B.DataRow).map(rowOf)).toEqual([['1']]);
        expect(status(after)).toBe('T');
      } finally {
        await w.admin.query('ROLLBACK');
      }
      expect(types(called)).toBe('C Z');
      expect(status(called)).toBe('T');
      // Nothing of the question is left: no statement of the proxy's, and the client's savepoint is the latest.
      const left = await run(msg.query('SELECT name FROM pg_catalog.pg_prepared_statements'));
      expect(left.filter((m) => m.type === B.DataRow)).toEqual([]);
      expect(types(await run(msg.query('ROLLBACK TO SAVEPOINT mine')))).toBe('C Z');
      // The portal PostgreSQL kept stays forgotten: the proxy's 34000 rather than its rows.
      const gone = await run(msg.execute('p', 0), msg.sync());
      expect(types(gone)).toBe('E Z');
      expect(errorOf(gone[0]).get('C')).toBe('34000');
      await run(msg.query('ROLLBACK'));
      // Outside a transaction block the next CALL's question succeeds again.
      await run(msg.parse('s', 'SELECT 6 AS six'), msg.sync());
      expect(types(await run(msg.query('CALL pg_temp.nop()')))).toBe('C Z');
      expect(types(await run(msg.bind('', 's'), msg.execute(''), msg.sync()))).toBe('2 D C Z');
    } finally {
      client.close();
    }
  });
});

describe('DOs refused in a failed transaction', () => {
  const w = withAdmin();

  // Each DO refused unrun (25P02) gives its names back at once; nothing is left to ask PostgreSQL about once the
  // transaction is over. Were each DO's list kept for the question after ROLLBACK, a client looping on DO would grow
  // it without bound, and the question would be asked for nothing. What the backend runs after the ROLLBACK shows
  // it: while a superuser holds a lock on pg_cursors, a question would wait there, in front of the client's Query.
  it('leave nothing to ask after ROLLBACK: the next Query runs at once', async () => {
    const { client } = await RawClient.startup(w.fx.sidecar.port);
    const run = async (...m: Buffer[]) => {
      client.send(...m);
      return client.untilReady();
    };
    const marker = `SELECT 'after rollback ${process.pid}' AS marker`;
    let locked = false;
    try {
      const pid = Number(rowOf((await run(msg.query('SELECT pg_catalog.pg_backend_pid()')))[1])[0]);
      await run(msg.query('BEGIN'));
      // A portal of the client's, which a DO may close: each DO makes the proxy forget it.
      await run(msg.parse('', 'SELECT 5 AS five'), msg.bind('p', ''), msg.sync());
      expect(types(await run(msg.query('SELECT 1/0')))).toBe('E Z');
      for (let i = 0; i < 3; i++) {
        const refused = await run(msg.query('DO $$BEGIN NULL; END$$'));
        expect(types(refused)).toBe('E Z');
        expect(errorOf(refused[0]).get('C')).toBe('25P02');
      }
      // Given back at once: the portal is there until the transaction ends.
      await w.admin.query('BEGIN');
      await w.admin.query('LOCK TABLE pg_catalog.pg_cursors IN ACCESS EXCLUSIVE MODE');
      locked = true;
      expect(types(await run(msg.query('ROLLBACK')))).toBe('C Z');
      client.send(msg.query(marker));
      // Either the client's Query ran (nothing asked) or the proxy's question waits for the lock, ahead of it.
      let seen: { query: string; wait_event_type: string | null; state: string } | undefined;
      for (let i = 0; i < 1000; i++) {
        const r = await w.admin.query(
          'SELECT query, wait_event_type, state FROM pg_catalog.pg_stat_activity WHERE pid = $1',
          [pid],
        );
        seen = r.rows[0];
        if (seen && (seen.wait_event_type === 'Lock' || seen.query === marker)) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(seen?.query).toBe(marker);
      await w.admin.query('ROLLBACK');
      locked = false;
      const got = await client.untilReady();
      expect(types(got)).toBe('T D C Z');
    } finally {
      if (locked) await w.admin.query('ROLLBACK');
      client.close();
    }
  });
});

describe('a question of names whose undo fails too', () => {
  const w = withAdmin();

  // The one way found to make ROLLBACK TO SAVEPOINT fail on a live connection: the savepoint was never made. A DO
  // opens a refcursor under the name of the proxy's own portal (a value PL/pgSQL gives at run time, which no
  // analysis of the text can see; the test knows the name's per-process suffix, a client would have to learn it), so the Bind of the question's SAVEPOINT fails (42P03, cursor already exists), and
  // the undo's ROLLBACK TO finds no savepoint (3B001): the transaction the client was told is open stays failed.
  it('ends the session with FATAL XX000, audited; other sessions go on', async () => {
    const { client } = await RawClient.startup(w.fx.sidecar.port);
    const other = await w.fx.client();
    const run = async (...m: Buffer[]) => {
      client.send(...m);
      return client.untilReady();
    };
    try {
      const pid = rowOf((await run(msg.query('SELECT pg_catalog.pg_backend_pid()')))[1])[0];
      await run(msg.query('BEGIN'));
      // A portal of the client's, which the DO may close: the proxy forgets it, and asks after the DO.
      await run(msg.parse('', 'SELECT 5 AS five'), msg.bind('p', ''), msg.sync());
      const name = NAMES_CHECK_NAME.replace('\u0001', "'||chr(1)||'");
      const opened = await run(msg.query(`DO $$DECLARE c refcursor := '${name}'; BEGIN OPEN c FOR SELECT 1; END$$`));
      expect(types(opened)).toBe('C Z');
      // Held until the question and its undo are answered: then the FATAL, and nothing of this Query runs.
      client.send(msg.query('SELECT 7'));
      const got = await client.until(B.ReadyForQuery);
      expect(types(got)).toBe('E');
      const f = errorOf(got[0]);
      expect([f.get('S'), f.get('C')]).toEqual(['FATAL', 'XX000']);
      expect(f.get('M')).toMatch(/^pgwarden could not undo its own check of prepared statements and portals/);
      await client.closed();
      // The backend is gone with the connection (its transaction rolled back), and the other session is served.
      for (let i = 0; i < 100; i++) {
        const r = await w.admin.query('SELECT count(*)::int AS n FROM pg_catalog.pg_stat_activity WHERE pid = $1', [
          pid,
        ]);
        if (r.rows[0].n === 0) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      const left = await w.admin.query('SELECT count(*)::int AS n FROM pg_catalog.pg_stat_activity WHERE pid = $1', [
        pid,
      ]);
      expect(left.rows).toEqual([{ n: 0 }]);
      expect((await other.query('SELECT 8 AS n')).rows).toEqual([{ n: 8 }]);
      const ends = w.fx.audit.events.filter((e) => e.type === 'session.end');
      expect(ends.map((e) => JSON.stringify(e))).toContainEqual(
        expect.stringContaining('pgwarden could not undo its own check of prepared statements and portals'),
      );
    } finally {
      client.close();
      await other.end();
    }
  });
});

describe("a cursor opened under the proxy's names without their per-process suffix", () => {
  const w = withAdmin();

  // The names a client could read in the proxy's source: a cursor opened under them leaves the question unharmed.
  it('leaves the question, and the session, as they were', async () => {
    const { client } = await RawClient.startup(w.fx.sidecar.port);
    const run = async (...m: Buffer[]) => {
      client.send(...m);
      return client.untilReady();
    };
    try {
      await run(msg.query('BEGIN'));
      await run(msg.parse('', 'SELECT 5 AS five'), msg.bind('p', ''), msg.sync());
      for (const name of ['pgwarden-names', 'pgwarden-names-undo']) {
        const opened = await run(
          msg.query(`DO $$DECLARE c refcursor := chr(1) || '${name}'; BEGIN OPEN c FOR SELECT 1; END$$`),
        );
        expect(types(opened)).toBe('C Z');
      }
      const after = await run(msg.query('SELECT 7 AS seven'));
      expect(types(after)).toBe('T D C Z');
      // The portal the DOs left is the client's again.
      const rows = await run(msg.execute('p', 0), msg.sync());
      expect(types(rows)).toBe('D C Z');
      await run(msg.query('ROLLBACK'));
    } finally {
      client.close();
    }
  });
});

// pg_terminate_backend while the question waits on a lock a superuser holds: PostgreSQL sends FATAL 57P01 and
// closes. That answer is the proxy's question's, yet it must reach the client, as it would without the question.
describe('a backend terminated while the question of names waits', () => {
  const w = withAdmin();

  for (const inBlock of [false, true])
    it(`${inBlock ? 'inside' : 'outside'} a transaction block: the client gets PostgreSQL's FATAL 57P01`, async () => {
      const { client } = await RawClient.startup(w.fx.sidecar.port);
      const run = async (...m: Buffer[]) => {
        client.send(...m);
        return client.untilReady();
      };
      let locked = false;
      const other = await w.fx.client();
      const before = w.fx.audit.events.length;
      try {
        const pid = Number(rowOf((await run(msg.query('SELECT pg_catalog.pg_backend_pid()')))[1])[0]);
        if (inBlock) await run(msg.query('BEGIN'));
        // A statement of the client's, which a DO that runs EXECUTE may remove: the proxy asks after it.
        await run(msg.parse('s', 'SELECT 5 AS five'), msg.sync());
        await w.admin.query('BEGIN');
        await w.admin.query('LOCK TABLE pg_catalog.pg_cursors IN ACCESS EXCLUSIVE MODE');
        locked = true;
        expect(types(await run(msg.query("DO $$BEGIN EXECUTE 'SELECT 1'; END$$")))).toBe('C Z');
        client.send(msg.query('SELECT 7'));
        let waiting = false;
        for (let i = 0; i < 1000 && !waiting; i++) {
          const r = await w.admin.query('SELECT wait_event_type FROM pg_catalog.pg_stat_activity WHERE pid = $1', [
            pid,
          ]);
          waiting = r.rows[0]?.wait_event_type === 'Lock';
          if (!waiting) await new Promise((r) => setTimeout(r, 20));
        }
        expect(waiting).toBe(true);
        await w.admin.query('SELECT pg_catalog.pg_terminate_backend($1)', [pid]);
        const got = await client.until(B.ReadyForQuery);
        expect(types(got)).toBe('E');
        const f = errorOf(got[0]);
        expect([f.get('S'), f.get('C')]).toEqual(['FATAL', '57P01']);
        await client.closed();
        // Recorded as the session's end; and the other session, on its own backend, goes on.
        const ends = () => w.fx.audit.events.slice(before).filter((e) => e.type === 'session.end');
        for (let i = 0; i < 100 && ends().length === 0; i++) await new Promise((r) => setTimeout(r, 20));
        expect(ends().map((e: any) => e.end.error)).toEqual(['upstream ended the session (FATAL 57P01)']);
        expect((await other.query('SELECT 8 AS n')).rows).toEqual([{ n: 8 }]);
      } finally {
        if (locked) await w.admin.query('ROLLBACK');
        client.close();
        await other.end();
      }
    });
});

// A Bind or Execute the client pipelines behind a DO or CALL, before its Sync, waits for the question, asked right
// there in the batch, with no Sync and no savepoint of its own (the batch's implicit transaction allows neither).
// Should the question fail (the client's lock_timeout, while a superuser holds a lock on pg_cursors), PostgreSQL
// skips to the client's Sync: the waiting message fails with PostgreSQL's error, and the session goes on.
describe('a question of names asked inside a batch that fails', () => {
  const w = withAdmin();

  it("fails the message that waited for it with PostgreSQL's error; the rest of the batch is skipped", async () => {
    const { client } = await RawClient.startup(w.fx.sidecar.port);
    const run = async (...m: Buffer[]) => {
      client.send(...m);
      return client.untilReady();
    };
    const status = (m: { type: number; buf: Buffer }[]) => String.fromCharCode(m[m.length - 1].buf[5]);
    let locked = false;
    try {
      await run(msg.query('CREATE PROCEDURE pg_temp.nop() LANGUAGE plpgsql AS $$BEGIN END$$'));
      await run(msg.query("SET lock_timeout = '200ms'"));
      await w.admin.query('BEGIN');
      await w.admin.query('LOCK TABLE pg_catalog.pg_cursors IN ACCESS EXCLUSIVE MODE');
      locked = true;
      const got = await run(
        msg.parse('', 'SELECT 5 AS five'),
        msg.bind('p', ''),
        msg.parse('c', 'CALL pg_temp.nop()'),
        msg.bind('', 'c'),
        msg.execute(''),
        msg.execute('p'),
        msg.execute('p'),
        msg.sync(),
      );
      expect(types(got)).toBe('1 2 1 2 C E Z');
      expect(errorOf(got[5]).get('C')).toBe('55P03');
      expect(status(got)).toBe('I');
      await w.admin.query('ROLLBACK');
      locked = false;
      // Nothing of the question is left behind, and the session goes on.
      const left = await run(msg.query('SELECT name FROM pg_catalog.pg_prepared_statements'));
      expect(types(left)).toBe('T D C Z');
      expect(rowOf(left[1])).toEqual(['c']);
      const again = await run(msg.parse('', 'SELECT 6 AS six'), msg.bind('q', ''), msg.execute('q'), msg.sync());
      expect(types(again)).toBe('1 2 D C Z');
    } finally {
      if (locked) await w.admin.query('ROLLBACK');
      client.close();
    }
  });
});

describe('NamesFound: what comes back of what was forgotten', () => {
  const info = (sql: string): PreparedInfo => ({
    request: { sql, protocol: 'extended' },
    verdict: { action: 'allow' },
  });
  const row = (...cols: (string | null)[]) => dataRow(cols).subarray(5);
  const md5 = (t: string) => createHash('md5').update(t, 'utf8').digest('hex');

  it('statements by name (Parse-made only are listed), portals by name and text, unchecked portals by name', () => {
    const found = new NamesFound();
    found.row(row('S', 'a', null));
    found.row(row('P', 'p1', md5('SELECT 1')));
    found.row(row('P', 'p2', md5('SELECT secret FROM t')));
    found.row(row('P', 'u', md5('anything')));
    found.row(row('X', 'ignored', null));
    found.row(Buffer.alloc(1));
    const f: ForgottenNames = {
      statements: [
        ['a', info('SELECT 1')],
        ['b', info('SELECT 2')],
      ],
      portals: [
        ['p1', info('SELECT 1')],
        ['p2', info('SELECT 2')],
        ['p3', info('SELECT 3')],
      ],
      unchecked: [
        ['u', 7],
        ['v', 8],
      ],
      ran: [],
    };
    const kept = found.kept(f);
    expect(kept.statements.map(([k]) => k)).toEqual(['a']);
    // p2's name is there with another text (PL/pgSQL opened another cursor under it): not the portal that was checked.
    expect(kept.portals.map(([k]) => k)).toEqual(['p1']);
    expect(kept.unchecked).toEqual([['u', 7]]);
  });

  it('names as the proxy keys them: the bytes of a non-ASCII name', () => {
    const found = new NamesFound();
    found.row(row('S', 'é', null));
    expect(found.statements.has(Buffer.from('é', 'utf8').toString('latin1'))).toBe(true);
  });
});
