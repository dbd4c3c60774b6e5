import { Ajv } from 'ajv';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditEventSchema } from '../../policy/src/index.js';
import { createGovernanceDb, type GovernanceDb } from './governance-db.js';
import { errorOf, examplePolicy, type Governed, startGoverned } from './governed-sidecar.js';

// guardrails.maxRowsAffected through the real sidecar, the real parser and PostgreSQL with node-postgres (simple
// protocol for plain queries, extended for parameterized ones): a write over the cap fails with 54000 and changes
// nothing, counting what triggers, cascades and writes inside a SELECT change; COPY FROM is denied before it runs.
let db: GovernanceDb;
let g: Governed;

beforeAll(async () => {
  db = await createGovernanceDb('rowsaffected');
  const p = examplePolicy('analyst-readonly.yaml');
  p.spec.role = db.roles.writer;
  p.spec.rules.push({
    name: 'write-orders',
    action: 'allow',
    statements: ['select', 'insert', 'update', 'delete'],
    tables: ['public.orders'],
  });
  p.spec.rules.push({
    name: 'archive',
    action: 'allow',
    statements: ['select'],
    functions: ['public.archive_orders'],
  });
  p.spec.guardrails.maxRowsAffected = 2;
  g = await startGoverned(db.name, p);
}, 60_000);
afterAll(async () => {
  await g?.close();
  await db?.drop();
});

const notes = async () =>
  (await db.su("SELECT count(*)::int AS n FROM orders WHERE note = 'touched'")).rows[0].n as number;

