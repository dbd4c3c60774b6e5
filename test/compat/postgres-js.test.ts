import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { SIDECAR_KINDS, type SidecarTarget, startSidecarTarget, uniqueName } from './through-sidecar.js';

// postgres.js pipelines: it writes many Parse/Bind/Execute/Sync batches on one connection before reading replies,
// so the sidecar must keep replies in order and never wait for a response before forwarding the next message.
const harness = inject('pg');

// Through the allow-all sidecar and through one started from a policy (through-sidecar.ts SIDECAR_KINDS).
describe.each(SIDECAR_KINDS)('postgres.js through %s', (_label, policySpec) => {
  let target: SidecarTarget;
  let sql: postgres.Sql;
  beforeAll(async () => {
    target = await startSidecarTarget(harness, { policySpec });
    sql = postgres({
      host: target.host,
      port: target.port,
      user: target.user,
      pass: target.password,
      database: target.database,
      max: 1,
      ssl: false,
      onnotice: () => {},
    });
  });
  afterAll(async () => {
    await sql?.end({ timeout: 5 });
    await target?.close();
  });

  it('pipelines 500 concurrent queries on one connection and keeps replies in order', async () => {
    const results = await Promise.all(
      Array.from({ length: 500 }, (_, i) => sql`SELECT ${i}::int AS i, pg_backend_pid() AS pid`),
    );
    expect(results.map((r) => r[0].i)).toEqual(Array.from({ length: 500 }, (_, i) => i));
    expect(new Set(results.map((r) => r[0].pid)).size).toBe(1);
  });

  it('commits sql.begin and rolls it back when the callback throws', async () => {
    const t = uniqueName('pgjs_tx');
    await sql.unsafe(`CREATE TABLE ${t} (id int)`);
    await sql.begin(async (tx) => {
      await tx`INSERT INTO ${tx(t)} VALUES (1)`;
      await tx.savepoint(async (sp) => {
        await sp`INSERT INTO ${sp(t)} VALUES (2)`;
      });
    });
    const failed = await sql
      .begin(async (tx) => {
        await tx`INSERT INTO ${tx(t)} VALUES (3)`;
        throw new Error('application changed its mind');
      })
      .catch((e) => e);
    expect(failed.message).toBe('application changed its mind');
    const dup = await sql.begin((tx) => [tx`INSERT INTO ${tx(t)} VALUES (4)`, tx`SELECT 1 / 0`]).catch((e) => e);
    expect(dup.code).toBe('22012');
    expect((await sql`SELECT array_agg(id ORDER BY id) AS ids FROM ${sql(t)}`)[0].ids).toEqual([1, 2]);
    await sql.unsafe(`DROP TABLE ${t}`);
  });

  it('runs an unsafe multi-statement string and returns each result', async () => {
    const results = await sql.unsafe("SELECT 1 AS a; SELECT 'two' AS b, 2 AS c; SELECT generate_series(1, 3) AS g");
    expect(results.length).toBe(3);
    expect([...results[0]]).toEqual([{ a: 1 }]);
    expect([...results[1]]).toEqual([{ b: 'two', c: 2 }]);
    expect([...results[2]].map((r: any) => r.g)).toEqual([1, 2, 3]);
  });

  it('streams a large result (200000 rows, ~22 MB) intact', async () => {
    const rows = await sql`SELECT g AS n, repeat(chr(65 + g % 26), 100) AS pad FROM generate_series(1, 200000) g`;
    expect(rows.length).toBe(200000);
    let sum = 0;
    for (const r of rows) sum += r.n;
    expect(sum).toBe((200000 * 200001) / 2);
    expect(rows[199999]).toEqual({ n: 200000, pad: String.fromCharCode(65 + (200000 % 26)).repeat(100) });
  });

  it('cancels a running query (57014) and the connection goes on', async () => {
    const q = sql`SELECT pg_sleep(30)`;
    const pending = q.catch((e) => e);
    await new Promise((r) => setTimeout(r, 300));
    q.cancel();
    const err = await pending;
    expect(err.code).toBe('57014');
    expect((await sql`SELECT 5 AS after`)[0].after).toBe(5);
  });
});
