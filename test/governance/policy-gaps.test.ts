import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { figureColname } from '../../policy/src/sql/output-names.js';
import { initSqlParser, parseSql } from '../../policy/src/sql/parser.js';
import { createGovernanceDb, type GovernanceDb } from './governance-db.js';
import { errorOf, examplePolicy, type Governed, startGoverned } from './governed-sidecar.js';

// Gaps of the policy engine closed through the real sidecar against PostgreSQL, under the example analyst policy.
let db: GovernanceDb;
let analyst: Governed;
let listed: Governed;

beforeAll(async () => {
  db = await createGovernanceDb('gaps');
  // User code PostgreSQL runs without a call in the text naming it: leak(orders) as `o.leak`, and lower(varchar),
  // which PostgreSQL prefers to pg_catalog.lower(text) for a varchar argument. Each leaves a row in read_log.
  await db.su(`CREATE FUNCTION public.leak(o public.orders) RETURNS text LANGUAGE sql
      AS $$ SELECT public.log_read('leak')::text $$;
    CREATE TABLE public.notes (v varchar);
    INSERT INTO public.notes VALUES ('A');
    CREATE FUNCTION public.lower(v varchar) RETURNS text LANGUAGE sql AS $$ SELECT public.log_read('lower')::text $$;
    GRANT ALL ON public.notes TO ${db.roles.analyst};
    CREATE TYPE public.pair AS (a int, b int);
    CREATE TABLE public.boxes (id int, p public.pair);
    INSERT INTO public.boxes VALUES (1, ROW(1, 2));
    GRANT ALL ON public.boxes TO ${db.roles.analyst}`);
  const a = examplePolicy('analyst-readonly.yaml');
  a.spec.role = db.roles.analyst;
  analyst = await startGoverned(db.name, a);
  listed = await startGoverned(db.name, {
    apiVersion: 'pgwarden.dev/v1alpha1',
    kind: 'DatabaseAccessPolicy',
    metadata: { name: 'listed', namespace: 'agents' },
    spec: {
      database: { host: 'unused', name: 'app' },
      role: db.roles.analyst,
      defaultAction: 'deny',
      rules: [
        {
          name: 'reads',
          action: 'allow',
          statements: ['select'],
          tables: ['public.*', 'pg_catalog.*', 'information_schema.*'],
          functions: ['pg_catalog.*', 'information_schema.*'],
        },
      ],
    },
  });
}, 60_000);
afterAll(async () => {
  await analyst?.close();
  await listed?.close();
  await db?.drop();
});

describe('user functions a rule with a functions list must cover', () => {
  it('t.f calls f(t) when t has no column f: denied unless listed, and nothing runs', async () => {
    const c = await listed.client();
    const before = await db.readCount();
    const err = await errorOf(c, 'SELECT o.leak FROM orders o LIMIT 1');
    expect(err?.code).toBe('42501');
    expect(err?.message).toBe(
      `pgwarden: statement denied by the default action: function "public.leak" is not in rule "reads"'s functions list`,
    );
    expect(await db.readCount()).toBe(before);
    // Columns are columns: the catalog says orders has id.
    expect((await c.query('SELECT o.id FROM orders o ORDER BY o.id LIMIT 1')).rows).toEqual([{ id: 1 }]);
    // psql's \d query names catalog columns through aliases.
    const d = await c.query(`SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c
      LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relname OPERATOR(pg_catalog.~) '^(orders)$' COLLATE pg_catalog.default
        AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 2, 3`);
    expect(d.rows.map((r) => r.relname)).toEqual(['orders']);
  });

  it('an unqualified built-in name a user function overloads is that user function', async () => {
    const c = await listed.client();
    const before = await db.readCount();
    const err = await errorOf(c, 'SELECT lower(v) AS l FROM notes');
    expect(err?.code).toBe('42501');
    expect(err?.message).toBe(
      `pgwarden: statement denied by the default action: function "public.lower" is not in rule "reads"'s functions list`,
    );
    expect(await db.readCount()).toBe(before);
    // Qualified, it is pg_catalog's.
    expect((await c.query('SELECT pg_catalog.lower(v) AS l FROM notes')).rows).toEqual([{ l: 'a' }]);
  });

  it('one another connection created during an idle spell counts for the first statement after it', async () => {
    const c = await listed.client();
    expect((await c.query('SELECT pg_catalog.upper(v) AS u FROM notes')).rows).toEqual([{ u: 'A' }]);
    // Idle past the catalog check interval (1 s): no check runs, the snapshot stays as it was.
    await new Promise((r) => setTimeout(r, 1_500));
    await db.su(`CREATE FUNCTION public.upper(v varchar) RETURNS text LANGUAGE sql
      AS $$ SELECT public.log_read('upper')::text $$`);
    try {
      const before = await db.readCount();
      const err = await errorOf(c, 'SELECT upper(v) AS u FROM notes');
      expect(err?.message).toBe(
        `pgwarden: statement denied by the default action: function "public.upper" is not in rule "reads"'s functions list`,
      );
      expect(await db.readCount()).toBe(before);
      // PostgreSQL runs the user's for a varchar.
      expect((await db.su('SELECT upper(v) AS u FROM notes')).rows).toEqual([{ u: 'true' }]);
    } finally {
      await db.su('DROP FUNCTION public.upper(varchar)');
    }
  });
});

