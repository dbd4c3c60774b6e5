import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dataRow } from '../protocol/backend-messages.js';
import { B } from '../protocol/codes.js';
import { cancelRequest } from '../protocol/frontend-messages.js';
import { errorOf, msg, RawClient, rowOf, tagOf, typed, types } from '../testing/raw-client.js';
import { type Fixture, startFixture } from '../testing/sidecar-fixture.js';
import { allowAllHooks } from './allow-all-hooks.js';
import type { ProxyHooks, StatementRecord, StatementRequest, Verdict } from './hooks.js';

const records: StatementRecord[] = [];

/** Test policy keyed on markers in the SQL text. */
function decide(req: StatementRequest): Verdict | Promise<Verdict> {
  if (req.sql.includes('forbidden'))
    return {
      action: 'deny',
      code: '42501',
      message: 'denied by rule no-forbidden',
      rule: 'no-forbidden',
      hint: 'ask a DBA',
    };
  if (req.sql.includes('explode')) throw new Error('policy engine crashed');
  if (req.sql.includes('held'))
    return new Promise((r) => setTimeout(() => r({ action: 'allow', rule: 'after-review' }), 150));
  if (req.sql.includes('review')) return new Promise(() => {}); // an approval nobody gives
  if (req.sql.includes('capped')) return { action: 'allow', maxRows: 10 };
  if (req.sql.includes('slow')) return { action: 'allow', timeoutMs: 200 };
  for (const rule of ['exec-wait', 'exec-refused', 'exec-crash'])
    if (req.sql.includes(rule)) return { action: 'allow', rule };
  return { action: 'allow' };
}

const hooks: ProxyHooks = {
  ...allowAllHooks(),
  openSession() {
    return {
      setupSql: () => ["SET application_name = 'gate-test'"],
      checkQuery: decide,
      checkParse: decide,
      // Each run of a prepared statement, by the rule its Parse got: held for 100 ms, denied, or a crashing check.
      checkExecute: (v) => {
        if (v.rule === 'exec-wait') return new Promise((r) => setTimeout(() => r(v), 100));
        if (v.rule === 'exec-refused') return { action: 'deny', code: '53400', message: 'not now', rule: 'runs' };
        if (v.rule === 'exec-crash') throw new Error('run check crashed');
        return v;
      },
      checkFunctionCall: (oid) =>
        oid === 1 ? { action: 'deny', code: '42501', message: 'function calls are not allowed' } : { action: 'allow' },
      planRows: (fields) => {
        const i = fields.findIndex((f) => f.name === 'secret');
        if (i < 0) return undefined;
        // Replace the 'secret' column of every row with '***' (text format).
        return (body) => {
          const values: Array<string | null> = [];
          let pos = 2;
          for (let c = 0; c < body.readInt16BE(0); c++) {
            const len = body.readInt32BE(pos);
            pos += 4;
            values.push(len < 0 ? null : c === i ? '***' : body.toString('utf8', pos, pos + len));
            if (len > 0) pos += len;
          }
          return dataRow(values).subarray(5);
        };
      },
      scrubText: (t) => t.replaceAll('4111-1111-1111-1111', '[card]'),
      statementDone: (r) => void records.push(r),
      close() {},
    };
  },
};

