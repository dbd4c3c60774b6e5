import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
    GRANT ALL ON public.notes TO ${db.roles.analyst}`);
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
