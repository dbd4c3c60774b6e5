import { B } from '../protocol/codes.js';
import { type Credentials, connectUpstream, type UpstreamTarget } from '../upstream/connect.js';
import type { RawMessage } from '../upstream/message-reader.js';
import { msg, RawClient, typed } from './raw-client.js';

/**
 * Protocol scripts for differential tests: the same frontend bytes sent to PostgreSQL directly and through a
 * sidecar must get the same backend bytes back (sidecar/src/proxy/differential.test.ts with allow-all hooks,
 * test/governance/differential-policy.test.ts with a policy). Scripts use temporary objects only, so the runs of
 * one script do not see each other.
 */

/** One step: bytes to send, then read until `until` has been seen `times` times. */
export interface Step {
  send: Buffer[];
  until?: number;
  times?: number;
}

export const Z = B.ReadyForQuery;

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
/** A frontend message with a raw body: the framing is right, the body is what PostgreSQL may fail to read. */
const raw = (type: string, ...body: (string | Buffer)[]): Buffer =>
  typed(type, ...body.map((b) => (typeof b === 'string' ? Buffer.from(b, 'latin1') : b)));
const SERIES = 'SELECT g FROM generate_series(1, 3) g';
const LONG_STATEMENT = 'L'.repeat(5000);
const LONG_PORTAL = 'P'.repeat(5000);
/** Bind of `statement` to the unnamed portal, no parameters, text results. */
const bind0 = (statement = '') => msg.bind('', statement);