describe('statement gate', () => {
  let fx: Fixture;
  let c: RawClient;
  let key: Buffer;
  const run = async (...m: Buffer[]) => {
    c.send(...m);
    return c.untilReady();
  };
  const status = (m: { buf: Buffer }[]) => String.fromCharCode(m[m.length - 1].buf[5]);

  beforeAll(async () => {
    fx = await startFixture({ hooks, maxStatementBytes: 4096 });
    const started = await RawClient.startup(fx.sidecar.port);
    c = started.client;
    key = started.messages.find((m) => m.type === B.BackendKeyData)!.buf;
    await run(msg.query('DROP TABLE IF EXISTS gate_t; CREATE TABLE gate_t (id int, secret text)'));
  });
  afterAll(async () => {
    c.close();
    await fx.sidecar.close(500);
  });

  it('runs the setup SQL before the first ReadyForQuery', async () => {
    const m = await run(msg.query("SELECT current_setting('application_name')"));
    expect(rowOf(m.find((x) => x.type === B.DataRow)!)).toEqual(['gate-test']);
  });

  it('denies a simple query with ErrorResponse + ReadyForQuery', async () => {
    const m = await run(msg.query("SELECT 'forbidden'"));
    expect(types(m)).toBe('E Z');
    const e = errorOf(m[0]);
    expect([e.get('C'), e.get('M'), e.get('H')]).toEqual(['42501', 'denied by rule no-forbidden', 'ask a DBA']);
    expect(status(m)).toBe('I');
    const r = records[records.length - 1];
    expect(r.verdict.action).toBe('deny');
    expect(r.results).toEqual([
      { rows: 0, bytes: 0, error: { code: '42501', message: 'denied by rule no-forbidden' } },
    ]);
  });

  it('leaves a transaction failed until ROLLBACK after a denial, on the upstream too', async () => {
    expect(status(await run(msg.query('BEGIN')))).toBe('T');
    await run(msg.query("INSERT INTO gate_t VALUES (1, 'side effect')"));
    const d = await run(msg.query("SELECT 'forbidden'"));
    expect([types(d), status(d)]).toEqual(['E Z', 'E']);
    const after = await run(msg.query('SELECT 1'));
    expect(errorOf(after[0]).get('C')).toBe('25P02');
    const commit = await run(msg.query('COMMIT'));
    expect(tagOf(commit[0])).toBe('ROLLBACK'); // the upstream's own verdict on the failed transaction
    const count = await run(msg.query('SELECT count(*) FROM gate_t'));
    expect(rowOf(count.find((x) => x.type === B.DataRow)!)).toEqual(['0']);
  });

  it('denies in the extended protocol and discards until Sync', async () => {
    const m = await run(
      msg.parse('', "SELECT 'forbidden'"),
      msg.bind('', ''),
      msg.execute(''),
      msg.parse('ok', 'SELECT 1'),
      msg.bind('', 'ok'),
      msg.execute(''),
      msg.sync(),
    );
    expect(types(m)).toBe('E Z');
    expect(errorOf(m[0]).get('C')).toBe('42501');
    expect(status(m)).toBe('I');
    // The named statement after the denial was discarded, as PostgreSQL discards after an error.
    const again = await run(msg.bind('', 'ok'), msg.execute(''), msg.sync());
    expect(errorOf(again[0]).get('C')).toBe('26000');
    const ok = await run(msg.parse('', 'SELECT 5'), msg.bind('', ''), msg.execute(''), msg.sync());
    expect(types(ok)).toBe('1 2 D C Z');
  });

  it('denies in the extended protocol inside a transaction and keeps it failed', async () => {
    await run(msg.query('BEGIN'));
    const m = await run(msg.parse('', "SELECT 'forbidden'"), msg.bind('', ''), msg.execute(''), msg.sync());
    expect([types(m), status(m)]).toEqual(['E Z', 'E']);
    expect(status(await run(msg.query('ROLLBACK')))).toBe('I');
  });

  it('fails closed when the policy check throws', async () => {
    const m = await run(msg.query("SELECT 'explode'"));
    expect(errorOf(m[0]).get('C')).toBe('42501');
    expect(errorOf(m[0]).get('M')).toMatch(/policy check failed/);
  });

  it('holds a statement until its verdict arrives, keeping pipelined order', async () => {
    const t0 = Date.now();
    c.send(msg.query("SELECT 'held' AS a"), msg.query("SELECT 'next' AS b"));
    const m2 = await c.untilReady(2);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    expect(m2.filter((x) => x.type === B.DataRow).map((x) => rowOf(x)[0])).toEqual(['held', 'next']);
    const held = records.find((r) => r.request.sql.includes("'held'"))!;
    expect(held.heldMs).toBeGreaterThanOrEqual(140);
  });

  it('checks each Execute of a prepared statement: a held run keeps the pipeline in order', async () => {
    await run(msg.parse('rh', "SELECT 'exec-wait' AS a"), msg.sync());
    const t0 = Date.now();
    const m = await run(
      msg.bind('', 'rh'),
      msg.execute(''),
      msg.parse('', "SELECT 'after' AS b"),
      msg.bind('', ''),
      msg.execute(''),
      msg.sync(),
    );
    expect(Date.now() - t0).toBeGreaterThanOrEqual(90);
    expect(types(m)).toBe('2 D C 1 2 D C Z');
    expect(m.filter((x) => x.type === B.DataRow).map((x) => rowOf(x)[0])).toEqual(['exec-wait', 'after']);
    const held = records.filter((r) => r.request.sql.includes("'exec-wait'")).at(-1)!;
    expect(held.heldMs).toBeGreaterThanOrEqual(90);
    expect(held.verdict).toMatchObject({ action: 'allow', rule: 'exec-wait' });
  });

  it('a run denied at Execute errors and discards until Sync; the statement stays prepared and is checked again', async () => {
    await run(msg.parse('rd', "SELECT 'exec-refused'"), msg.sync());
    for (let i = 0; i < 2; i++) {
      const m = await run(
        msg.bind('', 'rd'),
        msg.execute(''),
        msg.parse('', 'SELECT 6'),
        msg.bind('', ''),
        msg.execute(''),
        msg.sync(),
      );
      expect(types(m)).toBe('2 E Z');
      expect([errorOf(m[1]).get('C'), errorOf(m[1]).get('M')]).toEqual(['53400', 'not now']);
      expect(status(m)).toBe('I');
    }
    const r = records.filter((x) => x.request.sql.includes("'exec-refused'")).at(-1)!;
    expect(r.verdict).toMatchObject({ action: 'deny', rule: 'runs' });
    expect(r.results).toEqual([{ rows: 0, bytes: 0, error: { code: '53400', message: 'not now' } }]);
    // A check that throws denies the run (fail closed).
    await run(msg.parse('rx', "SELECT 'exec-crash'"), msg.sync());
    const x = await run(msg.bind('', 'rx'), msg.execute(''), msg.sync());
    expect([types(x), errorOf(x[1]).get('C')]).toEqual(['2 E Z', '42501']);
    expect(errorOf(x[1]).get('M')).toMatch(/policy check failed/);
  });

  it('ends a held statement with 57014 when the client cancels it', async () => {
    c.send(msg.query("SELECT 'review'"));
    await new Promise((r) => setTimeout(r, 50));
    const canceller = await RawClient.open(fx.sidecar.port);
    canceller.send(cancelRequest(key.readInt32BE(5), key.readInt32BE(9)));
    const m = await c.untilReady();
    expect(types(m)).toBe('E Z');
    expect([errorOf(m[0]).get('C'), errorOf(m[0]).get('M')]).toEqual([
      '57014',
      'canceling statement due to user request',
    ]);
    expect(types(await run(msg.query('SELECT 1')))).toBe('T D C Z');
  });

  it('denies a FunctionCall by policy', async () => {
    const m = await run(msg.functionCall(1, []));
    expect(types(m)).toBe('E Z');
    expect(errorOf(m[0]).get('M')).toBe('function calls are not allowed');
  });

  it('stops at maxRows with 54000 and stays usable (simple and extended)', async () => {
    const m = await run(msg.query('SELECT g, 1 AS capped FROM generate_series(1, 200000) g'));
    expect(m.filter((x) => x.type === B.DataRow)).toHaveLength(10);
    const e = errorOf(m.find((x) => x.type === B.ErrorResponse)!);
    expect([e.get('C'), e.get('M')]).toEqual(['54000', 'result exceeds the limit of 10 rows set by pgwarden']);
    const x = await run(
      msg.parse('', 'SELECT g AS capped FROM generate_series(1, 200000) g'),
      msg.bind('', ''),
      msg.execute(''),
      msg.sync(),
    );
    expect(x.filter((y) => y.type === B.DataRow)).toHaveLength(10);
    expect(errorOf(x.find((y) => y.type === B.ErrorResponse)!).get('C')).toBe('54000');
    const small = await run(msg.query('SELECT g AS capped FROM generate_series(1, 10) g'));
    expect(types(small)).toBe(`T ${'D '.repeat(10)}C Z`);
    expect(rowOf((await run(msg.query('SELECT 3'))).find((y) => y.type === B.DataRow)!)).toEqual(['3']);
  });

  it('counts COPY TO STDOUT rows as its COPY n tag does: a HEADER line and a binary header and trailer are no rows', async () => {
    // maxRows 10 ('capped'): at the limit every CopyData and the tag come through; one row past it, 54000 after rows
    // within it (a text or CSV COPY stops one CopyData short: the last before the error may be a header's).
    const copy = async (rows: number, options: string, via: 'query' | 'execute' = 'query') => {
      const sql = `COPY (SELECT g, 'capped' FROM generate_series(1, ${rows}) g) TO STDOUT WITH (${options})`;
      const m =
        via === 'query'
          ? await run(msg.query(sql))
          : await run(msg.parse('', sql), msg.bind('', ''), msg.execute(''), msg.sync());
      const data = m.filter((x) => x.type === B.CopyData).map((x) => x.buf.subarray(5));
      const end = m.find((x) => x.type === B.CommandComplete || x.type === B.ErrorResponse)!;
      return { data, end: end.type === B.CommandComplete ? tagOf(end) : errorOf(end).get('C') };
    };
    const text = await copy(10, 'FORMAT text');
    expect([text.data.length, text.end]).toEqual([10, 'COPY 10']);
    expect((await copy(11, 'FORMAT text')).end).toBe('54000');
    const csv = await copy(10, 'FORMAT csv, HEADER');
    expect([csv.data.length, csv.end]).toEqual([11, 'COPY 10']);
    expect(csv.data[0].toString()).toBe('g,?column?\n');
    expect(csv.data[10].toString()).toBe('10,capped\n');
    expect(await copy(10, 'FORMAT csv, HEADER', 'execute')).toEqual(csv);
    const over = await copy(11, 'FORMAT csv, HEADER');
    expect([over.data.length, over.end]).toEqual([10, '54000']);
    expect((await copy(10, 'FORMAT text, HEADER')).end).toBe('COPY 10');
    // Binary: the signature comes with the first row, the trailer (int16 -1) alone at the end.
    const binary = await copy(10, 'FORMAT binary');
    expect([binary.data.length, binary.end]).toEqual([11, 'COPY 10']);
    expect(binary.data[10]).toEqual(Buffer.from([0xff, 0xff]));
    const binaryOver = await copy(11, 'FORMAT binary');
    expect([binaryOver.data.length, binaryOver.end]).toEqual([10, '54000']);
    expect((await copy(0, 'FORMAT binary')).end).toBe('COPY 0');
    expect(rowOf((await run(msg.query('SELECT 3'))).find((y) => y.type === B.DataRow)!)).toEqual(['3']);
  });

  it('counts maxRows per portal across row-limited Executes', async () => {
    const m = await run(
      msg.parse('', 'SELECT g AS capped FROM generate_series(1, 100) g'),
      msg.bind('cur', ''),
      msg.execute('cur', 4),
      msg.execute('cur', 4),
      msg.execute('cur', 4),
      msg.sync(),
    );
    expect(types(m)).toBe(`1 2 ${'D '.repeat(4)}s ${'D '.repeat(4)}s D D E Z`);
    expect(errorOf(m[m.length - 2]).get('C')).toBe('54000');
  });

  it('keeps the verdict of a named statement whose redefinition the upstream rejected', async () => {
    await run(msg.parse('k', 'SELECT g AS capped FROM generate_series(1, 100) g'), msg.sync());
    const redefine = await run(msg.parse('k', 'SELECT 1'), msg.sync());
    expect(errorOf(redefine[0]).get('C')).toBe('42P05');
    const m = await run(msg.bind('', 'k'), msg.execute(''), msg.sync());
    expect(m.filter((x) => x.type === B.DataRow)).toHaveLength(10);
    expect(errorOf(m.find((x) => x.type === B.ErrorResponse)!).get('C')).toBe('54000');
    await run(msg.close('S', 'k'), msg.sync());
  });

  it('cancels upstream when timeoutMs passes', async () => {
    const t0 = Date.now();
    const m = await run(msg.query("SELECT pg_sleep(10), 'slow'"));
    expect(Date.now() - t0).toBeLessThan(3000);
    const e = errorOf(m.find((x) => x.type === B.ErrorResponse)!);
    expect([e.get('C'), e.get('M')]).toEqual([
      '57014',
      'canceling statement due to statement timeout of 200 ms set by pgwarden',
    ]);
  });

  it('cancels an Execute sent with its Parse and Bind when timeoutMs passes (their answers wait for a Flush)', async () => {
    const t0 = Date.now();
    const m = await run(msg.parse('', "SELECT pg_sleep(10), 'slow'"), msg.bind('', ''), msg.execute(''), msg.sync());
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(types(m)).toBe('1 2 E Z');
    expect(errorOf(m[2]).get('M')).toBe('canceling statement due to statement timeout of 200 ms set by pgwarden');
  });

  it('applies the row transformer and scrubs errors, notices, notifications and COPY data', async () => {
    const rows = await run(msg.query("SELECT 1 AS id, 'hunter2' AS secret"));
    expect(rowOf(rows.find((x) => x.type === B.DataRow)!)).toEqual(['1', '***']);
    const err = await run(msg.query("SELECT '4111-1111-1111-1111'::int"));
    expect(errorOf(err[0]).get('M')).toBe('invalid input syntax for type integer: "[card]"');
    const notice = await run(msg.query("DO $$BEGIN RAISE NOTICE 'card 4111-1111-1111-1111'; END$$"));
    expect(errorOf(notice[0]).get('M')).toBe('card [card]');
    const copy = await run(msg.query("COPY (SELECT 'pay 4111-1111-1111-1111') TO STDOUT"));
    expect(copy.find((x) => x.type === B.CopyData)!.buf.toString('utf8', 5)).toBe('pay [card]\n');
    await run(msg.query('LISTEN gate_chan'));
    const n = await run(msg.query("NOTIFY gate_chan, 'x 4111-1111-1111-1111'"));
    const note = n.find((x) => x.type === B.NotificationResponse)!;
    expect(note.buf.toString('utf8', 9)).toBe('gate_chan\0x [card]\0');
  });

  it('masks Executes that skip Describe, using the statement Describe (JDBC style)', async () => {
    await run(msg.parse('jdbc', "SELECT 2 AS id, 'hunter2' AS secret"), msg.describe('S', 'jdbc'), msg.sync());
    const m = await run(msg.bind('', 'jdbc'), msg.execute(''), msg.sync());
    expect(types(m)).toBe('2 D C Z');
    expect(rowOf(m[1])).toEqual(['2', '***']);
  });

  it('masks a pipelined Parse, Describe S, Bind, Execute (postgres.js style)', async () => {
    const m = await run(
      msg.parse('pj', "SELECT 3 AS id, 'hunter2' AS secret"),
      msg.describe('S', 'pj'),
      msg.bind('', 'pj'),
      msg.execute(''),
      msg.sync(),
    );
    expect(types(m)).toBe('1 t T 2 D C Z');
    expect(rowOf(m[4])).toEqual(['3', '***']);
  });

  it('masks rows of a client that never describes, without showing it the proxy Describe', async () => {
    const m = await run(
      msg.parse('', "SELECT 4 AS id, 'hunter2' AS secret"),
      msg.bind('', ''),
      msg.execute(''),
      msg.sync(),
    );
    expect(types(m)).toBe('1 2 D C Z');
    expect(rowOf(m[2])).toEqual(['4', '***']);
    const none = await run(msg.parse('', 'SET search_path TO public'), msg.bind('', ''), msg.execute(''), msg.sync());
    expect(types(none)).toBe('1 2 C Z');
  });

  it('denies statements over --max-statement-bytes with 54000', async () => {
    const m = await run(msg.query(`SELECT '${'x'.repeat(5000)}'`));
    expect(types(m)).toBe('E Z');
    expect(errorOf(m[0]).get('C')).toBe('54000');
    expect(types(await run(msg.query('SELECT 1')))).toBe('T D C Z');
  });

  it("a malformed body gets PostgreSQL's 08P01 without its bytes going upstream; statements stay as they were", async () => {
    const raw = (type: string, body: string) => typed(type, Buffer.from(body, 'latin1'));
    await run(msg.parse('kept', "SELECT 'kept' AS v"), msg.sync());
    const before = records.length;
    // A redefinition whose SQL has no NUL, and a new statement whose parameter count is missing: PostgreSQL reads
    // neither, so 'kept' keeps its statement and its verdict here, and 'forbidden_one' never exists.
    for (const body of ["kept\0SELECT 'forbidden'", "forbidden_one\0SELECT 'forbidden'\0"]) {
      const m = await run(raw('P', body), msg.bind('', 'kept'), msg.execute(''), msg.sync());
      expect(types(m)).toBe('E Z');
      expect(errorOf(m[0]).get('C')).toBe('08P01');
    }
    const ok = await run(msg.bind('', 'kept'), msg.execute(''), msg.bind('', 'forbidden_one'), msg.sync());
    expect(types(ok)).toBe('2 D C E Z');
    expect(rowOf(ok[1])).toEqual(['kept']);
    expect(errorOf(ok[3]).get('C')).toBe('26000');
    // The policy saw neither (no deny of 'forbidden'); each is recorded as refused unread. The failed Bind of the
    // statement that never existed is recorded too, as what an Execute of its portal would have been.
    expect(records.slice(before).map((r) => [r.request.sql, r.verdict.reason, r.results[0]?.error?.code])).toEqual([
      ['', 'malformed message', '08P01'],
      ['', 'malformed message', '08P01'],
      ["SELECT 'kept' AS v", undefined, undefined],
      ['', 'unchecked portal', '26000'],
    ]);
    // A simple Query with bytes after its NUL is not run, even in part.
    const q = await run(raw('Q', "INSERT INTO gate_t VALUES (9, 'x')\0SELECT 1\0"));
    expect([types(q), errorOf(q[0]).get('M')]).toEqual(['E Z', 'invalid message format']);
    const count = await run(msg.query('SELECT count(*) FROM gate_t WHERE id = 9'));
    expect(rowOf(count.find((x) => x.type === B.DataRow)!)).toEqual(['0']);
  });

  it('a Bind PostgreSQL cannot read (names without their NULs) is recorded once, with its 08P01', async () => {
    const before = records.length;
    const m = await run(typed('B', Buffer.from('p\0kept', 'latin1')), msg.execute('p'), msg.sync());
    expect(types(m)).toBe('E Z');
    expect(errorOf(m[0]).get('C')).toBe('08P01');
    // Names longer than the proxy waits for pass as they come (a socket read holds 64 KiB at most, so this Bind is
    // read in pieces): the same record.
    const { client } = await RawClient.startup(fx.sidecar.port);
    try {
      client.send(typed('B', Buffer.from('P'.repeat(200_000), 'latin1')), msg.execute(''), msg.sync());
      const got = await client.untilReady();
      expect(types(got)).toBe('E Z');
      expect(errorOf(got[0]).get('C')).toBe('08P01');
    } finally {
      client.close();
    }
    expect(
      records.slice(before).map((r) => [r.request.sql, r.verdict.reason, r.results.map((x) => x.error?.code)]),
    ).toEqual([
      ['', 'malformed message', ['08P01']],
      ['', 'malformed message', ['08P01']],
    ]);
  });

  it('refuses to execute a portal of a statement it never checked', async () => {
    await run(msg.query("PREPARE sneaky AS SELECT 'unchecked'"));
    const m = await run(msg.bind('', 'sneaky'), msg.execute(''), msg.sync());
    const err = errorOf(m.find((x) => x.type === B.ErrorResponse)!);
    expect(err.get('C')).toBe('42501');
    expect(err.get('M')).toBe(
      'portal "" was bound to a statement pgwarden did not check (e.g. one made with SQL PREPARE)',
    );
  });

  it('audits statements still in flight when the client goes away: an error already seen, or 08006 when unfinished', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    const before = records.length;
    // The ErrorResponse and the Terminate race the ReadyForQuery; and a statement still running when the socket closes.
    client.send(msg.query('SELECT 1/0'), msg.terminate());
    const other = (await RawClient.startup(fx.sidecar.port)).client;
    other.send(msg.query('SELECT pg_sleep(0.3), 42'));
    await new Promise((r) => setTimeout(r, 50));
    other.close();
    const until = Date.now() + 5000;
    while (records.length < before + 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    const mine = records.slice(before);
    const div = mine.find((r) => r.request.sql === 'SELECT 1/0');
    expect(div?.results.map((x) => x.error?.code)).toEqual(['22012']);
    const sleep = mine.find((r) => r.request.sql.startsWith('SELECT pg_sleep'));
    expect(sleep?.results.map((x) => x.error?.code)).toEqual(['08006']);
  });
});