describe('t.f on a CTE or subquery', () => {
  it('reads a column its targets name, without a catalog lookup deciding', async () => {
    const c = await listed.client();
    const rows = async (sql: string) => (await c.query(sql)).rows;
    expect(await rows('WITH x AS (SELECT id AS e FROM orders) SELECT x.e FROM x ORDER BY 1 LIMIT 1')).toEqual([
      { e: 1 },
    ]);
    expect(await rows('WITH x(a) AS (SELECT id FROM orders) SELECT x.a FROM x ORDER BY 1 LIMIT 1')).toEqual([{ a: 1 }]);
    expect(await rows('SELECT s.id FROM (SELECT id::int FROM orders) s ORDER BY 1 LIMIT 1')).toEqual([{ id: 1 }]);
  });

  it('calls a function another connection created since the catalog was loaded, and is denied unless listed', async () => {
    const c = await listed.client();
    expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]); // the session and its catalog are up
    // Another connection creates fresh(anyelement): `x.fresh` on a CTE without a column fresh runs it.
    await db.su(`CREATE FUNCTION public.fresh(r anyelement) RETURNS text LANGUAGE sql
      AS $$ SELECT public.log_read('fresh')::text $$`);
    try {
      const direct = await db.su('WITH x AS (SELECT 1 AS n) SELECT x.fresh FROM x');
      expect(direct.rows).toEqual([{ fresh: 'true' }]);
      const before = await db.readCount();
      for (const sql of [
        'WITH x AS (SELECT id AS n FROM orders) SELECT x.fresh FROM x',
        'WITH RECURSIVE x(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM x WHERE n < 2) SELECT x.fresh FROM x',
        'SELECT s.fresh FROM (SELECT id FROM orders) s',
        // A CTE named like the table hides it: its row, not orders', is fresh's argument.
        'WITH orders AS (SELECT 1 AS n) SELECT orders.fresh FROM orders',
        'SELECT (WITH y(v) AS (SELECT 1) SELECT y.fresh FROM y)',
      ]) {
        const err = await errorOf(c, sql);
        expect(err?.message, sql).toBe(
          `pgwarden: statement denied by the default action: function "public.fresh" is not in rule "reads"'s functions list`,
        );
      }
      expect(await db.readCount()).toBe(before);
    } finally {
      await db.su('DROP FUNCTION public.fresh(anyelement)');
    }
  });

  it('names outputs as PostgreSQL does (FigureColname), or not at all', async () => {
    const exprs = [
      'id',
      'o.id',
      'id::text',
      "'x'::varchar",
      '1',
      'id + 1',
      'upper(status)',
      'pg_catalog.lower(status)',
      'coalesce(status, id::text)',
      'nullif(id, 2)',
      'greatest(id, 2)',
      'least(id, 2)',
      'CASE WHEN id > 1 THEN 1 END',
      'CASE WHEN id > 1 THEN 1 ELSE id END',
      'ARRAY[id]',
      'ROW(id, status)',
      '(SELECT 1 AS z)',
      '(SELECT status FROM orders LIMIT 1)',
      'EXISTS (SELECT 1)',
      'ARRAY(SELECT 1)',
      '(ARRAY[id])[1]',
      '(o).id',
      'id IS NULL',
      'NOT true',
      'status COLLATE "C"',
      'current_date',
      'current_user',
      'localtimestamp(2)',
      'session_user',
      "xmlelement(name a, 'b')",
      "xmlconcat('<a/>', '<b/>')",
      '(1 + id)::text',
    ];
    const { fields } = await db.su(`SELECT ${exprs.join(', ')} FROM orders o LIMIT 0`);
    await initSqlParser();
    const tree = parseSql(`SELECT ${exprs.join(', ')} FROM orders o`);
    if (!tree.ok) throw new Error('unparsed');
    const targets = (tree.stmts[0].stmt as { SelectStmt: { targetList: { ResTarget: { val: unknown } }[] } }).SelectStmt
      .targetList;
    const ours = targets.map((t) => figureColname(t.ResTarget.val as never));
    const theirs = fields.map((f) => f.name);
    // Where figureColname names a target, it names it as PostgreSQL does; it names all of these.
    expect(ours).toEqual(theirs);
  });
});

