import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { dataRow } from '../protocol/backend-messages.js';
import { B } from '../protocol/codes.js';
import { errorOf, msg, RawClient, rowOf, typed, types } from '../testing/raw-client.js';
import { type Fixture, startFixture } from '../testing/sidecar-fixture.js';
import { allowAllHooks } from './allow-all-hooks.js';
import type { ProxyHooks, StatementRequest, Verdict } from './hooks.js';

/**
 * The proxy's record of which verdict each prepared statement and portal carries must follow what PostgreSQL did,
 * not what the client sent: messages skipped after an error, a Bind PostgreSQL rejects, and the SQL statements that
 * share these names (PREPARE, DEALLOCATE, DECLARE, CLOSE) must never leave a name with another statement's verdict.
 * Here a statement that reads `secret` is masked (every column '****'); everything else is allowed as is.
 */
function decide(req: StatementRequest): Verdict {
  // A policy's verdicts name each statement's kind (the parser's); `note` and `DO` stand for such statements here.
  if (req.sql.startsWith('DO')) return { action: 'allow', rule: 'plain', statements: [{ text: req.sql, kind: 'do' }] };
  // One PREPARE or DEALLOCATE, as a policy's parser would report it (the test marks them with a trailing `-- one`).
  const one = /^(PREPARE|DEALLOCATE)\b.*-- one$/.exec(req.sql);
  if (one) return { action: 'allow', rule: 'plain', statements: [{ text: req.sql, kind: one[1].toLowerCase() }] };
  if (req.sql.includes('note'))
    return { action: 'allow', rule: 'plain', statements: [{ text: req.sql, kind: 'select' }] };
  return req.sql.includes('secret') ? { action: 'allow', rule: 'mask' } : { action: 'allow', rule: 'plain' };
}

const hooks: ProxyHooks = {
  ...allowAllHooks(),
  openSession() {
    return {
      ...allowAllHooks().openSession({} as never),
      checkQuery: decide,
      checkParse: decide,
      planRows: (fields, verdict) =>
        verdict.action === 'allow' && verdict.rule === 'mask'
          ? () => dataRow(fields.map(() => '****')).subarray(5)
          : undefined,
    } as ReturnType<ProxyHooks['openSession']>;
  },
};

