import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { B } from '../protocol/codes.js';
import { msg, RawClient } from '../testing/raw-client.js';
import { type Fixture, ROLE, startFixture } from '../testing/sidecar-fixture.js';
import { connectUpstream } from '../upstream/connect.js';
import type { RawMessage } from '../upstream/message-reader.js';

/**
 * Differential test: the same frontend bytes sent to PostgreSQL directly and through the sidecar (allow-all hooks)
 * must get the same backend bytes back, message for message, once startup is over (where BackendKeyData differs by
 * design). Each script runs in its own fresh session on both sides and uses temporary tables, so the two runs do
 * not see each other. What a client library would paper over (an extra message, a reordered notice, a changed error
 * field) shows here.
 */

/** One step: bytes to send, then read until `until` has been seen `times` times. */
interface Step {
  send: Buffer[];
  until?: number;
  times?: number;
}

const Z = B.ReadyForQuery;

/** Bind with every parameter and every result column in binary format (format code 1). */
function bindBinary(portal: string, statement: string, params: Buffer[]): Buffer {
  const parts = [Buffer.from(`${portal}\0${statement}\0`), i16(1), i16(1), i16(params.length)];
  for (const p of params) parts.push(int4(p.length), p);
  parts.push(i16(1), i16(1));
  const body = Buffer.concat(parts);
  const head = Buffer.alloc(5);
  head[0] = 0x42; // 'B'
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}
function i16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n);
  return b;
}
function int4(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
}
const q = (sql: string): Step => ({ send: [msg.query(sql)], until: Z });

