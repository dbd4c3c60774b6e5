import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGovernanceDb, type GovernanceDb, loginBackend } from './governance-db.js';
import { errorOf, type Governed, startGoverned } from './governed-sidecar.js';

// Functions PostgreSQL runs without a call in the SQL text — an operator's, a cast's, a domain CHECK's, a
// trigger's — count as calls for blockedFunctions and functions lists, through the real sidecar against PostgreSQL.
// Each user function leaves a row in read_log, so a denial is shown to have kept it from running.
let db: GovernanceDb;
let blocked: Governed;
let listed: Governed;
let builder: Governed;

const policy = (name: string, spec: object) => ({
  apiVersion: 'pgwarden.dev/v1alpha1',
  kind: 'DatabaseAccessPolicy',
  metadata: { name, namespace: 'agents' },
  spec: { database: { host: 'unused', name: 'app' }, defaultAction: 'deny', ...spec },
});

beforeAll(async () => {
  db = await createGovernanceDb('implied');
  await db.su(`CREATE OPERATOR public.## (LEFTARG = int, RIGHTARG = bigint, FUNCTION = pg_terminate_backend);
    CREATE FUNCTION public.spy(int) RETURNS int LANGUAGE sql AS $$ SELECT public.log_read('spy')::int $$;
    CREATE OPERATOR public.%% (RIGHTARG = int, FUNCTION = public.spy);
    CREATE FUNCTION public.ok_lt(int, int) RETURNS boolean LANGUAGE sql AS $$ SELECT $1 < $2 $$;
    CREATE FUNCTION public.spy_gt(int, int) RETURNS boolean LANGUAGE sql AS $$ SELECT public.log_read('gt') AND $1 > $2 $$;
    CREATE OPERATOR public.<<< (LEFTARG = int, RIGHTARG = int, FUNCTION = public.ok_lt, COMMUTATOR = >>>);
    CREATE OPERATOR public.>>> (LEFTARG = int, RIGHTARG = int, FUNCTION = public.spy_gt, COMMUTATOR = <<<);
    CREATE FUNCTION public.spy_acc(int, int) RETURNS int LANGUAGE sql AS $$ SELECT public.log_read('acc')::int + $2 $$;
    CREATE AGGREGATE public.ok_tally(int) (SFUNC = public.spy_acc, STYPE = int, INITCOND = '0');
    CREATE AGGREGATE public.readit(bigint, bigint) (SFUNC = pg_read_file, STYPE = text, INITCOND = 'postgresql.conf');
    CREATE DOMAIN public.spied AS int CHECK (public.spy(VALUE) IS NOT NULL);
    CREATE TYPE public.label AS (v text);
    CREATE FUNCTION public.to_label(text) RETURNS public.label LANGUAGE sql
      AS $$ SELECT ROW(public.log_read('label')::text)::public.label $$;
    CREATE CAST (text AS public.label) WITH FUNCTION public.to_label(text);
    CREATE TABLE public.audited (id int);
    CREATE FUNCTION public.on_insert() RETURNS trigger LANGUAGE plpgsql
      AS $$ BEGIN PERFORM public.log_read('trigger'); RETURN NEW; END $$;
    CREATE FUNCTION public.spy_cat(int, text) RETURNS text LANGUAGE sql AS $$ SELECT public.log_read('cat')::text $$;
    CREATE TRIGGER spy BEFORE INSERT ON public.audited FOR EACH ROW EXECUTE FUNCTION public.on_insert();
    CREATE TABLE public.checked (n int CHECK (public.spy(n) IS NOT NULL));
    CREATE TABLE public.typed (n public.spied);
    GRANT ALL ON public.checked, public.typed TO ${db.roles.analyst};
    GRANT ALL ON public.audited TO ${db.roles.analyst}, ${db.roles.admin};
    GRANT pg_signal_backend TO ${db.roles.admin}`);
  // Signalling backends is let through as a dangerous category, so that only blockedFunctions stands in the way.
  blocked = await startGoverned(
    db.name,
    policy('blocked', {
      role: db.roles.admin,
      rules: [{ name: 'reads', action: 'allow', statements: ['select'], allowDangerous: ['signal-backend'] }],
      guardrails: { blockedFunctions: ['pg_catalog.pg_terminate_backend'] },
    }),
  );
  listed = await startGoverned(
    db.name,
    policy('listed', {
      role: db.roles.analyst,
      rules: [
        {
          name: 'reads',
          action: 'allow',
          statements: ['select'],
          functions: ['pg_catalog.*', 'information_schema.*', 'public.ok_*'],
        },
        {
          name: 'writes',
          action: 'allow',
          statements: ['insert'],
          tables: ['public.audited', 'public.checked', 'public.typed'],
          functions: ['pg_catalog.*'],
        },
      ],
    }),
  );
  // May create operators: the one it just created must count at once.
  builder = await startGoverned(
    db.name,
    policy('builder', {
      role: db.roles.analyst,
      rules: [
        { name: 'build', action: 'allow', statements: ['ddl'] },
        { name: 'reads', action: 'allow', statements: ['select'], functions: ['pg_catalog.*'] },
      ],
      guardrails: { blockDDL: false },
    }),
  );
}, 60_000);
afterAll(async () => {
  await builder?.close();
  await blocked?.close();
  await listed?.close();
  await db?.drop();
});