describe('statement and portal names follow what PostgreSQL applied', () => {
  let fx: Fixture;
  let c: RawClient;
  const run = async (...m: Buffer[]) => {
    c.send(...m);
    return c.untilReady();
  };
  const rows = (m: { type: number; buf: Buffer }[]) => m.filter((x) => x.type === B.DataRow).map((x) => rowOf(x));

  beforeAll(async () => {
    fx = await startFixture({ hooks });
    const setup = await RawClient.startup(fx.sidecar.port);
    await (async () => {
      setup.client.send(
        msg.query(
          "DROP TABLE IF EXISTS ns_t; CREATE TABLE ns_t (id int, secret text); INSERT INTO ns_t VALUES (1, 'SSN-1')",
        ),
      );
      await setup.client.untilReady();
      setup.client.close();
    })();
  });
  beforeEach(async () => {
    c?.close();
    c = (await RawClient.startup(fx.sidecar.port)).client;
  });
  afterAll(async () => {
    c.close();
    await fx.sidecar.close(500);
  });

  it('a Close of a statement skipped after an error leaves the statement usable', async () => {
    await run(msg.parse('a', 'SELECT 1 AS x'), msg.sync());
    const failed = await run(
      msg.parse('', 'SELECT 1/0'),
      msg.bind('', ''),
      msg.execute('', 0),
      msg.close('S', 'a'),
      msg.sync(),
    );
    expect(errorOf(failed.find((m) => m.type === B.ErrorResponse)!).get('C')).toBe('22012');
    const m = await run(msg.bind('', 'a'), msg.execute('', 0), msg.sync());
    expect(types(m)).toBe('2 D C Z');
    expect(rows(m)).toEqual([['1']]);
  });

  it('a Close of a portal skipped after an error leaves the portal usable', async () => {
    await run(msg.query('BEGIN'));
    await run(msg.parse('', 'SELECT g FROM generate_series(1, 3) g'), msg.bind('cur', ''), msg.sync());
    expect(rows(await run(msg.execute('cur', 1), msg.sync()))).toEqual([['1']]);
    await run(msg.query('SAVEPOINT s'));
    await run(msg.parse('', 'SELECT 1/0'), msg.bind('', ''), msg.execute('', 0), msg.close('P', 'cur'), msg.sync());
    await run(msg.query('ROLLBACK TO s'));
    const m = await run(msg.execute('cur', 1), msg.sync());
    expect(types(m)).toBe('D s Z');
    expect(rows(m)).toEqual([['2']]);
    await run(msg.query('ROLLBACK'));
  });

  it('a Parse skipped after an error does not redefine the statement', async () => {
    await run(msg.parse('g', 'SELECT upper(secret) AS u FROM ns_t'), msg.sync());
    await run(
      msg.parse('', 'SELECT 1/0'),
      msg.bind('', ''),
      msg.execute('', 0),
      msg.parse('g', "SELECT 'x'::text AS u"),
      msg.sync(),
    );
    const m = await run(msg.bind('p', 'g'), msg.describe('P', 'p'), msg.execute('p', 0), msg.sync());
    expect(rows(m)).toEqual([['****']]);
  });

  it('a Describe skipped after an error still gets the portal described before its rows', async () => {
    await run(msg.query('BEGIN'));
    await run(msg.parse('', 'SELECT secret FROM ns_t'), msg.bind('q', ''), msg.sync());
    await run(msg.query('SAVEPOINT s'));
    await run(msg.parse('', 'SELECT 1/0'), msg.bind('', ''), msg.execute('', 0), msg.describe('P', 'q'), msg.sync());
    await run(msg.query('ROLLBACK TO s'));
    expect(rows(await run(msg.execute('q', 0), msg.sync()))).toEqual([['****']]);
    await run(msg.query('ROLLBACK'));
  });

  it('a Bind that PostgreSQL rejects (duplicate portal) leaves the portal bound as before', async () => {
    await run(msg.query('BEGIN'));
    await run(
      msg.parse('g', 'SELECT upper(secret) AS u FROM ns_t'),
      msg.parse('h', "SELECT 'harmless'::text AS u"),
      msg.bind('p', 'g'),
      msg.sync(),
    );
    await run(msg.query('SAVEPOINT s'));
    const dup = await run(msg.bind('p', 'h'), msg.sync());
    expect(errorOf(dup[0]).get('C')).toBe('42P03');
    await run(msg.query('ROLLBACK TO s'));
    expect(rows(await run(msg.execute('p', 0), msg.sync()))).toEqual([['****']]);
    await run(msg.query('ROLLBACK'));
  });

  it('SQL DEALLOCATE and PREPARE of a protocol statement name: its old verdict is gone', async () => {
    await run(msg.parse('S', 'SELECT 1 AS x'), msg.sync());
    await run(msg.query('DEALLOCATE "S"'));
    await run(msg.query('PREPARE "S" AS DELETE FROM ns_t'));
    const m = await run(msg.bind('', 'S'), msg.execute('', 0), msg.sync());
    expect(errorOf(m.find((x) => x.type === B.ErrorResponse)!).get('C')).toBe('42501');
    // Pipelined behind the PREPARE, before its answer came: refused as well.
    await run(msg.parse('T', 'SELECT 1 AS x'), msg.sync());
    c.send(
      msg.query('DEALLOCATE "T"; PREPARE "T" AS DELETE FROM ns_t'),
      msg.bind('', 'T'),
      msg.execute('', 0),
      msg.sync(),
    );
    const p = await c.untilReady(2);
    expect(errorOf(p.find((x) => x.type === B.ErrorResponse)!).get('C')).toBe('42501');
    const left = await run(msg.query('SELECT count(*) FROM ns_t'));
    expect(rows(left)).toEqual([['1']]);
  });

  it('a statement whose kind cannot touch a name keeps them all, whatever its literals say', async () => {
    await run(msg.parse('K', 'SELECT 1 AS x'), msg.sync());
    // Kind select (from the verdict): the words in the literal are data.
    await run(msg.query("SELECT 'prepare K; deallocate all; close all' AS note"));
    const kept = await run(msg.bind('', 'K'), msg.execute('', 0), msg.sync());
    expect(rows(kept)).toEqual([['1']]);
    // Without kinds (hooks that do not parse) the proxy cannot tell, and forgets: refused, never misapplied.
    await run(msg.query("SELECT 'deallocate all' AS x"));
    const m = await run(msg.bind('', 'K'), msg.execute('', 0), msg.sync());
    expect(errorOf(m.find((x) => x.type === B.ErrorResponse)!).get('C')).toBe('42501');
  });

  it('names that share their first 63 bytes are one statement, as in PostgreSQL', async () => {
    const p = 'y'.repeat(63);
    await run(msg.parse(`${p}a`, 'SELECT 1 AS x'), msg.sync());
    // PostgreSQL closes `p` (both names are it) and stores the masked statement under it.
    await run(msg.close('S', `${p}b`), msg.sync());
    await run(msg.parse(`${p}b`, 'SELECT secret FROM ns_t'), msg.sync());
    const m = await run(msg.bind('', `${p}a`), msg.describe('P', ''), msg.execute('', 0), msg.sync());
    expect(
      types(m),
      m
        .filter((x) => x.type === B.ErrorResponse)
        .map((x) => errorOf(x).get('M'))
        .join(),
    ).toBe('2 T D C Z');
    expect(rows(m)).toEqual([['****']]);
  });

  it('a DO block that reopens a refcursor under a bound portal name: the portal is forgotten', async () => {
    // Reviewer: the portal bound to an unmasked statement was replaced by PL/pgSQL with one reading `secret`.
    await run(msg.query('BEGIN'));
    await run(msg.parse('s1', 'SELECT id::text FROM ns_t'), msg.bind('p1', 's1'), msg.sync());
    await run(msg.query("DO $$DECLARE c refcursor := 'p1'; BEGIN CLOSE c; OPEN c FOR SELECT secret FROM ns_t; END$$"));
    const m = await run(msg.execute('p1', 0), msg.sync());
    expect(rows(m)).toEqual([]);
    expect(errorOf(m.find((x) => x.type === B.ErrorResponse)!).get('C')).toBe('34000');
    await run(msg.query('ROLLBACK'));
    // Its statements stay (no EXECUTE in the body): a named statement prepared before still runs.
    await run(msg.parse('s2', 'SELECT 2 AS x'), msg.sync());
    await run(msg.query('DO $$BEGIN PERFORM 1; END$$'));
    expect(rows(await run(msg.bind('', 's2'), msg.execute('', 0), msg.sync()))).toEqual([['2']]);
    // With an EXECUTE it may have removed any statement: PostgreSQL is asked which are left (names-check.ts).
    await run(msg.query("DO $$BEGIN EXECUTE 'SELECT 1'; END$$"));
    expect(rows(await run(msg.bind('', 's2'), msg.execute('', 0), msg.sync()))).toEqual([['2']]);
    // One it dropped and PREPAREd again under that name is not the statement that was checked.
    await run(msg.query("DO $$BEGIN EXECUTE 'DEALLOCATE s2'; EXECUTE 'PREPARE s2 AS SELECT secret FROM ns_t'; END$$"));
    const after = await run(msg.bind('', 's2'), msg.execute('', 0), msg.sync());
    expect(rows(after)).toEqual([]);
    expect(errorOf(after.find((x) => x.type === B.ErrorResponse)!).get('C')).toBe('42501');
  });

  it('a portal PL/pgSQL closed and opened again with the same SQL text comes back, described anew', async () => {
    await run(msg.query('BEGIN'));
    const sql = 'SELECT id::text FROM ns_t';
    await run(msg.parse('s3', sql), msg.bind('p3', 's3'), msg.bind('p4', 's3'), msg.sync());
    await run(msg.query(`DO $$DECLARE c refcursor := 'p3'; BEGIN CLOSE c; OPEN c FOR ${sql}; END$$`));
    // The proxy describes it again itself (its RowDescription is not passed on): rows and tag as PostgreSQL sends.
    const m = await run(msg.execute('p3', 0), msg.execute('p4', 0), msg.sync());
    expect(m.map((x) => String.fromCharCode(x.type)).join(' ')).toBe('D C D C Z');
    expect(rows(m)).toEqual([['1'], ['1']]);
    await run(msg.query('ROLLBACK'));
  });

  it('a PREPARE or DEALLOCATE that fails gives the name back: PostgreSQL kept the statement', async () => {
    await run(msg.parse('n1', 'SELECT 1 AS x'), msg.sync());
    // 42P05: n1 exists (protocol and SQL prepared statements share one namespace).
    const dup = await run(msg.query('PREPARE n1 AS SELECT 3 -- one'));
    expect(errorOf(dup.find((x) => x.type === B.ErrorResponse)!).get('C')).toBe('42P05');
    expect(rows(await run(msg.bind('', 'n1'), msg.execute('', 0), msg.sync()))).toEqual([['1']]);
    // 25P02: a DEALLOCATE in a failed transaction does not run.
    await run(msg.query('BEGIN'));
    await run(msg.query('SELECT 1/0'));
    await run(msg.query('DEALLOCATE n1 -- one'));
    await run(msg.query('ROLLBACK'));
    expect(rows(await run(msg.bind('', 'n1'), msg.execute('', 0), msg.sync()))).toEqual([['1']]);
    // One that succeeds removes it, in both places: PostgreSQL's own answer (26000) to the Bind.
    await run(msg.query('DEALLOCATE n1 -- one'));
    const gone = await run(msg.bind('', 'n1'), msg.execute('', 0), msg.sync());
    expect(errorOf(gone.find((x) => x.type === B.ErrorResponse)!).get('C')).toBe('26000');
  });

  it('SQL CLOSE and DECLARE of a protocol portal name: its old verdict is gone', async () => {
    await run(msg.query('BEGIN'));
    await run(msg.parse('', "SELECT 'harmless'::text AS u"), msg.bind('P', ''), msg.sync());
    await run(msg.query('CLOSE "P"'));
    await run(msg.query('DECLARE "P" CURSOR FOR SELECT id, upper(secret) FROM ns_t'));
    const m = await run(msg.execute('P', 0), msg.sync());
    expect(rows(m)).toEqual([]);
    expect(errorOf(m.find((x) => x.type === B.ErrorResponse)!).get('C')).toBe('34000');
    await run(msg.query('ROLLBACK'));
  });
});