export const SCRIPTS: Record<string, Step[]> = {
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
  'extended protocol oddities: two statements in one Parse, an empty statement, a closed portal': [
    { send: [msg.parse('', 'SELECT 1; SELECT 2'), msg.sync()], until: Z },
    {
      send: [msg.parse('', ''), msg.bind('', ''), msg.describe('P', ''), msg.execute('', 0), msg.sync()],
      until: Z,
    },
    {
      send: [
        msg.parse('', 'SELECT 5 AS five'),
        msg.bind('c', ''),
        msg.execute('c', 0),
        msg.close('P', 'c'),
        msg.execute('c', 0),
        msg.sync(),
      ],
      until: Z,
    },
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
  'a portal bound before its transaction failed: Execute gets 25P02 from the Execute, a bound ROLLBACK still runs': [
    q('BEGIN'),
    // Never described by the client: the proxy would describe them itself to plan their rows.
    {
      send: [
        msg.parse('', 'SELECT g FROM generate_series(1, 3) g'),
        msg.bind('rows', ''),
        msg.parse('rb', 'ROLLBACK'),
        msg.bind('rb', 'rb'),
        msg.sync(),
      ],
      until: Z,
    },
    q('SELECT 1/0'),
    { send: [msg.execute('rows', 1), msg.sync()], until: Z },
    { send: [msg.execute('rb', 0), msg.sync()], until: Z },
    q('SELECT 2 AS after'),
  ],
  // The proxy describes a portal the client did not, ahead of its first Execute: pipelined behind what fails or ends
  // the portal's transaction, that Describe would take the error in place of the Execute, located in PostgreSQL's
  // Describe code (exec_describe_portal_message) rather than its Execute code.
  'an Execute pipelined behind a Query or a batch that fails its transaction block: 25P02 from the Execute': [
    q('BEGIN'),
    { send: [msg.parse('', SERIES), msg.bind('rows', ''), msg.sync()], until: Z },
    { send: [msg.query('SELECT 1/0'), msg.execute('rows', 1), msg.sync()], until: Z, times: 2 },
    q('ROLLBACK'),
    q('BEGIN'),
    { send: [msg.parse('', SERIES), msg.bind('rows', ''), msg.sync()], until: Z },
    {
      send: [msg.parse('', 'SELECT 1/0'), bind0(), msg.execute(''), msg.sync(), msg.execute('rows', 1), msg.sync()],
      until: Z,
      times: 2,
    },
    q('ROLLBACK'),
  ],
  "an Execute pipelined behind the Sync, Query or Execute that ends its portal's transaction: 34000 from the Execute": [
    {
      send: [msg.parse('', SERIES), msg.bind('gone', ''), msg.sync(), msg.execute('gone', 0), msg.sync()],
      until: Z,
      times: 2,
    },
    q('BEGIN'),
    { send: [msg.parse('', SERIES), msg.bind('tx', ''), msg.sync()], until: Z },
    { send: [msg.query('COMMIT'), msg.execute('tx', 0), msg.sync()], until: Z, times: 2 },
    q('BEGIN'),
    { send: [msg.parse('', SERIES), msg.bind('tx', ''), msg.sync()], until: Z },
    {
      send: [msg.parse('c', 'COMMIT'), msg.bind('c', 'c'), msg.execute('c'), msg.execute('tx', 0), msg.sync()],
      until: Z,
    },
  ],
  // The same, the statement that ends the transaction led by comments and whitespace, which PostgreSQL's lexer skips.
  'an Execute behind an Execute of a COMMIT, ROLLBACK or END led by comments: 34000 from the Execute': [
    ...['/* a /* nested */ comment */ COMMIT', '-- a line\n  ROLLBACK', '\n\t End', '/**/abort/**/'].flatMap((sql) => [
      q('BEGIN'),
      { send: [msg.parse('', SERIES), msg.bind('tx', ''), msg.sync()], until: Z },
      {
        send: [msg.parse('c', sql), msg.bind('c', 'c'), msg.execute('c'), msg.execute('tx', 0), msg.sync()],
        until: Z,
      },
      { send: [msg.close('S', 'c'), msg.sync()], until: Z },
    ]),
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
  'COPY FROM STDIN through the extended protocol': [
    q('CREATE TEMP TABLE d_xc (id int, name text)'),
    {
      send: [msg.parse('', 'COPY d_xc FROM STDIN'), msg.bind('', ''), msg.execute('', 0), msg.flush()],
      until: B.CopyInResponse,
    },
    { send: [msg.copyData('1\ta\n2\tb\n'), msg.copyDone(), msg.sync()], until: Z },
    q('SELECT count(*) FROM d_xc'),
  ],
  // PostgreSQL ignores Sync and Flush during COPY IN: libpq's PQexecParams sends Sync behind the Execute of a COPY,
  // and PQputCopyEnd another behind CopyDone. Only the second gets a ReadyForQuery.
  'COPY FROM STDIN through the extended protocol as libpq sends it: a Sync before the data and one after': [
    q('CREATE TEMP TABLE d_lc (a int, b text)'),
    {
      send: [
        msg.parse('', 'COPY d_lc FROM STDIN'),
        msg.bind('', ''),
        msg.describe('P', ''),
        msg.execute('', 0),
        msg.sync(),
      ],
      until: B.CopyInResponse,
    },
    { send: [msg.copyData('1\tx\n'), msg.copyDone(), msg.sync()], until: Z },
    { send: [msg.parse('', 'SELECT a, b FROM d_lc'), msg.bind('', ''), msg.execute('', 0), msg.sync()], until: Z },
    // All of it in one write, a Sync and a Flush among the data too; then bad data (the Syncs after the failure
    // are Syncs again: only the one after CopyDone here).
    {
      send: [
        msg.parse('', 'COPY d_lc FROM STDIN'),
        msg.bind('', ''),
        msg.execute('', 0),
        msg.sync(),
        msg.copyData('2\ty\n'),
        msg.flush(),
        msg.sync(),
        msg.copyData('3\tz\n'),
        msg.copyDone(),
        msg.sync(),
      ],
      until: Z,
    },
    {
      send: [msg.parse('', 'COPY d_lc FROM STDIN'), msg.bind('', ''), msg.execute('', 0), msg.sync()],
      until: B.CopyInResponse,
    },
    { send: [msg.copyData('not a number\tx\n'), msg.copyDone(), msg.sync()], until: Z },
    { send: [msg.parse('', 'SELECT count(*) FROM d_lc'), msg.bind('', ''), msg.execute('', 0), msg.sync()], until: Z },
  ],
  'COPY FROM STDIN by a simple Query with a Sync and a Flush among the data': [
    q('CREATE TEMP TABLE d_sc (a int, b text)'),
    { send: [msg.query('COPY d_sc FROM STDIN')], until: B.CopyInResponse },
    { send: [msg.copyData('1\tx\n'), msg.sync(), msg.flush(), msg.copyData('2\ty\n'), msg.copyDone()], until: Z },
    { send: [msg.query('SELECT 1; COPY d_sc FROM STDIN; SELECT 2')], until: B.CopyInResponse },
    { send: [msg.sync(), msg.copyData('3\tz\n'), msg.copyFail('no more')], until: Z },
    {
      send: [msg.parse('', 'SELECT a, b FROM d_sc ORDER BY a'), msg.bind('', ''), msg.execute('', 0), msg.sync()],
      until: Z,
    },
  ],
  'search_path, EXPLAIN, a holdable cursor across COMMIT, COMMIT AND CHAIN': [
    q('CREATE TEMP TABLE d_sp (id int)'),
    q('SET search_path = pg_temp, public'),
    q('INSERT INTO d_sp SELECT generate_series(1, 3)'),
    q('EXPLAIN (COSTS OFF) SELECT * FROM d_sp WHERE id = 2'),
    q('BEGIN ISOLATION LEVEL REPEATABLE READ'),
    // Not over the temp table: RowDescription carries a table's OID, which differs per session.
    q('DECLARE h CURSOR WITH HOLD FOR SELECT g AS id FROM generate_series(1, 3) g'),
    q('COMMIT AND CHAIN'),
    q('SHOW transaction_isolation'),
    q('COMMIT'),
    q('FETCH ALL FROM h'),
    q('CLOSE h'),
    // Not RESET: through a governed sidecar it returns to the pinned path, directly to the server's default.
    q('SET search_path = public'),
  ],
  'a notice between the results of a multi-statement query, and a long statement': [
    q("SELECT 1; DO $$BEGIN RAISE NOTICE 'between'; END$$; SELECT 2"),
    q(`SELECT count(*) FROM (VALUES ${Array.from({ length: 20_000 }, (_, i) => `(${i})`).join(', ')}) v(x)`),
  ],
  'FunctionCall (abs of int4)': [{ send: [msg.functionCall(1397 /* int4abs */, ['-7'])], until: Z }],
  // Malformed bodies (valid framing): PostgreSQL answers ERROR 08P01 and goes on; in the extended protocol it skips
  // to Sync. postgres.c reads each field through pqformat.c, and where that reading stops decides the message.
  'malformed simple-protocol bodies: a Query without its NUL, with bytes after it, empty; a short FunctionCall': [
    { send: [raw('Q', 'SELECT 1')], until: Z },
    { send: [raw('Q', 'SELECT 1\0SELECT 2\0')], until: Z },
    { send: [raw('Q')], until: Z },
    { send: [raw('F', Buffer.from([0, 0]))], until: Z },
    q('SELECT 1 AS still_here'),
    // Inside a transaction block the error fails the transaction, as any error does.
    q('BEGIN'),
    { send: [raw('Q', 'SELECT 1')], until: Z },
    q('SELECT 1'),
    { send: [raw('F', Buffer.from([0, 0]))], until: Z },
    q('ROLLBACK'),
  ],
  'malformed Parse bodies: name or SQL without its NUL, parameter types short or too many bytes': [
    { send: [raw('P', 'p1'), msg.sync()], until: Z },
    { send: [raw('P', 'p1\0SELECT 1'), msg.sync()], until: Z },
    { send: [raw('P', 'p1\0SELECT 1\0', Buffer.from([0])), msg.sync()], until: Z },
    // Two parameter types announced, one given; 0xffff is 65535 types to PostgreSQL, not -1.
    { send: [raw('P', 'p1\0SELECT $1\0', Buffer.from([0, 2, 0, 0, 0, 23])), msg.sync()], until: Z },
    { send: [raw('P', 'p1\0SELECT 1\0', Buffer.from([0xff, 0xff])), msg.sync()], until: Z },
    { send: [raw('P', 'p1\0SELECT 1\0', Buffer.from([0, 0]), 'x'), msg.sync()], until: Z },
    // None of them made p1; the unnamed statement made before them is still there.
    { send: [msg.parse('', 'SELECT 42 AS kept'), msg.sync()], until: Z },
    { send: [raw('P', '\0SELECT 1'), msg.sync()], until: Z },
    { send: [msg.describe('S', 'p1'), bind0(), msg.execute('', 0), msg.sync()], until: Z },
    { send: [bind0(), msg.execute('', 0), msg.sync()], until: Z },
  ],
  'malformed Bind, Describe, Close, Execute, Flush and Sync bodies': [
    { send: [msg.parse('', 'SELECT 7 AS seven'), raw('B', 'portal'), msg.sync()], until: Z },
    { send: [msg.parse('', 'SELECT 7 AS seven'), raw('B', 'p\0stmt'), msg.sync()], until: Z },
    // Bind's fields after the names are PostgreSQL's to read (the proxy passes them): count, value, end.
    { send: [msg.parse('', 'SELECT 7 AS seven'), raw('B', '\0\0', Buffer.from([0, 0, 0, 0])), msg.sync()], until: Z },
    {
      send: [msg.parse('', 'SELECT 7 AS seven'), raw('B', '\0\0', Buffer.alloc(6), 'x'), msg.sync()],
      until: Z,
    },
    { send: [msg.parse('', 'SELECT 7 AS seven'), raw('D', 'X\0'), msg.sync()], until: Z },
    { send: [raw('D'), msg.sync()], until: Z },
    { send: [raw('D', 'Sname'), msg.sync()], until: Z },
    { send: [raw('D', 'S\0x'), msg.sync()], until: Z },
    { send: [raw('D', 'Xname'), msg.sync()], until: Z },
    { send: [raw('C', 'Z\0'), msg.sync()], until: Z },
    { send: [raw('C'), msg.sync()], until: Z },
    { send: [raw('C', 'P\0', 'x'), msg.sync()], until: Z },
    { send: [raw('E', 'portal'), msg.sync()], until: Z },
    { send: [msg.parse('', 'SELECT 7 AS seven'), bind0(), raw('E', '\0', Buffer.from([0, 0])), msg.sync()], until: Z },
    { send: [raw('E', '\0', Buffer.alloc(4), 'x'), msg.sync()], until: Z },
    { send: [msg.parse('', 'SELECT 7 AS seven'), raw('H', 'x'), bind0(), msg.execute('', 0), msg.sync()], until: Z },
    // A Sync with a body fails, but is still the Sync: ReadyForQuery follows; in a block, the block is failed.
    { send: [msg.parse('', 'SELECT 7 AS seven'), raw('S', 'x')], until: Z },
    q('BEGIN'),
    { send: [raw('S', 'x')], until: Z },
    q('COMMIT'),
    { send: [msg.parse('', 'SELECT 8 AS eight'), bind0(), msg.execute('', 0), msg.sync()], until: Z },
  ],
  'a malformed message behind messages already upstream, and one PostgreSQL skips after an earlier error': [
    q('CREATE TEMP TABLE d_mal (a int)'),
    {
      send: [
        msg.parse('ins', 'INSERT INTO d_mal VALUES (1) RETURNING a'),
        msg.bind('', 'ins'),
        msg.execute('', 0),
        msg.parse('s1', 'SELECT 1 AS one'),
        raw('D', 'X\0'),
        // Skipped: neither s2 nor the portal is made, and the INSERT before them rolls back with the batch.
        msg.parse('s2', 'SELECT 2 AS two'),
        msg.bind('', 's1'),
        msg.execute('', 0),
        msg.flush(),
        msg.sync(),
      ],
      until: Z,
    },
    { send: [msg.bind('', 's1'), msg.execute('', 0), msg.bind('', 's2'), msg.sync()], until: Z },
    q('SELECT count(*) FROM d_mal'),
    {
      send: [
        msg.parse('', 'SELECT 1/0'),
        msg.bind('', ''),
        msg.execute('', 0),
        raw('D', 'X\0'),
        raw('P', 'p9\0SELECT 9'),
        raw('E', 'x'),
        raw('H', 'x'),
        msg.sync(),
      ],
      until: Z,
    },
    { send: [msg.describe('S', 'p9'), msg.sync()], until: Z },
    // Two malformed messages in one batch: only the first is read, the second skipped.
    { send: [raw('C', 'Z\0'), raw('Q', 'SELECT 1'), raw('D'), msg.sync()], until: Z },
    q('SELECT 3 AS after'),
  ],
  'DISCARD ALL: prepared statements gone, inside a transaction block (25001), through the extended protocol': [
    { send: [msg.parse('s1', 'SELECT 1'), msg.sync()] },
    q('DISCARD ALL'),
    { send: [msg.bind('', 's1'), msg.execute(''), msg.sync()] },
    q('BEGIN'),
    q('DISCARD ALL'),
    q('ROLLBACK'),
    { send: [msg.parse('', 'DISCARD ALL'), msg.bind('', ''), msg.execute(''), msg.sync()] },
  ],
  // DEALLOCATE ALL and DISCARD ALL drop the named statements only (DropAllPreparedStatements walks the hash of named
  // ones); the unnamed statement stays, here behind an Execute of a named one (a simple Query drops it anyway).
  'DEALLOCATE ALL and DISCARD ALL keep the unnamed statement': [
    {
      send: [
        msg.parse('', 'SELECT 1 AS kept'),
        msg.parse('d', 'DEALLOCATE ALL'),
        msg.bind('p', 'd'),
        msg.execute('p'),
        msg.sync(),
      ],
    },
    { send: [msg.bind('', ''), msg.execute(''), msg.sync()] },
    {
      send: [
        msg.parse('', 'SELECT 2 AS kept'),
        msg.parse('d', 'DISCARD ALL'),
        msg.bind('p', 'd'),
        msg.execute('p'),
        msg.sync(),
      ],
    },
    { send: [msg.bind('', ''), msg.execute(''), msg.sync()] },
    { send: [msg.bind('', 'd'), msg.sync()] },
  ],
  // A PREPARE of a name that exists fails (42P05): the protocol statement of that name stays, alone in a Query or
  // with other statements, ahead of the PREPARE or behind it.
  "a PREPARE of a protocol statement's name fails and the statement stays, in a multi-statement Query too": [
    { send: [msg.parse('s1', 'SELECT 1 AS still_s1'), msg.sync()] },
    q('PREPARE s1 AS SELECT 2'),
    { send: [msg.bind('', 's1'), msg.execute(''), msg.sync()] },
    q('SELECT 3 AS first; PREPARE s1 AS SELECT 4'),
    { send: [msg.bind('', 's1'), msg.execute(''), msg.sync()] },
    q('PREPARE s1 AS SELECT 5; SELECT 6'),
    { send: [msg.bind('', 's1'), msg.execute(''), msg.sync()] },
    q('BEGIN; PREPARE s1 AS SELECT 7; COMMIT'),
    q('ROLLBACK'),
    { send: [msg.bind('', 's1'), msg.execute(''), msg.sync()] },
  ],
  // PostgreSQL reads names of any length (pq_getmsgstring) and keys statements and portals on their first 63 bytes.
  'Bind with portal and statement names longer than 4 KiB, one past a read buffer, one never terminated': [
    {
      send: [
        msg.parse(LONG_STATEMENT, 'SELECT 1 AS long_names'),
        msg.bind(LONG_PORTAL, LONG_STATEMENT),
        msg.describe('P', LONG_PORTAL),
        msg.execute(LONG_PORTAL),
        msg.sync(),
      ],
    },
    {
      send: [
        msg.parse('', 'SELECT 2 AS longer'),
        msg.bind('Q'.repeat(100_000), ''),
        msg.execute('Q'.repeat(63)),
        msg.bind('', `${LONG_STATEMENT}${'x'.repeat(70_000)}`),
        msg.execute(''),
        msg.sync(),
      ],
    },
    { send: [raw('B', 'R'.repeat(6000)), msg.execute('R'.repeat(63)), msg.sync()] },
    { send: [raw('B', '\0', 'S'.repeat(9000)), msg.sync()] },
    q('SELECT 3 AS after'),
  ],
};

/**
 * Runs a script and returns what came back, one line per message (type letter and body). ErrorResponses are compared
 * whole, their F/L/R fields (the server's source file, line and routine) included: where the proxy answers for
 * PostgreSQL (an Execute of a portal it knows is gone) it passes on the server's own error for a stand-in.
 */
export async function runScript(client: RawClient, steps: Step[]): Promise<string[]> {
  const out: string[] = [];
  for (const step of steps) {
    client.send(...step.send);
    for (let i = 0; i < (step.times ?? 1); i++) {
      // Up to the awaited message, or a ReadyForQuery first (e.g. an error instead of CopyInResponse): what came is
      // compared either way, and the script does not hang.
      for (;;) {
        const m: RawMessage = await client.next();
        const body = m.buf.subarray(5).toString('latin1');
        out.push(`${String.fromCharCode(m.type)} ${body}`);
        if (m.type === (step.until ?? Z) || m.type === Z) break;
      }
    }
  }
  return out;
}

/**
 * Runs script `name` in a fresh session straight to PostgreSQL (as `credentials`, the sidecar's own login) and in a
 * fresh session through the sidecar on `sidecarPort`; returns both transcripts for the caller to compare.
 */
export async function runBoth(
  name: string,
  upstream: UpstreamTarget,
  credentials: Credentials,
  sidecarPort: number,
): Promise<{ direct: string[]; proxied: string[] }> {
  const steps = SCRIPTS[name];
  const params = { application_name: 'pgwarden-differential' };
  const up = await connectUpstream(upstream, credentials, params);
  const direct = RawClient.fromSocket(up.socket);
  let proxied: RawClient | undefined;
  try {
    proxied = (await RawClient.startup(sidecarPort, { user: 'agent', database: 'app', ...params })).client;
    return {
      direct: await runScript(direct, steps),
      proxied: await runScript(proxied, steps),
    };
  } finally {
    direct.close();
    proxied?.close();
  }
}

const bindRun = (portal: string, statement: string): Step => ({
  send: [msg.bind(portal, statement), msg.execute(portal), msg.sync()],
});

/**
 * Scripts whose answers are PostgreSQL's only when the verdicts name each statement's kind, as a policy's parser does
 * (sidecar/src/proxy/multi-statement-names.test.ts with kinds from the first word, test/governance/differential-
 * policy.test.ts with the real parser): a multi-statement Query whose DEALLOCATE, CLOSE or DECLARE failed or never ran
 * left those names in PostgreSQL, and the proxy must give them back; those that completed stay gone. Without kinds
 * the proxy keeps them forgotten (fails closed).
 */
export const NAME_SCRIPTS: Record<string, { steps: Step[] }> = {
  'DISCARD PLANS, TEMP and SEQUENCES leave prepared statements and portals, whatever their names': {
    steps: [
      { send: [msg.parse('temp', 'SELECT 1 AS t'), msg.parse('plans', 'SELECT 2 AS p'), msg.sync()] },
      q('DISCARD TEMP'),
      q('DISCARD PLANS; DISCARD SEQUENCES'),
      bindRun('', 'temp'),
      bindRun('', 'plans'),
      q('BEGIN'),
      { send: [msg.parse('', SERIES), msg.bind('temp', ''), msg.sync()] },
      q('DISCARD TEMP'),
      { send: [msg.execute('temp', 1), msg.sync()] },
      q('ROLLBACK'),
    ],
  },
  'a DEALLOCATE behind the failing statement never ran: the statement still binds': {
    steps: [
      { send: [msg.parse('s2', 'SELECT 2 AS b'), msg.sync()] },
      q('SELECT 1/0; DEALLOCATE s2'),
      bindRun('', 's2'),
    ],
  },
  'DEALLOCATEs ahead of, at and behind the failing one: only the first is gone': {
    steps: [
      { send: [msg.parse('a', 'SELECT 1 AS a'), msg.parse('b', 'SELECT 2 AS b'), msg.sync()] },
      q('DEALLOCATE a; DEALLOCATE nosuch; DEALLOCATE b'),
      bindRun('', 'a'),
      bindRun('', 'b'),
    ],
  },
  'a DEALLOCATE that completed stays done though the implicit transaction rolls back': {
    steps: [
      { send: [msg.parse('a', 'SELECT 1 AS a'), msg.parse('b', 'SELECT 2 AS b'), msg.sync()] },
      q('DEALLOCATE a; SELECT 1/0; DEALLOCATE b'),
      bindRun('', 'a'),
      bindRun('', 'b'),
    ],
  },
  'a CLOSE behind the failing statement never ran: the portal reads on after ROLLBACK TO': {
    steps: [
      q('BEGIN'),
      { send: [msg.parse('', SERIES), msg.bind('cur', ''), msg.sync()] },
      q('SAVEPOINT s'),
      q('SELECT 1/0; CLOSE cur'),
      q('ROLLBACK TO s'),
      { send: [msg.execute('cur', 1), msg.sync()] },
      q('ROLLBACK'),
    ],
  },
  'a DECLARE that fails on a portal of that name (42P03) leaves the portal': {
    steps: [
      q('BEGIN'),
      { send: [msg.parse('', SERIES), msg.bind('cur', ''), msg.sync()] },
      q('SAVEPOINT s'),
      q('SELECT 1; DECLARE cur CURSOR FOR SELECT 2'),
      q('ROLLBACK TO s'),
      { send: [msg.execute('cur', 1), msg.sync()] },
      q('ROLLBACK'),
    ],
  },
  'through the extended protocol: a DEALLOCATE skipped after an earlier error, a DECLARE that fails (42P03)': {
    steps: [
      { send: [msg.parse('a', 'SELECT 1 AS a'), msg.parse('d', 'DEALLOCATE a'), msg.sync()] },
      { send: [msg.parse('', 'SELECT 1/0'), bind0(), msg.execute(''), bind0('d'), msg.execute(''), msg.sync()] },
      bindRun('', 'a'),
      q('BEGIN'),
      { send: [msg.parse('', SERIES), msg.bind('cur', ''), msg.sync()] },
      q('SAVEPOINT s'),
      { send: [msg.parse('dc', 'DECLARE cur CURSOR FOR SELECT 2'), bind0('dc'), msg.execute(''), msg.sync()] },
      q('ROLLBACK TO s'),
      { send: [msg.execute('cur', 1), msg.sync()] },
      q('ROLLBACK'),
    ],
  },
  'a CLOSE that completed ahead of the failing statement: the portal is gone': {
    steps: [
      q('BEGIN'),
      { send: [msg.parse('', SERIES), msg.bind('cur', ''), msg.sync()] },
      q('SAVEPOINT s'),
      q('CLOSE cur; SELECT 1/0'),
      q('ROLLBACK TO s'),
      { send: [msg.execute('cur', 1), msg.sync()] },
      q('ROLLBACK'),
    ],
  },
};

/**
 * NAME_SCRIPTS with procedural code (DO, CALL) among the statements: what it closes or deallocates is not in its text
 * (a refcursor's name is a value, EXECUTE's text may be computed), so the proxy forgets names for it; only when it
 * never ran (behind the failing statement) can they come back, and a DO or CALL that ran removes no prepared
 * statement unless its text has an EXECUTE. Not run through a policy that withholds the messages of user-defined code.
 */
export const PROCEDURAL_NAME_SCRIPTS: Record<string, { steps: Step[] }> = {
  'a DO behind the failing statement never ran: statements and portals stay': {
    steps: [
      { send: [msg.parse('s2', 'SELECT 2 AS b'), msg.sync()] },
      q("SELECT 1/0; DO $$BEGIN RAISE NOTICE 'DEALLOCATE s2'; END$$"),
      bindRun('', 's2'),
      q('BEGIN'),
      { send: [msg.parse('', SERIES), msg.bind('cur', ''), msg.sync()] },
      q('SAVEPOINT s'),
      q("SELECT 1/0; DO $$DECLARE c refcursor := 'cur'; BEGIN CLOSE c; END$$"),
      q('ROLLBACK TO s'),
      { send: [msg.execute('cur', 1), msg.sync()] },
      q('ROLLBACK'),
    ],
  },
  'a CALL and a DO without EXECUTE that ran remove no statement: one behind the failure stays': {
    steps: [
      q('CREATE PROCEDURE pg_temp.nop() LANGUAGE plpgsql AS $$BEGIN END$$'),
      { send: [msg.parse('a', 'SELECT 1 AS a'), msg.parse('b', 'SELECT 2 AS b'), msg.sync()] },
      q('CALL pg_temp.nop(); SELECT 1/0; DEALLOCATE a'),
      bindRun('', 'a'),
      q('DO $$BEGIN END$$; DEALLOCATE a; SELECT 1/0; DEALLOCATE b'),
      bindRun('', 'a'),
      bindRun('', 'b'),
    ],
  },
  // After a DO or CALL ran, the proxy asks PostgreSQL which names are left (sidecar/src/proxy/names-check.ts): those
  // run on as in PostgreSQL, and nothing of the question shows (its rows, its statement, its savepoint).
  'a CALL that closes a cursor in a transaction block: the other portals read on, the savepoints are the client’s': {
    steps: [
      q('CREATE PROCEDURE pg_temp.close_it(c refcursor) LANGUAGE plpgsql AS $$BEGIN CLOSE c; END$$'),
      q('BEGIN'),
      { send: [msg.parse('', SERIES), msg.bind('p1', ''), msg.bind('p2', ''), msg.bind('p3', ''), msg.sync()] },
      q('SAVEPOINT mine'),
      q("CALL pg_temp.close_it('p1')"),
      { send: [msg.execute('p2', 1), msg.sync()] },
      q('SELECT name FROM pg_catalog.pg_cursors ORDER BY name'),
      // The CALL through the extended protocol, an Execute of another portal pipelined behind its Sync.
      {
        send: [
          msg.parse('cl', "CALL pg_temp.close_it('p2')"),
          msg.bind('', 'cl'),
          msg.execute(''),
          msg.sync(),
          msg.execute('p3', 2),
          msg.sync(),
        ],
        until: Z,
        times: 2,
      },
      { send: [msg.execute('p2', 1), msg.sync()] },
      q('ROLLBACK TO SAVEPOINT mine'),
      q('RELEASE SAVEPOINT mine'),
      q('ROLLBACK'),
    ],
  },
  'a CALL in a failed transaction block does not run: its portal answers 25P02, as any': {
    steps: [
      q('CREATE PROCEDURE pg_temp.close_it(c refcursor) LANGUAGE plpgsql AS $$BEGIN CLOSE c; END$$'),
      q('BEGIN'),
      { send: [msg.parse('', SERIES), msg.bind('p', ''), msg.sync()] },
      q('SELECT 1/0'),
      q("CALL pg_temp.close_it('p')"),
      { send: [msg.execute('p', 1), msg.sync()] },
      q('ROLLBACK'),
    ],
  },
};

/**
 * Messages pipelined behind a DO or CALL in its own batch, before the Sync: the proxy asks PostgreSQL right there, once
 * the DO or CALL ran, and decides them with the names it has. Only with statement kinds (a policy's): without them a
 * CALL is seen to touch names only by keywords in its own text (sql-names.ts), and this one's has none.
 */
export const PIPELINED_NAME_SCRIPTS: Record<string, { steps: Step[] }> = {
  'messages pipelined behind a CALL before its Sync meet the portals PostgreSQL has, in and outside a block': {
    steps: [
      q('CREATE PROCEDURE pg_temp.close_it(c refcursor) LANGUAGE plpgsql AS $$BEGIN CLOSE c; END$$'),
      q('BEGIN'),
      { send: [msg.parse('', SERIES), msg.bind('p1', ''), msg.bind('p2', ''), msg.sync()] },
      {
        send: [
          msg.parse('c1', "CALL pg_temp.close_it('p1')"),
          bind0('c1'),
          msg.execute(''),
          msg.execute('p2', 2),
          msg.execute('p2', 1),
          msg.execute('p1', 1),
          msg.sync(),
        ],
      },
      q('ROLLBACK'),
      // Outside a transaction block: portals bound in the same batch, ahead of the CALL.
      {
        send: [
          msg.parse('', SERIES),
          msg.bind('p3', ''),
          msg.bind('p4', ''),
          msg.parse('c2', "CALL pg_temp.close_it('p4')"),
          bind0('c2'),
          msg.execute(''),
          msg.execute('p3', 0),
          msg.execute('p4', 0),
          msg.sync(),
        ],
      },
      // A DO that fails: PostgreSQL skips the rest of the batch, and so does the proxy.
      {
        send: [
          msg.parse('', SERIES),
          msg.bind('p5', ''),
          msg.parse('', 'DO $$BEGIN PERFORM 1/0; END$$'),
          bind0(),
          msg.execute(''),
          msg.execute('p5', 0),
          msg.sync(),
        ],
      },
      q('SELECT 1 AS after'),
    ],
  },
  // PL/pgSQL reaches the unnamed portal through a refcursor whose value is '': it moves it (FETCH) or closes it, but
  // cannot make another (OPEN fails while it exists, 42P03). pg_cursors lists it (a Bind's portals are visible, only
  // a simple Query's is not), so it comes back when left: its rows where left, PostgreSQL's 34000 where closed.
  "a DO moves or closes the unnamed portal through a refcursor named '', and cannot replace it": {
    steps: [
      q('BEGIN'),
      {
        send: [
          msg.parse('', SERIES),
          bind0(),
          msg.execute('', 1),
          msg.parse('f', "DO $$DECLARE c refcursor := ''; r record; BEGIN FETCH c INTO r; END$$"),
          msg.bind('pf', 'f'),
          msg.execute('pf'),
          msg.execute('', 1),
          msg.sync(),
        ],
      },
      {
        send: [
          msg.parse('o', "DO $$DECLARE c refcursor := ''; BEGIN OPEN c FOR SELECT 42; END$$"),
          msg.bind('po', 'o'),
          msg.execute('po'),
          msg.sync(),
        ],
      },
      q('ROLLBACK'),
      q('BEGIN'),
      // Never described nor run before the DO: the proxy describes it ahead of its first Execute, as any.
      {
        send: [msg.parse('', SERIES), bind0(), msg.bind('pf', 'f'), msg.execute('pf'), msg.execute('', 0), msg.sync()],
      },
      {
        send: [
          msg.parse('c', "DO $$DECLARE c refcursor := ''; BEGIN CLOSE c; END$$"),
          msg.bind('pc', 'c'),
          msg.execute('pc'),
          msg.execute('', 0),
          msg.sync(),
        ],
      },
      q('ROLLBACK'),
      // Never described nor run, closed by the DO; and asked about after the DO's Sync.
      q('BEGIN'),
      {
        send: [msg.parse('', SERIES), bind0(), msg.bind('pc', 'c'), msg.execute('pc'), msg.execute('', 0), msg.sync()],
      },
      q('ROLLBACK'),
      q('BEGIN'),
      { send: [msg.parse('', SERIES), bind0(), msg.bind('pf', 'f'), msg.execute('pf'), msg.sync()] },
      { send: [msg.execute('', 1), msg.sync()] },
      q('ROLLBACK'),
      // The DO run through the unnamed portal itself, executed again: it FETCHes from itself.
      { send: [bind0('f'), msg.execute(''), msg.execute(''), msg.sync()] },
    ],
  },
};

/**
 * Procedural code whose EXECUTE removes statements by a computed name: only PostgreSQL knows which are left, and the
 * proxy asks it (names-check.ts). Not run through a policy, which denies EXECUTE of a string in a DO (dynamic-sql).
 */
export const DYNAMIC_NAME_SCRIPTS: Record<string, { steps: Step[] }> = {
  'a DO that deallocates one statement through EXECUTE leaves the others usable (simple and extended protocol)': {
    steps: [
      {
        send: [
          msg.parse('a', 'SELECT 1 AS a'),
          msg.parse('b', 'SELECT 2 AS b'),
          msg.parse('c', 'SELECT 3 AS c'),
          msg.parse('d', "DO $$BEGIN EXECUTE 'DEALLOCATE ' || 'c'; END$$"),
          msg.sync(),
        ],
      },
      q("DO $$BEGIN EXECUTE 'DEALLOCATE ' || 'a'; END$$"),
      bindRun('', 'b'),
      bindRun('', 'a'),
      // The DO through the extended protocol, and the client's next batch pipelined behind its Sync.
      { send: [bind0('d'), msg.execute(''), msg.sync(), ...bindRun('', 'b').send], until: Z, times: 2 },
      bindRun('', 'c'),
      q('SELECT name, from_sql FROM pg_catalog.pg_prepared_statements ORDER BY name'),
    ],
  },
  'statements a DO deallocates through EXECUTE, used behind it in its batch before the Sync': {
    steps: [
      { send: [msg.parse('a', 'SELECT 1 AS a'), msg.parse('b', 'SELECT 2 AS b'), msg.sync()] },
      {
        send: [
          msg.parse('', "DO $$BEGIN EXECUTE 'DEALLOCATE ' || 'a'; END$$"),
          bind0(),
          msg.execute(''),
          bind0('b'),
          msg.execute(''),
          bind0('a'),
          msg.execute(''),
          msg.sync(),
        ],
      },
      bindRun('', 'b'),
      // In a transaction block, with a named portal of the statement left, bound before the DO.
      { send: [msg.parse('c', 'SELECT 3 AS c'), msg.sync()] },
      q('BEGIN'),
      { send: [msg.bind('pc', 'c'), msg.sync()] },
      {
        send: [
          msg.parse('', "DO $$BEGIN EXECUTE 'DEALLOCATE ' || 'b'; END$$"),
          bind0(),
          msg.execute(''),
          msg.execute('pc', 0),
          bind0('c'),
          msg.execute(''),
          bind0('b'),
          msg.execute(''),
          msg.sync(),
        ],
      },
      q('ROLLBACK'),
      q('SELECT name FROM pg_catalog.pg_prepared_statements ORDER BY name'),
    ],
  },
  'a DO in a failed transaction block does not run; the statements are usable again after ROLLBACK': {
    steps: [
      { send: [msg.parse('a', 'SELECT 1 AS a'), msg.sync()] },
      q('BEGIN'),
      { send: [msg.parse('', SERIES), msg.bind('p', ''), msg.sync()] },
      q('SELECT 1/0'),
      q("DO $$BEGIN EXECUTE 'DEALLOCATE a'; END$$"),
      { send: [msg.execute('p', 1), msg.sync()] },
      q('ROLLBACK'),
      bindRun('', 'a'),
    ],
  },
  'a DO that fails its transaction block after its EXECUTE removed a statement: the others usable after ROLLBACK': {
    steps: [
      { send: [msg.parse('a', 'SELECT 1 AS a'), msg.parse('b', 'SELECT 2 AS b'), msg.sync()] },
      q('BEGIN'),
      q("DO $$BEGIN EXECUTE 'DEALLOCATE a'; PERFORM 1/0; END$$"),
      q('SELECT 1'),
      { send: [msg.bind('', 'b'), msg.execute(''), msg.sync()] },
      q('ROLLBACK'),
      bindRun('', 'b'),
      bindRun('', 'a'),
    ],
  },
  'a DO that fails after its EXECUTE removed a statement: the others stay usable': {
    steps: [
      { send: [msg.parse('a', 'SELECT 1 AS a'), msg.parse('b', 'SELECT 2 AS b'), msg.sync()] },
      q("DO $$BEGIN EXECUTE 'DEALLOCATE a'; PERFORM 1/0; END$$"),
      bindRun('', 'b'),
      bindRun('', 'a'),
    ],
  },
};