/** A backend of the sidecar's login that an operator over pg_terminate_backend could terminate. */
const victim = () => loginBackend(db.name);

describe('an operator runs its function', () => {
  it('a user operator over a blocked built-in is refused by blockedFunctions, and the backend lives', async () => {
    const v = await victim();
    try {
      const c = await blocked.client();
      const err = await errorOf(c, `SELECT ${v.pid} ## 0::bigint AS killed`);
      expect(err?.code).toBe('42501');
      expect(err?.message).toBe(
        'pgwarden: statement denied by guardrail blockedFunctions: function pg_catalog.pg_terminate_backend (run by operator ##)',
      );
      expect((await v.client.query('SELECT 1 AS ok')).rows).toEqual([{ ok: 1 }]);
      // Qualified, it is the same operator.
      expect((await errorOf(c, `SELECT ${v.pid} OPERATOR(public.##) 0::bigint`))?.code).toBe('42501');
      // Built-in operators cost nothing and are not affected.
      expect((await c.query('SELECT id + 1 AS n FROM orders WHERE id = 1 AND id IN (1, 2)')).rows).toEqual([{ n: 2 }]);
    } finally {
      await v.client.end().catch(() => undefined);
    }
  });

  it('a user operator over a user function needs that function in a functions list', async () => {
    const c = await listed.client();
    const before = await db.readCount();
    const err = await errorOf(c, 'SELECT %% 1 AS x');
    expect(err?.code).toBe('42501');
    expect(err?.message).toBe(
      `pgwarden: statement denied by the default action: function "public.spy" (run by operator %%) is not in rule "reads"'s functions list`,
    );
    expect(await db.readCount()).toBe(before);
    expect((await c.query('SELECT count(*)::int AS n FROM orders WHERE id BETWEEN 1 AND 3')).rows).toEqual([{ n: 3 }]);
  });

  it("an operator counts its commutator's function, which the planner may run in its place", async () => {
    const c = await listed.client();
    const err = await errorOf(c, 'SELECT 1 <<< 2 AS lt');
    expect(err?.message).toBe(
      `pgwarden: statement denied by the default action: function "public.spy_gt" (run by operator <<<) is not in rule "reads"'s functions list`,
    );
  });

  it('an operator of a built-in name created through the sidecar counts for the next statement', async () => {
    const c = await builder.client();
    // Decided once before, so the snapshot is loaded and the statement's decision cached: pg_catalog's
    // anynonarray || text.
    expect((await c.query("SELECT 1 || 'b'::text AS v")).rows).toEqual([{ v: '1b' }]);
    // An exact match for (int, text): PostgreSQL now picks it.
    await c.query('CREATE OPERATOR public.|| (LEFTARG = int, RIGHTARG = text, FUNCTION = public.spy_cat)');
    const before = await db.readCount();
    const err = await errorOf(c, "SELECT 1 || 'b'::text AS v");
    expect(err?.message).toBe(
      `pgwarden: statement denied by the default action: function "public.spy_cat" (run by operator ||) is not in rule "reads"'s functions list`,
    );
    expect(await db.readCount()).toBe(before);
  });

  it('an operator of a new name created through the sidecar counts for the next statement', async () => {
    const c = await builder.client();
    expect((await c.query('SELECT 1 + 1 AS n')).rows).toEqual([{ n: 2 }]);
    await c.query('CREATE OPERATOR public.%%% (RIGHTARG = int, FUNCTION = public.spy)');
    const before = await db.readCount();
    // The reload the DDL made due runs when the statement arrives: the unknown name waits for it.
    const err = await errorOf(c, 'SELECT %%% 1 AS x');
    expect(err?.message).toBe(
      `pgwarden: statement denied by the default action: function "public.spy" (run by operator %%%) is not in rule "reads"'s functions list`,
    );
    expect(await db.readCount()).toBe(before);
  });
});