const SCRIPTS: Record<string, Step[]> = {
  'simple query: several statements, an error in the middle stops the rest': [
    q('SELECT 1 AS one; SELECT 1/0; SELECT 2'),
    q("SELECT 'after' AS state"),
  ],
  'empty query and a comment-only query': [q(''), q('-- nothing'), q(';')],
  'syntax error with position, unknown column with hint': [
    q('SELEC 1'),
    q('CREATE TEMP TABLE d_t (id int PRIMARY KEY, name text)'),
    q('SELECT nmae FROM d_t'),
  ],
  'transaction status through BEGIN, an error and ROLLBACK; savepoints': [
    q('BEGIN'),
    q('CREATE TEMP TABLE d_tx (id int)'),
    q('SAVEPOINT s1'),
    q('SELECT * FROM nope'),
    q('ROLLBACK TO SAVEPOINT s1'),
    q('INSERT INTO d_tx VALUES (1), (2)'),
    q('SELECT 1/0'),
    q('SELECT 1'),
    q('ROLLBACK'),
  ],
  'notices and warnings, SET sends ParameterStatus': [
    q("DO $$BEGIN RAISE NOTICE 'n %', 1; RAISE WARNING 'w'; END$$"),
    q("SET application_name = 'differential'"),
    q('SET TIME ZONE UTC'),
    q('SHOW TimeZone'),
  ],
  'extended protocol: named statement reused, portal with row limit, Close, Describe': [
    {
      send: [
        // A subquery, not a temp table: RowDescription carries the table's OID, which differs per session.
        msg.parse(
          's1',
          'SELECT id, h FROM (SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 7) g) s WHERE id > $1 ORDER BY id',
        ),
        msg.describe('S', 's1'),
        msg.bind('p1', 's1', ['2']),
        msg.describe('P', 'p1'),
        msg.execute('p1', 2),
        msg.execute('p1', 2),
        msg.execute('p1', 0),
        msg.close('P', 'p1'),
        msg.bind('', 's1', ['5']),
        msg.execute('', 0),
        msg.close('S', 's1'),
        msg.sync(),
      ],
      until: Z,
    },
  ],
  'extended protocol: an error skips to Sync; the next Sync starts clean': [
    {
      send: [
        msg.parse('', 'SELECT 1/0'),
        msg.bind('', ''),
        msg.execute('', 0),
        msg.parse('never', 'SELECT 2'),
        msg.sync(),
        msg.parse('', 'SELECT 3 AS three'),
        msg.bind('', ''),
        msg.execute('', 0),
        msg.sync(),
      ],
      until: Z,
      times: 2,
    },
  ],
  // Not here: Execute of a portal the proxy did not see bound, a documented deviation (docs/protocol.md), below.
  'extended protocol errors: unknown statement, wrong parameter count, duplicate name': [
    { send: [msg.describe('S', 'missing'), msg.sync()], until: Z },
    { send: [msg.parse('two', 'SELECT $1::int + $2::int'), msg.bind('', 'two', ['1']), msg.sync()], until: Z },
    { send: [msg.parse('dup', 'SELECT 1'), msg.parse('dup', 'SELECT 2'), msg.sync()], until: Z },
  ],
  'Flush without Sync answers what is pending, then Sync': [
    {
      send: [msg.parse('f', 'SELECT 42'), msg.bind('', 'f'), msg.execute('', 0), msg.flush()],
      until: B.CommandComplete,
    },
    { send: [msg.sync()], until: Z },
  ],
  'COPY FROM STDIN (done and failed) and COPY TO STDOUT': [
    q('CREATE TEMP TABLE d_c (id int, name text)'),
    { send: [msg.query('COPY d_c FROM STDIN')], until: B.CopyInResponse },
    { send: [msg.copyData('1\tone\n2\ttwo\n'), msg.copyData('3\tthree\n'), msg.copyDone()], until: Z },
    { send: [msg.query('COPY d_c FROM STDIN')], until: B.CopyInResponse },
    { send: [msg.copyData('4\tfour\n'), msg.copyFail('client gave up')], until: Z },
    { send: [msg.query('COPY d_c FROM STDIN')], until: B.CopyInResponse },
    { send: [msg.copyData('not a number\tx\n'), msg.copyDone()], until: Z },
    q('COPY (SELECT * FROM d_c ORDER BY id) TO STDOUT'),
    q('COPY (SELECT id, name FROM d_c ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)'),
  ],
  'large and wide results, NULLs, binary-looking text': [
    q("SELECT g, repeat('x', g * 100), NULL::text, E'tab\\there' FROM generate_series(1, 300) g"),
  ],
  'COPY TO STDOUT in the middle of a multi-statement query': [q('SELECT 1; COPY (SELECT 2) TO STDOUT; SELECT 3')],
  'SQL PREPARE/EXECUTE, and a cursor with DECLARE/FETCH/MOVE/CLOSE in a transaction': [
    q('PREPARE pp(int) AS SELECT $1 + 1 AS answer'),
    q('EXECUTE pp(41)'),
    q('DEALLOCATE pp'),
    q('BEGIN'),
    q('DECLARE c CURSOR FOR SELECT g FROM generate_series(1, 5) g'),
    q('FETCH 2 FROM c'),
    q('MOVE 1 IN c'),
    q('FETCH ALL FROM c'),
    q('CLOSE c'),
    q('COMMIT'),
  ],
  'portals end with their transaction: Execute after Sync, and inside an explicit transaction': [
    { send: [msg.parse('', 'SELECT 1 AS x'), msg.bind('held', ''), msg.sync()], until: Z },
    { send: [msg.execute('held', 0), msg.sync()], until: Z },
    q('BEGIN'),
    { send: [msg.parse('', 'SELECT 2 AS y'), msg.bind('tx', ''), msg.sync()], until: Z },
    { send: [msg.execute('tx', 0), msg.sync()], until: Z },
    q('COMMIT'),
  ],
  'several Syncs in one write, Describe of an unnamed statement with parameters': [
    {
      send: [
        msg.parse('', 'SELECT $1::text || $2::text AS joined'),
        msg.describe('S', ''),
        msg.sync(),
        msg.bind('', '', ['a', 'b']),
        msg.execute('', 0),
        msg.sync(),
        msg.sync(),
      ],
      until: Z,
      times: 3,
    },
  ],
  'an error after some rows: in a SELECT and in a COPY TO STDOUT': [
    q('SELECT 10 / (g - 3) AS r FROM generate_series(1, 5) g'),
    q('COPY (SELECT 10 / (g - 3) FROM generate_series(1, 5) g) TO STDOUT'),
    {
      send: [
        msg.parse('', 'SELECT 10 / (g - 3) AS r FROM generate_series(1, 5) g'),
        msg.bind('', ''),
        msg.execute('', 0),
        msg.sync(),
      ],
      until: Z,
    },
  ],
  'binary parameters and binary results': [
    {
      send: [
        msg.parse('bin', 'SELECT $1::int4 + 1 AS n, $2::bytea AS b, now() IS NOT NULL AS t'),
        bindBinary('', 'bin', [int4(41), Buffer.from([0, 1, 2, 255])]),
        msg.describe('P', ''),
        msg.execute('', 0),
        msg.sync(),
      ],
      until: Z,
    },
  ],
  'FunctionCall (abs of int4)': [{ send: [msg.functionCall(1397 /* int4abs */, ['-7'])], until: Z }],
};

