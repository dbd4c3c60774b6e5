import { connect, createServer, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { B } from '../protocol/codes.js';
import { cancelRequest } from '../protocol/frontend-messages.js';
import { errorOf, msg, RawClient, rowOf, tagOf, types } from '../testing/raw-client.js';
import { type Fixture, startFixture, untilRunning } from '../testing/sidecar-fixture.js';

describe('relay through the sidecar', () => {
  let fx: Fixture;
  beforeAll(async () => {
    fx = await startFixture();
    const c = await fx.client();
    await c.query('DROP TABLE IF EXISTS relay_t; CREATE TABLE relay_t (id int PRIMARY KEY, name text)');
    await c.end();
  });
  afterAll(() => fx.sidecar.close(1000));

  it('runs simple multi-statement and extended queries, with one audit event each', async () => {
    const c = await fx.client();
    const before = fx.audit.events.length;
    const r = await c.query('SELECT 1 AS one; SELECT 2 AS two');
    expect(Array.isArray(r) ? r.map((x) => x.rows[0]) : r).toEqual([{ one: 1 }, { two: 2 }]);
    const p = await c.query('SELECT $1::int + 1 AS n, current_user AS u', [41]);
    expect(p.rows).toEqual([{ n: 42, u: 'app_scram' }]);
    const events = (fx.audit.events.slice(before) as any[]).filter((e) => e.type === 'statement');
    expect(events.map((e) => [e.statement.text, e.result.tag, e.result.rows])).toEqual([
      ['SELECT 1 AS one; SELECT 2 AS two', 'SELECT 1', 2],
      ['SELECT $1::int + 1 AS n, current_user AS u', 'SELECT 1', 1],
    ]);
    expect(events[1].session.seq).toBe(events[0].session.seq + 1);
    await c.end();
  });

  it('pipelines named and unnamed statements and portals before one Sync', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    client.send(
      msg.parse('s1', 'SELECT $1::int * 2 AS d'),
      msg.parse('', 'SELECT generate_series(1, $1::int) AS g'),
      msg.describe('S', 's1'),
      msg.bind('p1', 's1', ['21']),
      msg.bind('', '', ['5']),
      msg.describe('P', 'p1'),
      msg.execute('p1'),
      msg.execute('', 2),
      msg.execute('', 0),
      msg.close('P', 'p1'),
      msg.close('S', 's1'),
      msg.flush(),
      msg.sync(),
    );
    const m = await client.untilReady();
    expect(types(m)).toBe('1 1 t T 2 2 T D C D D s D D D C 3 3 Z');
    const rows = m.filter((x) => x.type === B.DataRow).map((x) => rowOf(x)[0]);
    expect(rows).toEqual(['42', '1', '2', '3', '4', '5']);
    expect(m.filter((x) => x.type === B.CommandComplete).map(tagOf)).toEqual(['SELECT 1', 'SELECT 3']);
    client.close();
  });

  it('passes PostgreSQL errors through unchanged, skips to Sync, and keeps the session usable', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    client.send(msg.query('SELECT 1;\nSELECT nosuchcolumn FROM relay_t'));
    const m = await client.untilReady();
    expect(types(m)).toBe('T D C E Z');
    const e = errorOf(m[3]);
    expect([e.get('S'), e.get('C'), e.get('M'), e.get('P')]).toEqual([
      'ERROR',
      '42703',
      'column "nosuchcolumn" does not exist',
      '18',
    ]);
    client.send(
      msg.parse('', 'SELECT 1/g FROM generate_series(0, 0) g'),
      msg.bind('', ''),
      msg.execute(''),
      msg.parse('', 'SELECT 1'),
      msg.bind('', ''),
      msg.execute(''),
      msg.sync(),
    );
    const m2 = await client.untilReady();
    expect(types(m2)).toBe('1 2 E Z');
    expect(errorOf(m2[2]).get('C')).toBe('22012');
    client.send(msg.query('SELECT 7'));
    expect(rowOf((await client.untilReady()).find((x) => x.type === B.DataRow)!)).toEqual(['7']);
    client.close();
  });

  it('tracks the transaction status from ReadyForQuery', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    const status = async (sql: string) => {
      client.send(msg.query(sql));
      const m = await client.untilReady();
      return String.fromCharCode(m[m.length - 1].buf[5]);
    };
    expect(await status('BEGIN')).toBe('T');
    expect(await status('SELECT 1/0')).toBe('E');
    expect(await status('SELECT 1')).toBe('E');
    expect(await status('ROLLBACK')).toBe('I');
    client.close();
  });

  it('copies in and out', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    client.send(msg.query('COPY relay_t FROM STDIN'));
    expect(types(await client.until(B.CopyInResponse))).toBe('G');
    client.send(msg.copyData('1\tone\n2\ttwo\n'), msg.copyData('3\tthree\n'), msg.copyDone());
    const m = await client.untilReady();
    expect(tagOf(m[0])).toBe('COPY 3');
    client.send(msg.query('COPY (SELECT * FROM relay_t ORDER BY id) TO STDOUT'));
    const out = await client.untilReady();
    expect(types(out)).toBe('H d d d c C Z');
    expect(
      out
        .filter((x) => x.type === B.CopyData)
        .map((x) => x.buf.toString('utf8', 5))
        .join(''),
    ).toBe('1\tone\n2\ttwo\n3\tthree\n');
    client.send(msg.query('COPY relay_t FROM STDIN'));
    await client.until(B.CopyInResponse);
    client.send(msg.copyData('9\tnine\n'), msg.copyFail('client gave up'));
    const f = await client.untilReady();
    expect(errorOf(f[0]).get('C')).toBe('57014');
    client.close();
  });

  it('runs COPY through the extended protocol and answers Flush without Sync', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    client.send(msg.parse('', 'COPY relay_t FROM STDIN'), msg.bind('', ''), msg.execute(''), msg.flush());
    expect(types(await client.until(B.CopyInResponse))).toBe('1 2 G');
    client.send(msg.copyData('20\ttwenty\n'), msg.copyDone(), msg.sync());
    const m = await client.untilReady();
    expect([types(m), tagOf(m[0])]).toEqual(['C Z', 'COPY 1']);
    client.send(
      msg.parse('', 'SELECT name FROM relay_t WHERE id = $1'),
      msg.bind('', '', ['20']),
      msg.execute(''),
      msg.flush(),
    );
    const flushed = await client.until(B.CommandComplete);
    expect(rowOf(flushed[2])).toEqual(['twenty']);
    client.send(msg.sync());
    expect(types(await client.untilReady())).toBe('Z');
    client.close();
  });

  it('relays LISTEN/NOTIFY, notices and ParameterStatus', async () => {
    const listener = await fx.client();
    const notes: Array<{ channel: string; payload?: string }> = [];
    listener.on('notification', (n) => notes.push({ channel: n.channel, payload: n.payload }));
    await listener.query('LISTEN relay_chan');
    const talker = await fx.client();
    await talker.query("NOTIFY relay_chan, 'hello there'");
    await new Promise((r) => setTimeout(r, 100));
    expect(notes).toEqual([{ channel: 'relay_chan', payload: 'hello there' }]);
    const notices: string[] = [];
    talker.on('notice', (n) => notices.push(n.message));
    await talker.query("DO $$BEGIN RAISE NOTICE 'careful: %', 42; END$$");
    expect(notices).toEqual(['careful: 42']);
    const { client } = await RawClient.startup(fx.sidecar.port);
    client.send(msg.query("SET application_name = 'renamed'"));
    const m = await client.untilReady();
    expect(types(m)).toBe('C S Z');
    expect(m[1].buf.toString('utf8', 5)).toBe('application_name\0renamed\0');
    client.close();
    await listener.end();
    await talker.end();
  });

  it('a session notifying itself sees its own process id in the notification, as directly on PostgreSQL', async () => {
    // Clients tell their own notifications from others' by comparing the NotificationResponse's process id with
    // BackendKeyData's (node-postgres `client.processID`, libpq PQbackendPID). The proxy hands out its own
    // BackendKeyData, so the upstream pid in self-notifications must become that one; others' pids are left alone.
    const self = await fx.client();
    const other = await fx.client();
    const seen: Array<{ pid: number; payload?: string }> = [];
    self.on('notification', (n) => seen.push({ pid: n.processId, payload: n.payload }));
    await self.query('LISTEN self_chan');
    await self.query("NOTIFY self_chan, 'mine'");
    await other.query("NOTIFY self_chan, 'theirs'");
    await new Promise((r) => setTimeout(r, 100));
    const ownPid = (self as unknown as { processID: number }).processID;
    const otherPid = (other as unknown as { processID: number }).processID;
    const upstreamPid = Number((await other.query('SELECT pg_backend_pid() AS p')).rows[0].p);
    expect(seen).toEqual([
      { pid: ownPid, payload: 'mine' },
      { pid: upstreamPid, payload: 'theirs' },
    ]);
    expect(otherPid).not.toBe(upstreamPid); // the proxy's key, not PostgreSQL's
    await self.end();
    await other.end();
  });

  it('relays FunctionCall', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    client.send(msg.query("SELECT 'int4pl'::regproc::oid"));
    const oid = Number(rowOf((await client.untilReady()).find((x) => x.type === B.DataRow)!)[0]);
    client.send(msg.functionCall(oid, ['40', '2']));
    const m = await client.untilReady();
    expect(types(m)).toBe('V Z');
    expect(m[0].buf.toString('utf8', 9)).toBe('42');
    client.close();
  });

  it('cancels a running statement with the proxy key (57014)', async () => {
    const { client, messages } = await RawClient.startup(fx.sidecar.port);
    const key = messages.find((x) => x.type === B.BackendKeyData)!;
    client.send(msg.query('SELECT pg_sleep(20) /* cancel-me */'));
    await untilRunning(fx, '/* cancel-me */');
    const canceller = await RawClient.open(fx.sidecar.port);
    canceller.send(cancelRequest(key.buf.readInt32BE(5), key.buf.readInt32BE(9)));
    await canceller.closed();
    const t0 = Date.now();
    const m = await client.untilReady();
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(errorOf(m.find((x) => x.type === B.ErrorResponse)!).get('C')).toBe('57014');
    // A wrong secret cancels nothing. Under the full suite's load the first statement after the cancel above was,
    // twice in many runs, cancelled too (57014), although the wrong key is refused before anything is sent to
    // PostgreSQL (CancelRegistry, unit-tested). That is PostgreSQL's own race: the postmaster's cancel child
    // signals the backend twice, SIGINT to its pid and then to its process group (postmaster.c signal_child,
    // "signaling the child twice will not cause any problems"). When that child is descheduled between the two
    // kill()s, the first ends the statement above and the second arrives once the next one runs. The sidecar waits
    // for the child to close the cancel connection, so both signals are sent before the client's cancel
    // connection closes (cancel-wait.test.ts), but not that the second has been handled. So the check runs a second
    // time when the first is cancelled: a stray signal is spent on one statement, while a wrong key that did cancel
    // would cancel both runs.
    const wrongKeyRun = async () => {
      client.send(msg.query('SELECT pg_sleep(0.5), 1'));
      const bad = await RawClient.open(fx.sidecar.port);
      bad.send(cancelRequest(key.buf.readInt32BE(5), key.buf.readInt32BE(9) ^ 1));
      await bad.closed();
      const after = await client.untilReady();
      const err = after.find((x) => x.type === B.ErrorResponse);
      return { types: types(after), why: err && [...errorOf(err)].join(' ') };
    };
    let run = await wrongKeyRun();
    if (run.types !== 'T D C Z') run = await wrongKeyRun();
    expect(run.types, run.why).toBe('T D C Z');
    client.close();
  });

  it('relays the upstream FATAL when its backend is terminated, and keeps serving new sessions', async () => {
    const victim = await fx.client({ application_name: 'victim' });
    const errors: string[] = [];
    victim.on('error', (e: Error & { code?: string }) => errors.push(e.code ?? e.message));
    const admin = await fx.client();
    await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'victim'");
    // The FATAL arrives either while idle ('error' event) or as the answer to the next query, depending on timing.
    const rejected = await victim.query('SELECT 1').catch((e: Error & { code?: string }) => e.code ?? e.message);
    expect([errors[0], rejected]).toContain('57P01');
    // The session's end is recorded by its cause (the SQLSTATE only: a FATAL's message may hold data), not as a
    // connection that merely closed.
    const ended = async () =>
      (fx.audit.events as any[]).filter(
        (e) => e.type === 'session.end' && e.end?.error === 'upstream ended the session (FATAL 57P01)',
      ).length;
    for (let i = 0; i < 200 && (await ended()) === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(await ended()).toBe(1);
    expect((await admin.query('SELECT 1 AS ok')).rows).toEqual([{ ok: 1 }]);
    const fresh = await fx.client();
    expect((await fresh.query('SELECT 2 AS ok')).rows).toEqual([{ ok: 2 }]);
    await admin.end();
    await fresh.end();
  });

  it('ends the upstream session on Terminate', async () => {
    const { client, messages } = await RawClient.startup(fx.sidecar.port, {
      user: 'a',
      database: 'app',
      application_name: 'terminate-me',
    });
    expect(types(messages.slice(-1))).toBe('Z');
    client.send(msg.terminate());
    await client.closed();
    const c = await fx.client();
    for (let i = 0; i < 50; i++) {
      const r = await c.query(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'terminate-me'",
      );
      if (r.rows[0].n === 0) break;
      await new Promise((res) => setTimeout(res, 20));
    }
    expect(
      (await c.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'terminate-me'")).rows[0]
        .n,
    ).toBe(0);
    await c.end();
    await new Promise((r) => setTimeout(r, 50));
  });
});