describe('t.f where names are scoped', () => {
  it('a column list renames the first columns: `o.id` under `orders o(x)` calls id(o), denied unless listed', async () => {
    const c = await listed.client();
    await db.su(`CREATE FUNCTION public.id(o public.orders) RETURNS text LANGUAGE sql
      AS $$ SELECT public.log_read('id')::text $$`);
    try {
      const sql = 'SELECT o.id FROM orders o(x) LIMIT 1';
      expect((await db.su(sql)).rows).toEqual([{ id: 'true' }]); // PostgreSQL runs it
      const before = await db.readCount();
      const err = await errorOf(c, sql);
      expect(err?.message).toBe(
        `pgwarden: statement denied by the default action: function "public.id" is not in rule "reads"'s functions list`,
      );
      expect(await db.readCount()).toBe(before);
      // The list's names and the columns after it are columns.
      expect((await c.query('SELECT o.x, o.status FROM orders o(x) ORDER BY o.x LIMIT 1')).rows).toEqual([
        { x: 1, status: 'new' },
      ]);
    } finally {
      await db.su('DROP FUNCTION public.id(public.orders)');
    }
  });

  it('a CTE name means the CTE visible where the FROM item is, not a nested WITH’s of that name', async () => {
    const c = await listed.client();
    await db.su(`CREATE FUNCTION public.peek_any(r anyelement) RETURNS text LANGUAGE sql
      AS $$ SELECT public.log_read('peek_any')::text $$`);
    try {
      // `c.peek_any` names the outer c, which has no such column: PostgreSQL calls peek_any(c).
      const sql =
        'WITH c AS (SELECT 1 AS other) SELECT (WITH c AS (SELECT 1 AS peek_any) SELECT c.peek_any FROM orders LIMIT 1) AS v FROM c';
      expect((await db.su(sql)).rows).toEqual([{ v: 'true' }]);
      const before = await db.readCount();
      const err = await errorOf(c, sql);
      expect(err?.message).toBe(
        `pgwarden: statement denied by the default action: function "public.peek_any" is not in rule "reads"'s functions list`,
      );
      expect(await db.readCount()).toBe(before);
      // The other way round it is the outer c's column.
      const column =
        'WITH c AS (SELECT 1 AS peek_any) SELECT (WITH c AS (SELECT 1 AS other) SELECT c.peek_any FROM orders LIMIT 1) AS v FROM c';
      expect((await c.query(column)).rows).toEqual([{ v: 1 }]);
      expect(await db.readCount()).toBe(before);
    } finally {
      await db.su('DROP FUNCTION public.peek_any(anyelement)');
    }
  });
});

describe('a name the catalog snapshot does not know', () => {
  it('is looked up in the catalog before deciding: a function another connection just created is a call', async () => {
    const c = await listed.client();
    // `(c).f` on a composite is always a call, and `t.f` on a CTE over one table's `*` a call when the table has no
    // column f; `t.f` on a CTE over a join's `*`, or on a relation created since, is f's call only if f exists.
    const sqls = [
      'SELECT (p).fresh_call FROM boxes',
      'WITH x AS (SELECT * FROM orders) SELECT x.fresh_call FROM x LIMIT 1',
      'WITH x AS (SELECT * FROM orders JOIN boxes USING (id)) SELECT x.fresh_call FROM x LIMIT 1',
      'SELECT k.fresh_call FROM crates k',
    ];
    expect((await c.query('SELECT count(*)::int AS n FROM boxes')).rows).toEqual([{ n: 1 }]);
    await db.su(`CREATE TABLE public.crates (id int); INSERT INTO public.crates VALUES (1);
      GRANT ALL ON public.crates TO ${db.roles.analyst};
      CREATE FUNCTION public.fresh_call(r anyelement) RETURNS text LANGUAGE sql
        AS $$ SELECT public.log_read('fresh_call')::text $$`);
    try {
      // Past the checks' rate limit (one per 100 ms per database), so the next one starts after the CREATE.
      await new Promise((r) => setTimeout(r, 150));
      const before = await db.readCount();
      for (const sql of sqls) {
        const err = await errorOf(c, sql);
        expect(err?.message, sql).toBe(
          `pgwarden: statement denied by the default action: function "public.fresh_call" is not in rule "reads"'s functions list`,
        );
      }
      expect(await db.readCount()).toBe(before);
      // PostgreSQL runs it for each of them.
      for (const sql of sqls) expect((await db.su(sql)).rows, sql).toEqual([{ fresh_call: 'true' }]);
      // A name that is a column stays one: the new relation's column, now that the catalog knows it.
      expect((await c.query('SELECT k.id FROM crates k')).rows).toEqual([{ id: 1 }]);
    } finally {
      await db.su('DROP FUNCTION public.fresh_call(anyelement); DROP TABLE public.crates');
    }
  });
});

describe('denials by the default action', () => {
  it('say what no rule covered, to the client and in the audit event', async () => {
    const c = await analyst.client();
    const cases: [string, string][] = [
      ['COPY public.orders TO STDOUT', 'statement kind "copy" is not allowed by any rule'],
      [
        "SELECT * FROM hr.salaries WHERE amount > 'secret-literal'",
        'relation "hr.salaries" is not covered by any rule allowing select',
      ],
    ];
    for (const [sql, what] of cases) {
      const err = await errorOf(c, sql);
      expect(err?.code, sql).toBe('42501');
      expect(err?.message, sql).toBe(`pgwarden: statement denied by the default action: ${what}`);
      const e = analyst.audit.events.find((e) => e.type === 'statement' && e.statement?.text === sql);
      expect(e?.decision, sql).toMatchObject({ action: 'deny', code: '42501', reason: `default: ${what}` });
    }
  });
});