/**
 * Scripts whose ErrorResponses are compared without their F/L/R fields (source file, line, routine of the server
 * code that raised them): there the proxy sends its own Describe of a portal before an Execute that came without
 * one (to plan masking for its rows), so a portal that has gone raises the same SQLSTATE and message from
 * PostgreSQL's Describe code instead of its Execute code.
 */
const ERROR_LOCATION_MAY_DIFFER = new Set([
  'portals end with their transaction: Execute after Sync, and inside an explicit transaction',
]);

/** An ErrorResponse body without its F, L and R fields. */
function withoutLocation(body: string): string {
  return body
    .split('\0')
    .filter((f) => !/^[FLR]/.test(f))
    .join('\0');
}

describe('differential: PostgreSQL directly vs through the sidecar', () => {
  let fx: Fixture;
  const pg = inject('pg');
  beforeAll(async () => {
    fx = await startFixture();
  });
  afterAll(() => fx.sidecar.close(1000));

  async function run(client: RawClient, steps: Step[], ignoreLocation: boolean): Promise<string[]> {
    const out: string[] = [];
    for (const step of steps) {
      client.send(...step.send);
      for (let i = 0; i < (step.times ?? 1); i++) {
        const got: RawMessage[] = await client.until(step.until ?? Z, false);
        for (const m of got) {
          const body = m.buf.subarray(5).toString('latin1');
          const shown = ignoreLocation && m.type === B.ErrorResponse ? withoutLocation(body) : body;
          out.push(`${String.fromCharCode(m.type)} ${shown}`);
        }
      }
    }
    return out;
  }

  for (const [name, steps] of Object.entries(SCRIPTS)) {
    it(name, async () => {
      const up = await connectUpstream(
        { host: pg.host, port: pg.port, database: pg.database, sslmode: 'disable' },
        ROLE.scram,
        { application_name: 'pgwarden-differential' },
      );
      const direct = RawClient.fromSocket(up.socket);
      const { client: proxied } = await RawClient.startup(fx.sidecar.port, {
        user: 'agent',
        database: 'app',
        application_name: 'pgwarden-differential',
      });
      try {
        const ignoreLocation = ERROR_LOCATION_MAY_DIFFER.has(name);
        const want = await run(direct, steps, ignoreLocation);
        const got = await run(proxied, steps, ignoreLocation);
        expect(want.length).toBeGreaterThan(0);
        expect(got).toEqual(want);
      } finally {
        direct.close();
        proxied.close();
      }
    });
  }

  it('startup: the same ParameterStatus messages in the same order, then ReadyForQuery', async () => {
    const up = await connectUpstream(
      { host: pg.host, port: pg.port, database: pg.database, sslmode: 'disable' },
      ROLE.scram,
      { application_name: 'pgwarden-differential', client_encoding: 'UTF8', DateStyle: 'ISO, MDY' },
    );
    up.socket.destroy();
    const { client, messages } = await RawClient.startup(fx.sidecar.port, {
      user: 'agent',
      database: 'app',
      application_name: 'pgwarden-differential',
      client_encoding: 'UTF8',
      DateStyle: 'ISO, MDY',
    });
    client.close();
    const shown = messages.map((m) => String.fromCharCode(m.type)).join('');
    // AuthenticationOk, the parameters, BackendKeyData (the proxy's own key, by design), ReadyForQuery.
    expect(shown).toMatch(/^RS+KZ$/);
    const params = messages
      .filter((m) => m.type === B.ParameterStatus)
      .map((m) => m.buf.subarray(5).toString('utf8').split('\0').slice(0, 2) as [string, string]);
    expect(params).toEqual(up.parameters);
    expect(params.length).toBeGreaterThanOrEqual(10);
  });

  it('the one documented deviation: Execute of a portal the proxy did not see bound is refused (42501)', async () => {
    // PostgreSQL answers 34000 for a portal that does not exist, or runs a cursor made with SQL DECLARE; the proxy
    // cannot plan masking for rows it never saw described, so it refuses either way (docs/protocol.md). The error
    // takes the place of PostgreSQL's and the session stays in step: ReadyForQuery follows, as after any error.
    const { client } = await RawClient.startup(fx.sidecar.port, { user: 'agent', database: 'app' });
    try {
      client.send(msg.execute('nope', 0), msg.sync(), msg.query('SELECT 1 AS still_here'));
      const got = await client.untilReady(2);
      expect(got.map((m) => String.fromCharCode(m.type)).join(' ')).toBe('E Z T D C Z');
      expect(got[0].buf.subarray(5).toString('latin1')).toContain('C42501\0Mportal "nope" was not bound');
    } finally {
      client.close();
    }
  });
});