describe('aggregates run their support functions', () => {
  it('a user aggregate over a user function needs that function in a functions list', async () => {
    const c = await listed.client();
    const before = await db.readCount();
    const err = await errorOf(c, 'SELECT ok_tally(id) AS t FROM orders');
    expect(err?.message).toBe(
      `pgwarden: statement denied by the default action: function "public.spy_acc" (run by aggregate public.ok_tally) is not in rule "reads"'s functions list`,
    );
    expect(await db.readCount()).toBe(before);
  });

  it('a user aggregate over a dangerous built-in is a dangerous operation', async () => {
    const c = await blocked.client();
    const err = await errorOf(c, 'SELECT readit(0, 100) AS conf');
    expect(err?.code).toBe('42501');
    expect(err?.message).toMatch(
      /^pgwarden: statement denied: pg_catalog\.pg_read_file\(\) \(run by aggregate public\.readit\) is a dangerous operation \(server-file-access\)/,
    );
  });
});

describe('casts and triggers run their functions', () => {
  it.each([
    ['a domain CHECK', 'SELECT 1::spied AS v', 'public.spy" (run by a cast to spied)'],
    ['a cast made WITH FUNCTION', "SELECT ('x'::text)::label AS v", 'public.to_label" (run by a cast to label)'],
  ])('%s needs its function in a functions list', async (_what, sql, fn) => {
    const c = await listed.client();
    const before = await db.readCount();
    const err = await errorOf(c, sql);
    expect(err?.message).toBe(
      `pgwarden: statement denied by the default action: function "${fn} is not in rule "reads"'s functions list`,
    );
    expect(await db.readCount()).toBe(before);
  });

  it.each([
    ['triggers', 'INSERT INTO audited VALUES (1)', 'public.on_insert" (run by writing public.audited)'],
    ['CHECK constraints', 'INSERT INTO checked VALUES (1)', 'public.spy" (run by writing public.checked)'],
    ["domain-typed columns' CHECKs", 'INSERT INTO typed VALUES (1)', 'public.spy" (run by writing public.typed)'],
  ])("a write runs the table's %s", async (_what, sql, fn) => {
    const c = await listed.client();
    const before = await db.readCount();
    const err = await errorOf(c, sql);
    expect(err?.message).toBe(
      `pgwarden: statement denied by the default action: function "${fn} is not in rule "writes"'s functions list`,
    );
    expect(await db.readCount()).toBe(before);
  });
});
