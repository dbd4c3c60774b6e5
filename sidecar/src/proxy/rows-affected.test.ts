import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { B } from '../protocol/codes.js';
import { errorOf, msg, RawClient, rowOf, tagOf, types } from '../testing/raw-client.js';
import { type Fixture, startFixture } from '../testing/sidecar-fixture.js';
import { allowAllHooks } from './allow-all-hooks.js';
import type { ProxyHooks, StatementRecord, StatementRequest, Verdict } from './hooks.js';

// Verdict.maxAffected (guardrail maxRowsAffected) on the wire against real PostgreSQL: a write over the cap fails with
// 54000 and is undone upstream, whatever the protocol, transaction state or pipelining; one within it is untouched.
const records: StatementRecord[] = [];
const decide = (req: StatementRequest): Verdict =>
  req.sql.includes('guarded')
    ? { action: 'allow', maxAffected: 3, ...(req.sql.includes('slow') ? { timeoutMs: 300 } : {}) }
    : { action: 'allow' };
const hooks: ProxyHooks = {
  ...allowAllHooks(),
  openSession() {
    return {
      setupSql: () => [],
      checkQuery: decide,
      checkParse: decide,
      checkFunctionCall: () => ({ action: 'allow' }),
      planRows: () => undefined,
      statementDone: (r) => void records.push(r),
      close() {},
    };
  },
};

/** Sends messages and returns the answers up to the ReadyForQuery. */
async function runOn(c: RawClient, ...m: Buffer[]) {
  c.send(...m);
  return c.untilReady();
}
/** The transaction status of a ReadyForQuery that ends `m`. */
const status = (m: { buf: Buffer }[]) => String.fromCharCode(m[m.length - 1].buf[5]);

