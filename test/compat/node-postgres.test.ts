import pg from 'pg';
import Cursor from 'pg-cursor';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { SIDECAR_KINDS, type SidecarTarget, startSidecarTarget, uniqueName } from './through-sidecar.js';

// node-postgres speaks the extended protocol for every parameterised query (Parse/Bind/Describe/Execute/Sync),
// named statements when given `name`, and portals with row limits for pg-cursor.
const harness = inject('pg');

// Through the allow-all sidecar and through one started from a policy (through-sidecar.ts SIDECAR_KINDS).
describe.each(SIDECAR_KINDS)('node-postgres (pg) through %s', (_label, policySpec) => {
  let target: SidecarTarget;
  const clients: pg.Client[] = [];

  async function connect(): Promise<pg.Client> {
    const c = new pg.Client({
      host: target.host,
      port: target.port,
      user: target.user,
      password: target.password,
      database: target.database,
    });
    await c.connect();
    clients.push(c);
    return c;
  }

  beforeAll(async () => {
    target = await startSidecarTarget(harness, { policySpec });
  });
  afterAll(async () => {
    await Promise.allSettled(clients.map((c) => c.end()));
    await target?.close();
  });

  it('prepares a named statement once and reuses it', async () => {
    const c = await connect();
    const q = (a: number, b: number) =>
      c.query({ name: 'add_two', text: 'SELECT $1::int + $2::int AS sum', values: [a, b] });
    expect((await q(1, 2)).rows).toEqual([{ sum: 3 }]);
    expect((await q(40, 2)).rows).toEqual([{ sum: 42 }]);
    const prepared = await c.query("SELECT name, statement FROM pg_prepared_statements WHERE name = 'add_two'");
    expect(prepared.rows).toEqual([{ name: 'add_two', statement: 'SELECT $1::int + $2::int AS sum' }]);
  });

  it('round-trips parameter and result types', async () => {
    const c = await connect();
    const when = new Date('2024-02-29T12:34:56.789Z');
    const bytes = Buffer.from([0, 1, 2, 254, 255]);
    const r = await c.query(
      `SELECT $1::int4 AS i, $2::int8 AS big, $3::text AS t, $4::bool AS b, $5::numeric AS n, $6::timestamptz AS ts,
              $7::jsonb AS j, $8::bytea AS bin, $9::int[] AS arr, $10::text AS nothing, $11::uuid AS u, $12::float8 AS f`,
      [
        -7,
        '9007199254740993',
        'héllo ✓ ',
        true,
        '12345.678901234567890',
        when,
        { a: [1, 'x'] },
        bytes,
        [1, 2, 3],
        null,
        'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
        0.1,
      ],
    );
    expect(r.rows[0]).toEqual({
      i: -7,
      big: '9007199254740993',
      t: 'héllo ✓ ',
      b: true,
      n: '12345.678901234567890',
      ts: when,
      j: { a: [1, 'x'] },
      bin: bytes,
      arr: [1, 2, 3],
      nothing: null,
      u: 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
      f: 0.1,
    });
    expect(r.fields.map((f) => f.dataTypeID)).toEqual([23, 20, 25, 16, 1700, 1184, 3802, 17, 1007, 25, 2950, 701]);
  });

  it('reports errors with SQLSTATE and position, and the connection stays usable', async () => {
    const c = await connect();
    const err = await c.query('SELECT id FROM no_such_relation_xyz WHERE id = $1', [1]).catch((e) => e);
    expect(err).toBeInstanceOf(pg.DatabaseError);
    expect(err.code).toBe('42P01');
    expect(err.position).toBe('16');
    expect(err.message).toBe('relation "no_such_relation_xyz" does not exist');
    const typed = await c.query('SELECT $1::int', ['not a number']).catch((e) => e);
    expect(typed.code).toBe('22P02');
    expect((await c.query('SELECT 1 AS ok')).rows).toEqual([{ ok: 1 }]);
  });

  it('reads a large result in batches with pg-cursor', async () => {
    const c = await connect();
    const cursor = c.query(new Cursor('SELECT g AS n, md5(g::text) AS h FROM generate_series(1, $1::int) g', [2500]));
    const read = (n: number) =>
      new Promise<any[]>((resolve, reject) =>
        cursor.read(n, (e: Error | null, rows: any[]) => (e ? reject(e) : resolve(rows))),
      );
    let total = 0;
    let sum = 0;
    let batches = 0;
    for (;;) {
      const rows = await read(300);
      if (rows.length === 0) break;
      batches++;
      total += rows.length;
      for (const r of rows) sum += r.n;
    }
    await new Promise<void>((resolve) => cursor.close(() => resolve()));
    expect(total).toBe(2500);
    expect(sum).toBe((2500 * 2501) / 2);
    expect(batches).toBe(Math.ceil(2500 / 300));
    expect((await c.query('SELECT 2 AS after')).rows).toEqual([{ after: 2 }]);
  });

  it('serves a pool of 10 clients running 200 concurrent queries', async () => {
    const pool = new pg.Pool({
      host: target.host,
      port: target.port,
      user: target.user,
      password: target.password,
      database: target.database,
      max: 10,
    });
    try {
      const results = await Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          pool.query('SELECT $1::int * 2 AS v, pg_backend_pid() AS pid, pg_sleep(0.005)', [i]),
        ),
      );
      expect(results.map((r) => r.rows[0].v)).toEqual(Array.from({ length: 200 }, (_, i) => i * 2));
      const pids = new Set(results.map((r) => r.rows[0].pid));
      expect(pids.size).toBe(10);
    } finally {
      await pool.end();
    }
  });

  it('rolls back a transaction and commits another', async () => {
    const c = await connect();
    const t = uniqueName('pg_tx');
    await c.query(`CREATE TABLE ${t} (id int)`);
    await c.query('BEGIN');
    await c.query(`INSERT INTO ${t} VALUES ($1), ($2)`, [1, 2]);
    await c.query('ROLLBACK');
    await c.query('BEGIN');
    await c.query(`INSERT INTO ${t} VALUES ($1)`, [3]);
    const failed = await c.query('SELECT 1 / 0').catch((e) => e);
    expect(failed.code).toBe('22012');
    const aborted = await c.query('SELECT 1').catch((e) => e);
    expect(aborted.code).toBe('25P02');
    await c.query('ROLLBACK');
    await c.query('BEGIN');
    await c.query(`INSERT INTO ${t} VALUES ($1)`, [4]);
    await c.query('COMMIT');
    expect((await c.query(`SELECT array_agg(id) AS ids FROM ${t}`)).rows).toEqual([{ ids: [4] }]);
    await c.query(`DROP TABLE ${t}`);
  });

  it('cancels a running pg_sleep with a real CancelRequest (57014)', async () => {
    const c = await connect();
    const started = Date.now();
    const sleeping = c.query('SELECT pg_sleep(30)').catch((e) => e);
    await new Promise((r) => setTimeout(r, 300));
    // What pg's Client#cancel does: a new connection carrying CancelRequest with the BackendKeyData the client
    // received (https://www.postgresql.org/docs/15/protocol-flow.html#id-1.10.6.7.9).
    const { processID, secretKey } = c as unknown as { processID: number; secretKey: number };
    const con = new (pg as any).Connection();
    con.on('connect', () => con.cancel(processID, secretKey));
    con.on('error', () => {});
    con.connect(target.port, target.host);
    const err = await sleeping;
    expect(err.code).toBe('57014');
    expect(err.message).toBe('canceling statement due to user request');
    expect(Date.now() - started).toBeLessThan(10_000);
    expect((await c.query('SELECT 3 AS after')).rows).toEqual([{ after: 3 }]);
  });
});