describe('a FATAL whose connection close arrives after the client hung up', () => {
  // A tap between the sidecar and PostgreSQL that passes every byte but holds PostgreSQL's close for a second: the
  // client reads the relayed FATAL and hangs up first, as a loaded machine orders it now and then (CI once did).
  let tap: Server;
  let fx: Fixture;
  beforeAll(async () => {
    const pg = inject('pg');
    tap = createServer({ allowHalfOpen: true }, (side) => {
      const up = connect(pg.port, pg.host);
      side.on('error', () => up.destroy());
      up.on('error', () => side.destroy());
      side.pipe(up);
      up.on('data', (b: Buffer) => side.write(b));
      up.on('end', () => setTimeout(() => side.destroy(), 1000).unref());
      side.on('close', () => up.destroy());
    });
    await new Promise<void>((r) => tap.listen(0, '127.0.0.1', r));
    const port = (tap.address() as { port: number }).port;
    fx = await startFixture({
      upstream: { host: '127.0.0.1', port, database: pg.database, sslmode: 'disable', caFile: pg.caFile },
    });
  });
  afterAll(async () => {
    await fx.sidecar.close(1000);
    await new Promise((r) => tap.close(r));
  });

  it('records the session as ended by the FATAL, not by the client', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port, {
      user: 'agent',
      database: 'app',
      application_name: 'late-close',
    });
    const admin = await fx.client();
    await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'late-close'");
    const m = await client.next();
    expect(errorOf(m).get('C')).toBe('57P01');
    client.close();
    const events = fx.audit.events as any[];
    const id = events.find((e) => e.type === 'session.start' && e.client?.application === 'late-close')?.session.id;
    const mine = () => events.filter((e) => e.type === 'session.end' && e.session.id === id);
    for (let i = 0; i < 200 && mine().length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(id).toBeDefined();
    expect(mine().map((e) => e.end?.error)).toEqual(['upstream ended the session (FATAL 57P01)']);
    await admin.end();
  });
});