/** A message whose strings are given as bytes (names in a client_encoding other than UTF-8). */
const raw = typed;
const l1 = (s: string) => Buffer.from(`${s}\0`, 'latin1');

describe('names and notifications in a LATIN1 session keep their bytes', () => {
  let fx: Fixture;
  beforeAll(async () => {
    fx = await startFixture({ hooks });
  });
  afterAll(() => fx.sidecar.close(500));

  it('portals with non-ASCII names get no verdict: their Executes are refused', async () => {
    const { client: c } = await RawClient.startup(fx.sidecar.port, {
      user: 'agent',
      database: 'app',
      client_encoding: 'LATIN1',
    });
    try {
      const noParams = Buffer.alloc(6);
      c.send(
        msg.query('BEGIN'),
        msg.parse('g', "SELECT upper('ssn-' || 'secret') AS u"),
        msg.parse('h', "SELECT 'harmless'::text AS u"),
        raw('B', l1('p\xe9'), l1('g'), noParams),
        raw('B', l1('p\xe8'), l1('h'), noParams),
        raw('E', l1('p\xe9'), Buffer.alloc(4)),
        raw('E', l1('p\xe8'), Buffer.alloc(4)),
        msg.sync(),
      );
      const m = await c.untilReady(2);
      // PostgreSQL converts such names before keying them, so the proxy cannot know which statement one names.
      expect(m.filter((x) => x.type === B.DataRow)).toEqual([]);
      expect(m.filter((x) => x.type === B.ErrorResponse).map((x) => errorOf(x).get('C'))).toEqual(['42501']);
    } finally {
      c.close();
    }
  });

  it("a notification the session sent itself keeps its payload's bytes when its pid is swapped", async () => {
    const { client: c } = await RawClient.startup(fx.sidecar.port, {
      user: 'agent',
      database: 'app',
      client_encoding: 'LATIN1',
    });
    try {
      c.send(raw('Q', l1("LISTEN ns_c; NOTIFY ns_c, 'caf\xe9'")));
      const m = await c.untilReady();
      const n = m.find((x) => x.type === B.NotificationResponse)!;
      expect(n.buf.subarray(9)).toEqual(Buffer.from('ns_c\0caf\xe9\0', 'latin1'));
    } finally {
      c.close();
    }
  });
});