describe('guardrails.maxRowsAffected', () => {
  it('lets a write within the cap through and undoes one over it, with the simple and the extended protocol', async () => {
    const c = await g.client();
    expect((await c.query("UPDATE orders SET note = 'touched' WHERE id <= 2")).rowCount).toBe(2);
    expect(await notes()).toBe(2);
    const over = await errorOf(c, "UPDATE orders SET note = 'touched' WHERE id <= 10");
    expect(over).toMatchObject({
      code: '54000',
      message:
        'UPDATE would change 10 rows, more than the limit of 2 set by pgwarden (guardrails.maxRowsAffected); the change was rolled back',
    });
    expect(await notes()).toBe(2);
    // Parameterized: Parse/Bind/Execute/Sync.
    expect(await errorOf(c, 'UPDATE orders SET note = $1 WHERE id <= $2', ['touched', 20])).toMatchObject({
      code: '54000',
    });
    expect(await errorOf(c, 'DELETE FROM orders WHERE id > $1', [40])).toMatchObject({ code: '54000' });
    expect((await db.su('SELECT count(*)::int AS n FROM orders')).rows[0].n).toBe(50);
    // The session goes on, outside any transaction.
    expect((await c.query('SELECT count(*)::int AS n FROM orders')).rows).toEqual([{ n: 50 }]);
    const events = g.audit.events.filter((e) => e.type === 'statement' && e.result?.error?.code === '54000');
    expect(events).toHaveLength(3);
    expect(events[0]).toMatchObject({
      decision: { action: 'allow', rule: 'write-orders' },
      result: { tag: 'UPDATE 10', rows: 10 },
    });
  });

  it('inside a transaction the error fails it, so nothing of it can commit', async () => {
    const c = await g.client();
    await c.query('BEGIN');
    await c.query("UPDATE orders SET note = 'touched' WHERE id = 3");
    expect((await errorOf(c, "UPDATE orders SET note = 'touched' WHERE id > 3"))?.code).toBe('54000');
    expect((await errorOf(c, 'COMMIT'))?.code).toBeUndefined(); // COMMIT of a failed transaction reports ROLLBACK
    expect(await notes()).toBe(2);
  });

  it('postgres.js pipelining many writes on one connection: each is checked on its own, in order', async () => {
    const sql = postgres({ host: '127.0.0.1', port: g.port, user: 'agent', database: 'app', pass: 'unused', max: 1 });
    try {
      const runs = await Promise.allSettled(
        [11, 12, 13].flatMap((id) => [
          sql`UPDATE orders SET note = 'piped' WHERE id = ${id}`,
          sql`UPDATE orders SET note = 'piped' WHERE id > ${id}`,
        ]),
      );
      expect(runs.map((r) => (r.status === 'fulfilled' ? 'ok' : (r.reason as { code?: string }).code))).toEqual([
        'ok',
        '54000',
        'ok',
        '54000',
        'ok',
        '54000',
      ]);
      const piped = await db.su("SELECT array_agg(id ORDER BY id) AS ids FROM orders WHERE note = 'piped'");
      expect(piped.rows[0].ids).toEqual([11, 12, 13]);
    } finally {
      await sql.end();
    }
  });

  it('counts writes the tag does not (inside a SELECT); denies COPY FROM and transaction control in one Query with a write', async () => {
    const c = await g.client();
    const cte = await errorOf(c, 'WITH d AS (DELETE FROM orders WHERE id > 0 RETURNING 1) SELECT count(*) FROM d');
    expect(cte).toMatchObject({
      code: '54000',
      message: expect.stringMatching(/^The statement would change 50 rows counting those its triggers/),
    });
    expect(
      (await errorOf(c, 'WITH d AS (DELETE FROM orders WHERE id > $1 RETURNING 1) SELECT count(*) FROM d', [0]))?.code,
    ).toBe('54000');
    // Within the cap it runs and commits.
    const within = await c.query(
      "WITH u AS (UPDATE orders SET note = 'cte' WHERE id = 5 RETURNING 1) SELECT count(*)::int AS n FROM u",
    );
    expect(within.rows).toEqual([{ n: 1 }]);
    expect((await db.su("SELECT count(*)::int AS n FROM orders WHERE note = 'cte'")).rows[0].n).toBe(1);
    // COPY FROM is denied (here by the rules already; decide.test.ts shows the guardrail's own denial).
    expect((await errorOf(c, 'COPY orders (id) FROM STDIN'))?.code).toBe('42501');
    const control = await errorOf(c, "BEGIN; UPDATE orders SET note = 'touched' WHERE id = 4; COMMIT");
    expect(control?.message).toMatch(/send transaction control \(BEGIN, COMMIT, …\) as its own statement/);
    expect((await db.su('SELECT count(*)::int AS n FROM orders')).rows[0].n).toBe(50);
    expect(await notes()).toBe(2);
  });

  it('counts the rows a foreign-key cascade deletes, with node-postgres in both protocols', async () => {
    await db.su(`CREATE TABLE order_lines (id serial PRIMARY KEY, order_id int NOT NULL REFERENCES orders ON DELETE CASCADE);
      INSERT INTO order_lines (order_id) VALUES (45), (45), (45), (46)`);
    const c = await g.client();
    const simple = await errorOf(c, 'DELETE FROM orders WHERE id = 45');
    expect(simple).toMatchObject({
      code: '54000',
      message:
        'DELETE would change 4 rows counting those its triggers, foreign-key cascades and functions change (1 by the statement itself), more than the limit of 2 set by pgwarden (guardrails.maxRowsAffected); the change was rolled back',
    });
    expect((await errorOf(c, 'DELETE FROM orders WHERE id = $1', [45]))?.code).toBe('54000');
    const left = async () =>
      (await db.su('SELECT (SELECT count(*) FROM orders)::int AS o, (SELECT count(*) FROM order_lines)::int AS i'))
        .rows[0];
    expect(await left()).toEqual({ o: 50, i: 4 });
    // One order and its one item: 2 rows, within the cap; committed.
    expect((await c.query('DELETE FROM orders WHERE id = $1', [46])).rowCount).toBe(1);
    expect(await left()).toEqual({ o: 49, i: 3 });
    // A user-defined function's writes, called from a SELECT: the analysis cannot see them, the count does.
    await db.su(`CREATE FUNCTION archive_orders(above int) RETURNS int LANGUAGE sql AS
      'WITH d AS (DELETE FROM orders WHERE id > above RETURNING 1) SELECT count(*)::int FROM d';
      GRANT EXECUTE ON FUNCTION archive_orders(int) TO ${db.roles.writer}`);
    expect(await errorOf(c, 'SELECT archive_orders(40)')).toMatchObject({
      code: '54000',
      message: expect.stringMatching(/^The statement would change \d+ rows counting those its triggers/),
    });
    expect(await left()).toEqual({ o: 49, i: 3 });
    expect((await c.query('SELECT archive_orders($1) AS n', [49])).rows).toEqual([{ n: 1 }]);
    expect(await left()).toEqual({ o: 48, i: 3 });
    const events = g.audit.events.filter(
      (e) => e.type === 'statement' && e.statement?.text?.startsWith('DELETE FROM orders WHERE id ='),
    );
    expect(events.map((e) => e.result?.error?.code ?? e.result?.tag)).toEqual(['54000', '54000', 'DELETE 1']);
    // The trail says what each changed in all, the cascade included.
    expect(events.map((e) => e.result?.changed)).toEqual([4, 4, 2]);
    const validate = new Ajv({ allErrors: true }).compile(auditEventSchema);
    for (const e of events) expect(validate(e), JSON.stringify(validate.errors)).toBe(true);
  });
});