describe('maxAffected: writes over the cap are undone', () => {
  let fx: Fixture;
  let c: RawClient;
  const run = (...m: Buffer[]) => runOn(c, ...m);
  const sum = async () => {
    const m = await run(msg.query('SELECT sum(v)::int FROM ra_t'));
    return Number(rowOf(m.find((x) => x.type === B.DataRow)!)[0]);
  };
  const count = async () => {
    const m = await run(msg.query('SELECT count(*)::int FROM ra_t'));
    return Number(rowOf(m.find((x) => x.type === B.DataRow)!)[0]);
  };

  beforeAll(async () => {
    fx = await startFixture({ hooks });
    c = (await RawClient.startup(fx.sidecar.port)).client;
    await run(
      msg.query(
        'DROP TABLE IF EXISTS ra_t; CREATE TABLE ra_t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO ra_t SELECT i, 0 FROM generate_series(1, 10) i',
      ),
    );
  });
  afterAll(async () => {
    c.close();
    await fx.sidecar.close(500);
  });

  it('simple Query outside a transaction: within the cap it commits; over it, 54000 and nothing changed', async () => {
    const ok = await run(msg.query('UPDATE ra_t SET v = v + 1 WHERE id <= 3 /* guarded */'));
    expect([types(ok), tagOf(ok[0]), status(ok)]).toEqual(['C Z', 'UPDATE 3', 'I']);
    expect(await sum()).toBe(3);
    const over = await run(msg.query('UPDATE ra_t SET v = v + 1 WHERE id <= 5 /* guarded */'));
    expect([types(over), status(over)]).toEqual(['E Z', 'I']);
    const e = errorOf(over[0]);
    expect([e.get('C'), e.get('M')]).toEqual([
      '54000',
      'UPDATE would change 5 rows, more than the limit of 3 set by pgwarden (guardrails.maxRowsAffected); the change was rolled back',
    ]);
    expect(e.get('H')).toBe('Narrow the WHERE clause, or change at most 3 rows per statement.');
    expect(await sum()).toBe(3);
    const r = records.at(-2)!; // the sum() after it is the last
    expect(r.results).toEqual([{ tag: 'UPDATE 5', rows: 5, bytes: 0, error: { code: '54000', message: e.get('M') } }]);
  });

  it('the rows a RETURNING clause already sent are followed by the error, and the delete is undone', async () => {
    const m = await run(msg.query('DELETE FROM ra_t WHERE id > 5 RETURNING id /* guarded */'));
    expect(types(m)).toBe('T D D D D D E Z');
    expect(errorOf(m[6]).get('C')).toBe('54000');
    expect(await count()).toBe(10);
  });

  it('inside the client’s transaction: over the cap fails the transaction (on the upstream too) and ROLLBACK undoes all of it', async () => {
    expect(status(await run(msg.query('BEGIN')))).toBe('T');
    await run(msg.query('INSERT INTO ra_t VALUES (11, 0)'));
    const ok = await run(msg.query('UPDATE ra_t SET v = v + 10 WHERE id IN (1, 2) /* guarded */'));
    expect([types(ok), status(ok)]).toEqual(['C Z', 'T']);
    const over = await run(msg.query('UPDATE ra_t SET v = v + 10 /* guarded */'));
    expect([types(over), status(over), errorOf(over[0]).get('C')]).toEqual(['E Z', 'E', '54000']);
    const after = await run(msg.query('SELECT 1'));
    expect(errorOf(after[0]).get('C')).toBe('25P02');
    expect(status(await run(msg.query('ROLLBACK')))).toBe('I');
    expect([await count(), await sum()]).toEqual([10, 3]);
    // Within the cap inside a transaction: committed by the client's own COMMIT.
    await run(msg.query('BEGIN'));
    await run(msg.query('UPDATE ra_t SET v = v + 1 WHERE id = 10 /* guarded */'));
    expect(status(await run(msg.query('COMMIT')))).toBe('I');
    expect(await sum()).toBe(4);
  });

  it('a guarded write that fails by itself leaves no transaction open; a multi-statement Query is undone as one', async () => {
    const dup = await run(msg.query('UPDATE ra_t SET id = 1 WHERE id = 2 /* guarded */'));
    expect([types(dup), status(dup), errorOf(dup[0]).get('C')]).toEqual(['E Z', 'I', '23505']);
    const multi = await run(
      msg.query('UPDATE ra_t SET v = v + 100 WHERE id = 1 /* guarded */; UPDATE ra_t SET v = v + 100 WHERE id <= 4'),
    );
    expect([types(multi), status(multi)]).toEqual(['C E Z', 'I']);
    expect(await sum()).toBe(4);
  });

  it('finds the transaction state from its own BEGIN: a client BEGIN or COMMIT still in the pipeline counts', async () => {
    const before = await sum();
    // The client's BEGIN is ahead in the same packet: the write is inside the client's transaction (block).
    c.send(msg.query('BEGIN'), msg.query('UPDATE ra_t SET v = v + 1 /* guarded */'));
    const inTx = await c.untilReady(2);
    expect(types(inTx)).toBe('C Z E Z');
    expect(status(inTx)).toBe('E');
    expect(status(await run(msg.query('ROLLBACK')))).toBe('I');
    // The client's COMMIT is ahead: the write runs outside any transaction, in one of the proxy's (wrap).
    await run(msg.query('BEGIN'));
    c.send(msg.query('COMMIT'), msg.query('UPDATE ra_t SET v = v + 1 WHERE id = 1 /* guarded */'));
    const after = await c.untilReady(2);
    expect([types(after), status(after)]).toEqual(['C Z C Z', 'I']);
    expect(await sum()).toBe(before + 1);
    // Inside a failed transaction the write fails as any statement would, and the transaction stays failed.
    await run(msg.query('BEGIN'));
    await run(msg.query('SELECT 1/0'));
    const failed = await run(msg.query('UPDATE ra_t SET v = v + 1 /* guarded */'));
    expect([types(failed), status(failed), errorOf(failed[0]).get('C')]).toEqual(['E Z', 'E', '25P02']);
    expect(status(await run(msg.query('ROLLBACK')))).toBe('I');
    // Reads in the same Query are not writes: only the UPDATE's tag is counted.
    const mixed = await run(msg.query('SELECT * FROM ra_t; UPDATE ra_t SET v = v + 1 WHERE id = 1 /* guarded */'));
    expect([
      types(mixed)
        .split(' ')
        .filter((t) => t !== 'D')
        .join(' '),
      status(mixed),
    ]).toEqual(['T C C Z', 'I']);
    expect(await sum()).toBe(before + 2);
  });

  it('pipelined simple queries behind a guarded write run after it, in order', async () => {
    const v1 = await run(msg.query('SELECT v FROM ra_t WHERE id = 1'));
    const next = String(Number(rowOf(v1.find((x) => x.type === B.DataRow)!)[0]) + 1);
    c.send(
      msg.query('UPDATE ra_t SET v = v + 1 WHERE id = 1 /* guarded */'),
      msg.query('SELECT v FROM ra_t WHERE id = 1'),
      msg.query('UPDATE ra_t SET v = v + 1 /* guarded */'),
      msg.query('SELECT v FROM ra_t WHERE id = 1'),
    );
    const m = await c.untilReady(4);
    expect(types(m)).toBe('C Z T D C Z E Z T D C Z');
    expect(m.filter((x) => x.type === B.DataRow).map((x) => rowOf(x)[0])).toEqual([next, next]);
    expect(m.filter((x) => x.type === B.ReadyForQuery).map((x) => String.fromCharCode(x.buf[5]))).toEqual([
      'I',
      'I',
      'I',
      'I',
    ]);
  });

  it('extended protocol: an Execute over the cap fails its batch before the Sync, so nothing commits', async () => {
    const before = await sum();
    c.send(
      msg.parse('', 'UPDATE ra_t SET v = v + 1 WHERE id <= 6 /* guarded */'),
      msg.bind('', ''),
      msg.execute(''),
      msg.parse('', 'UPDATE ra_t SET v = v + 1000 WHERE id = 1'),
      msg.bind('', ''),
      msg.execute(''),
      msg.sync(),
      msg.parse('', 'SELECT sum(v)::int FROM ra_t'),
      msg.bind('', ''),
      msg.execute(''),
      msg.sync(),
    );
    const m = await c.untilReady(2);
    expect(types(m)).toBe('1 2 E Z 1 2 D C Z');
    expect(errorOf(m[2]).get('C')).toBe('54000');
    expect(rowOf(m.find((x) => x.type === B.DataRow)!)).toEqual([String(before)]);
    expect(status(m)).toBe('I');
    // Within the cap, the batch commits at its Sync as usual.
    const ok = await run(
      msg.parse('g', 'UPDATE ra_t SET v = v + 1 WHERE id <= $1::int /* guarded */'),
      msg.bind('', 'g', ['2']),
      msg.execute(''),
      msg.sync(),
    );
    expect([types(ok), tagOf(ok[2])]).toEqual(['1 2 C Z', 'UPDATE 2']);
    expect(await sum()).toBe(before + 2);
    // The same prepared statement over the cap, inside a transaction: the transaction is failed.
    await run(msg.query('BEGIN'));
    const over = await run(msg.bind('', 'g', ['9']), msg.execute(''), msg.sync());
    expect([types(over), status(over)]).toEqual(['2 E Z', 'E']);
    expect(status(await run(msg.query('ROLLBACK')))).toBe('I');
    expect(await sum()).toBe(before + 2);
    // Row-limited Executes of a guarded write with RETURNING: the check comes with the last one's tag.
    const limited = await run(
      msg.parse('', 'UPDATE ra_t SET v = v + 1 WHERE id <= 2 RETURNING id /* guarded */'),
      msg.bind('p', ''),
      msg.execute('p', 1),
      msg.execute('p', 1),
      msg.execute('p', 1),
      msg.sync(),
    );
    expect(types(limited)).toBe('1 2 D s D s C Z');
    expect(await sum()).toBe(before + 4);
    // A guarded Execute that fails by itself (a unique violation) lets the client's Sync through as usual.
    c.send(
      msg.parse('', 'UPDATE ra_t SET id = 1 WHERE id = 2 /* guarded */'),
      msg.bind('', ''),
      msg.execute(''),
      msg.sync(),
      msg.query('SELECT 7'),
    );
    const dup = await c.untilReady(2);
    expect(types(dup)).toBe('1 2 E Z T D C Z');
    expect(errorOf(dup[2]).get('C')).toBe('23505');
    // In a failed transaction the batch fails at its Parse, before the guarded Execute runs: the client's Sync goes
    // through all the same (it waited for the Execute's outcome, which never comes).
    await run(msg.query('BEGIN'));
    await run(msg.query('SELECT 1/0'));
    const skipped = await run(
      msg.parse('', 'UPDATE ra_t SET v = v + 1 WHERE id = 1 /* guarded */'),
      msg.bind('', ''),
      msg.execute(''),
      msg.sync(),
    );
    expect([types(skipped), status(skipped), errorOf(skipped[0]).get('C')]).toEqual(['E Z', 'E', '25P02']);
    expect(status(await run(msg.query('ROLLBACK')))).toBe('I');
  });
});

// The tag counts only the rows the statement itself changed: rows its triggers, foreign-key cascades and functions
// change are counted from PostgreSQL's per-transaction statistics, before and behind the write (K_ROWS).
describe('maxAffected: rows changed by triggers, cascades and functions count too', () => {
  let fx: Fixture;
  let c: RawClient;
  const run = (...m: Buffer[]) => runOn(c, ...m);
  const one = async (sql: string) => {
    const m = await run(msg.query(sql));
    return rowOf(m.find((x) => x.type === B.DataRow)!)[0];
  };
  const rows = () =>
    one(
      "SELECT (SELECT count(*) FROM rc_p) || '/' || (SELECT count(*) FROM rc_c) || '/' || (SELECT count(*) FROM rc_log) || '/' || (SELECT sum(v) FROM rc_p)",
    );

  beforeAll(async () => {
    fx = await startFixture({ hooks });
    c = (await RawClient.startup(fx.sidecar.port)).client;
    const setup = await run(
      msg.query(`
        DROP TABLE IF EXISTS rc_c, rc_p, rc_log, rc_tr CASCADE;
        CREATE TABLE rc_p (id int PRIMARY KEY, v int NOT NULL DEFAULT 0);
        CREATE TABLE rc_c (id serial PRIMARY KEY, pid int NOT NULL REFERENCES rc_p ON DELETE CASCADE);
        CREATE TABLE rc_log (id serial PRIMARY KEY, note text);
        CREATE TABLE rc_tr (id int PRIMARY KEY);
        CREATE FUNCTION rc_log_twice() RETURNS trigger LANGUAGE plpgsql AS
          $$ BEGIN INSERT INTO rc_log (note) VALUES ('a'), ('b'); RETURN NEW; END $$;
        CREATE TRIGGER rc_tr_log AFTER INSERT ON rc_tr FOR EACH ROW EXECUTE FUNCTION rc_log_twice();
        CREATE FUNCTION rc_touch_all() RETURNS int LANGUAGE plpgsql AS
          $$ BEGIN UPDATE rc_c SET pid = pid; RETURN 1; END $$;
        INSERT INTO rc_p (id) SELECT generate_series(1, 4);
        INSERT INTO rc_c (pid) SELECT 1 FROM generate_series(1, 5);
        INSERT INTO rc_c (pid) SELECT 2 FROM generate_series(1, 5);
        INSERT INTO rc_c (pid) VALUES (3);
      `),
    );
    expect(status(setup)).toBe('I');
  });
  afterAll(async () => {
    c.close();
    await fx.sidecar.close(500);
  });

  it('simple Query: a delete whose cascade goes over the cap is rolled back; one within it commits', async () => {
    expect(await rows()).toBe('4/11/0/0');
    const n = records.length;
    const over = await run(msg.query('DELETE FROM rc_p WHERE id = 1 /* guarded */'));
    // The tag comes first, then the error, as PostgreSQL sends a deferred constraint's error at commit.
    expect([types(over), tagOf(over[0]), status(over)]).toEqual(['C E Z', 'DELETE 1', 'I']);
    const e = errorOf(over[1]);
    expect([e.get('C'), e.get('M')]).toEqual([
      '54000',
      'DELETE would change 6 rows counting those its triggers, foreign-key cascades and functions change (1 by the statement itself), more than the limit of 3 set by pgwarden (guardrails.maxRowsAffected); the change was rolled back',
    ]);
    expect(await rows()).toBe('4/11/0/0');
    const r = records[n];
    expect(r.request.sql).toContain('DELETE FROM rc_p');
    // The audit record says what the statement changed in all (`changed`), besides its tag's count.
    expect(r.results).toEqual([
      { tag: 'DELETE 1', rows: 1, bytes: 0, changed: 6, error: { code: '54000', message: e.get('M') } },
    ]);
    // Parent 3 has one child: 2 rows in all.
    const ok = await run(msg.query('DELETE FROM rc_p WHERE id = 3 /* guarded */'));
    expect([types(ok), status(ok)]).toEqual(['C Z', 'I']);
    expect(await rows()).toBe('3/10/0/0');
    expect(records[n + 2].results).toEqual([{ tag: 'DELETE 1', rows: 1, bytes: 0, changed: 2 }]);
  });

  it('rows a trigger writes and rows a called function changes count', async () => {
    const trig = await run(msg.query('INSERT INTO rc_tr VALUES (1), (2) /* guarded */'));
    expect([types(trig), errorOf(trig[1]).get('C')]).toEqual(['C E Z', '54000']);
    expect(errorOf(trig[1]).get('M')).toMatch(/^INSERT would change 6 rows .*\(2 by the statement itself\)/);
    expect(await one('SELECT count(*) FROM rc_tr')).toBe('0');
    const fn = await run(msg.query('UPDATE rc_p SET v = rc_touch_all() WHERE id = 4 /* guarded */'));
    expect([types(fn), errorOf(fn[1]).get('C')]).toEqual(['C E Z', '54000']);
    expect(await rows()).toBe('3/10/0/0');
    // Writes no tag counts: a DO block's, EXPLAIN ANALYZE's, a data-modifying CTE's.
    const doBlock = await run(msg.query('DO $$ BEGIN DELETE FROM rc_c WHERE pid = 1; END $$ /* guarded */'));
    expect([types(doBlock), tagOf(doBlock[0]), errorOf(doBlock[1]).get('M')]).toEqual([
      'C E Z',
      'DO',
      'The statement would change 5 rows counting those its triggers, foreign-key cascades and functions change (0 by the statement itself), more than the limit of 3 set by pgwarden (guardrails.maxRowsAffected); the change was rolled back',
    ]);
    const explain = await run(msg.query('EXPLAIN ANALYZE DELETE FROM rc_c /* guarded */'));
    expect([types(explain).slice(-5), errorOf(explain.at(-2)!).get('C')]).toEqual(['C E Z', '54000']);
    const cte = await run(
      msg.parse(
        '',
        'WITH d AS (DELETE FROM rc_c WHERE pid = $1::int RETURNING 1) SELECT count(*) FROM d /* guarded */',
      ),
      msg.bind('', '', ['2']),
      msg.execute(''),
      msg.sync(),
    );
    expect([types(cte), tagOf(cte[3]), errorOf(cte[4]).get('C')]).toEqual(['1 2 D C E Z', 'SELECT 1', '54000']);
    expect(await rows()).toBe('3/10/0/0');
    // One row plus one trigger row each: within the cap of 3.
    expect(types(await run(msg.query('INSERT INTO rc_tr VALUES (1) /* guarded */')))).toBe('C Z');
    expect(await rows()).toBe('3/10/2/0');
  });

  it('counts only this transaction: rows the session changed just before (statistics not yet reported) do not count', async () => {
    // PostgreSQL folds a transaction's counts into the backend's unreported statistics, which the next
    // transaction's figures include until the backend reports them (between transactions, at most once a second).
    const bulk = await run(msg.query("INSERT INTO rc_log (note) SELECT 'x' FROM generate_series(1, 50)"));
    expect(status(bulk)).toBe('I');
    const ok = await run(msg.query('UPDATE rc_p SET v = v + 1 WHERE id = 2 /* guarded */'));
    expect([types(ok), status(ok)]).toEqual(['C Z', 'I']);
    // Inside the client's transaction, its earlier writes there are not this write's either.
    await run(msg.query('BEGIN'));
    await run(msg.query("INSERT INTO rc_log (note) SELECT 'y' FROM generate_series(1, 20)"));
    const inTx = await run(msg.query('UPDATE rc_p SET v = v + 1 WHERE id = 2 /* guarded */'));
    expect([types(inTx), status(inTx)]).toEqual(['C Z', 'T']);
    // Over the cap by cascade inside the transaction: the transaction fails, ROLLBACK undoes all of it.
    const over = await run(msg.query('DELETE FROM rc_p WHERE id = 2 /* guarded */'));
    expect([types(over), status(over), errorOf(over[1]).get('C')]).toEqual(['C E Z', 'E', '54000']);
    expect(errorOf((await run(msg.query('SELECT 1')))[0]).get('C')).toBe('25P02');
    expect(status(await run(msg.query('ROLLBACK')))).toBe('I');
    expect(await rows()).toBe('3/10/52/1');
  });

  it('extended protocol: a cascade over the cap fails the batch before its Sync; within it the batch commits', async () => {
    const over = await run(
      msg.parse('d', 'DELETE FROM rc_p WHERE id = $1::int /* guarded */'),
      msg.bind('', 'd', ['2']),
      msg.execute(''),
      msg.parse('', "INSERT INTO rc_log (note) VALUES ('after')"),
      msg.bind('', ''),
      msg.execute(''),
      msg.sync(),
    );
    expect([types(over), tagOf(over[2]), errorOf(over[3]).get('C'), status(over)]).toEqual([
      '1 2 C E Z',
      'DELETE 1',
      '54000',
      'I',
    ]);
    expect(await rows()).toBe('3/10/52/1');
    // Inside the client's transaction: the transaction is failed.
    await run(msg.query('BEGIN'));
    const inTx = await run(msg.bind('', 'd', ['2']), msg.execute(''), msg.sync());
    expect([types(inTx), status(inTx)]).toEqual(['2 C E Z', 'E']);
    expect(status(await run(msg.query('ROLLBACK')))).toBe('I');
    // A function's writes through a prepared statement.
    const fn = await run(
      msg.parse('f', 'UPDATE rc_p SET v = rc_touch_all() WHERE id = $1::int /* guarded */'),
      msg.bind('', 'f', ['4']),
      msg.execute(''),
      msg.sync(),
    );
    expect([types(fn), errorOf(fn[3]).get('C')]).toEqual(['1 2 C E Z', '54000']);
    // Row-limited Executes: a DELETE with RETURNING runs whole at its first Execute, and its cascade is counted then.
    const limited = await run(
      msg.parse('', 'DELETE FROM rc_p WHERE id = 2 RETURNING id /* guarded */'),
      msg.bind('lp', ''),
      msg.execute('lp', 1),
      msg.execute('lp', 1),
      msg.sync(),
    );
    expect([types(limited), errorOf(limited[4]).get('C'), status(limited)]).toEqual(['1 2 D s E Z', '54000', 'I']);
    expect(await rows()).toBe('3/10/52/1');
    // Within the cap: parent 4 has no children.
    const ok = await run(
      msg.parse('', 'DELETE FROM rc_p WHERE id = $1::int /* guarded */'),
      msg.bind('', '', ['4']),
      msg.execute(''),
      msg.sync(),
    );
    expect([types(ok), status(ok)]).toEqual(['1 2 C Z', 'I']);
    expect(await rows()).toBe('2/10/52/1');
  });

  it('the counts cannot be shadowed from the search_path, and a count that fails fails the write (fail closed)', async () => {
    await run(
      msg.query(`DROP SCHEMA IF EXISTS rc_evil CASCADE; CREATE SCHEMA rc_evil;
        CREATE VIEW rc_evil.pg_stat_xact_user_tables AS
          SELECT 0::bigint AS n_tup_ins, 0::bigint AS n_tup_upd, 0::bigint AS n_tup_del`),
    );
    await run(msg.query('SET search_path = rc_evil, pg_catalog, public'));
    const shadowed = await run(msg.query('DELETE FROM rc_p WHERE id = 2 /* guarded */'));
    expect([types(shadowed), errorOf(shadowed[1]).get('C')]).toEqual(['C E Z', '54000']);
    await run(msg.query('RESET search_path'));
    // The proxy's count is a statement it prepares once per session. A client that closes it makes the next count
    // fail, and the write with it; the count after that prepares it again.
    await run(msg.close('S', '\u0001pgwarden-rows-changed'), msg.sync());
    const write = () =>
      run(
        msg.parse('', 'UPDATE rc_p SET v = v + 1 WHERE id = 2 /* guarded */'),
        msg.bind('', ''),
        msg.execute(''),
        msg.sync(),
      );
    const failed = await write();
    expect([types(failed), status(failed), errorOf(failed[2]).get('C')]).toEqual(['1 2 E Z', 'I', '26000']);
    expect(errorOf(failed[2]).get('M')).toMatch(/^pgwarden could not count the rows this write changed/);
    const last = records.findLast((r) => r.request.sql.includes('v = v + 1 WHERE id = 2'))!;
    expect(last.results.at(-1)!.error!.code).toBe('26000');
    expect(await rows()).toBe('2/10/52/1');
    expect(types(await write())).toBe('1 2 C Z');
    // DISCARD ALL drops it too: the proxy sees the tag and prepares it again, no write fails for it.
    await run(msg.query('DISCARD ALL'));
    expect(types(await run(msg.query('UPDATE rc_p SET v = v - 1 WHERE id = 2 /* guarded */')))).toBe('C Z');
    expect(types(await write())).toBe('1 2 C Z');
    await run(msg.query('UPDATE rc_p SET v = v - 1 WHERE id = 2'));
    expect(await rows()).toBe('2/10/52/1');
    // The session goes on.
    expect(await one('SELECT 41 + 1')).toBe('42');
  });

  it('a guarded write past its timeout is cancelled (the counts around it do not stop that) and undone', async () => {
    for (const m of [
      [msg.query('UPDATE rc_p SET v = v + 1 WHERE id = 2 AND pg_sleep(5) IS NOT NULL /* guarded slow */')],
      [
        msg.parse('', 'UPDATE rc_p SET v = v + 1 WHERE id = 2 AND pg_sleep(5) IS NOT NULL /* guarded slow */'),
        msg.bind('', ''),
        msg.execute(''),
        msg.sync(),
      ],
    ]) {
      const started = Date.now();
      const r = await run(...m);
      const e = r.find((x) => x.type === B.ErrorResponse)!;
      expect([errorOf(e).get('C'), errorOf(e).get('M'), status(r)]).toEqual([
        '57014',
        'canceling statement due to statement timeout of 300 ms set by pgwarden',
        'I',
      ]);
      expect(Date.now() - started).toBeLessThan(4000);
    }
    expect(await rows()).toBe('2/10/52/1');
  });

  it('a server that keeps no per-table statistics (track_counts off) cannot count: the write fails and is undone', async () => {
    // Only a superuser may turn them off, here for its own session.
    const su = await startFixture({ hooks, role: 'super' });
    const sc = (await RawClient.startup(su.sidecar.port)).client;
    try {
      expect(status(await runOn(sc, msg.query('SET track_counts = off')))).toBe('I');
      const simple = await runOn(sc, msg.query('UPDATE rc_p SET v = v + 1 WHERE id = 2 /* guarded */'));
      expect([types(simple), errorOf(simple[1]).get('C'), status(simple)]).toEqual(['C E Z', '55000', 'I']);
      expect(errorOf(simple[1]).get('M')).toMatch(
        /could not count the rows this write changed .*: track_counts is off/,
      );
      const ext = await runOn(
        sc,
        msg.parse('', 'UPDATE rc_p SET v = v + 1 WHERE id = 2 /* guarded */'),
        msg.bind('', ''),
        msg.execute(''),
        msg.sync(),
      );
      expect([types(ext), errorOf(ext[3]).get('C'), status(ext)]).toEqual(['1 2 C E Z', '55000', 'I']);
      expect(await rows()).toBe('2/10/52/1');
    } finally {
      sc.close();
      await su.sidecar.close(500);
    }
  });
});
