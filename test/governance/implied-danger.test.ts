import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGovernanceDb, type GovernanceDb, loginBackend } from './governance-db.js';
import { errorOf, type Governed, startGoverned, until } from './governed-sidecar.js';

// The dangerous categories apply under every policy, also to the functions PostgreSQL runs without a call in the text
// (an operator's, an aggregate's, a domain CHECK's): here under policies with no functions list, blockedFunctions or
// maxRowsAffected, through the real sidecar against PostgreSQL. The role may signal backends and read server files,
// so what pgwarden lets through would have run.
let db: GovernanceDb;
let plain: Governed;
let builder: Governed;

const policy = (name: string, spec: object) => ({
  apiVersion: 'pgwarden.dev/v1alpha1',
  kind: 'DatabaseAccessPolicy',
  metadata: { name, namespace: 'agents' },
  spec: { database: { host: 'unused', name: 'app' }, defaultAction: 'deny', ...spec },
});

beforeAll(async () => {
  db = await createGovernanceDb('impldanger');
  await db.su(`CREATE OPERATOR public.## (LEFTARG = int, RIGHTARG = bigint, FUNCTION = pg_terminate_backend);
    CREATE AGGREGATE public.readit(bigint, bigint) (SFUNC = pg_read_file, STYPE = text, INITCOND = 'postgresql.conf');
    CREATE DOMAIN public.victim AS int CHECK (VALUE ## 0::bigint);
    CREATE FUNCTION public.plus(int, int) RETURNS int LANGUAGE sql AS $$ SELECT $1 + $2 $$;
    CREATE OPERATOR public.<+> (LEFTARG = int, RIGHTARG = int, FUNCTION = public.plus);
    GRANT pg_signal_backend, pg_read_server_files TO ${db.roles.admin};
    GRANT EXECUTE ON FUNCTION lo_export(oid, text) TO ${db.roles.admin}`);
  plain = await startGoverned(
    db.name,
    policy('plain', {
      role: db.roles.admin,
      rules: [{ name: 'reads', action: 'allow', statements: ['select'], tables: ['public.*'] }],
    }),
  );
  builder = await startGoverned(
    db.name,
    policy('builder', {
      role: db.roles.admin,
      // Defining an operator over a dangerous function is itself one: allowed here, so that its use is what is refused.
      rules: [
        {
          name: 'build',
          action: 'allow',
          statements: ['ddl'],
          allowDangerous: ['signal-backend', 'large-object-file-io'],
        },
        { name: 'reads', action: 'allow', statements: ['select'] },
      ],
      guardrails: { blockDDL: false },
    }),
  );
}, 60_000);
afterAll(async () => {
  await builder?.close();
  await plain?.close();
  await db?.drop();
});

/** A backend of the sidecar's login that an operator over pg_terminate_backend could terminate. */
const victim = () => loginBackend(db.name);

describe('under a policy without function rules, dangerous functions run without a call are refused', () => {
  it('a user operator over pg_terminate_backend is refused, and the backend lives', async () => {
    const v = await victim();
    try {
      const c = await plain.client();
      const err = await errorOf(c, `SELECT ${v.pid} ## 0::bigint AS killed`);
      expect(err?.code).toBe('42501');
      expect(err?.message).toMatch(
        /^pgwarden: statement denied: pg_catalog\.pg_terminate_backend\(\) \(run by operator ##\) is a dangerous operation \(signal-backend\)/,
      );
      expect((await errorOf(c, `SELECT ${v.pid} OPERATOR(public.##) 0::bigint`))?.code).toBe('42501');
      expect((await v.client.query('SELECT 1 AS ok')).rows).toEqual([{ ok: 1 }]);
    } finally {
      await v.client.end().catch(() => undefined);
    }
  });

  it('a user aggregate over pg_read_file is refused', async () => {
    const c = await plain.client();
    const err = await errorOf(c, 'SELECT readit(0, 100) AS conf');
    expect(err?.code).toBe('42501');
    expect(err?.message).toMatch(
      /^pgwarden: statement denied: pg_catalog\.pg_read_file\(\) \(run by aggregate public\.readit\) is a dangerous operation \(server-file-access\)/,
    );
  });

  it('a domain CHECK using that operator is refused at a cast to the domain', async () => {
    const v = await victim();
    try {
      const c = await plain.client();
      const err = await errorOf(c, `SELECT ${v.pid}::victim AS v`);
      expect(err?.code).toBe('42501');
      expect(err?.message).toMatch(
        /^pgwarden: statement denied: pg_catalog\.pg_terminate_backend\(\) \(run by a cast to victim\) is a dangerous operation \(signal-backend\)/,
      );
      expect((await v.client.query('SELECT 1 AS ok')).rows).toEqual([{ ok: 1 }]);
    } finally {
      await v.client.end().catch(() => undefined);
    }
  });

  it('a user operator over a harmless function, and built-in operators, still run', async () => {
    const c = await plain.client();
    expect((await c.query('SELECT 2 <+> 3 AS n')).rows).toEqual([{ n: 5 }]);
    expect((await c.query('SELECT id + 1 AS n FROM orders WHERE id = 1 AND id IN (1, 2)')).rows).toEqual([{ n: 2 }]);
  });

  it('an operator created through the sidecar counts for the very next statement', async () => {
    const v = await victim();
    try {
      const c = await builder.client();
      // Decided once before, so the snapshot is loaded.
      expect((await c.query('SELECT 1 + 1 AS n')).rows).toEqual([{ n: 2 }]);
      await c.query('CREATE OPERATOR public.#! (LEFTARG = int, RIGHTARG = bigint, FUNCTION = pg_terminate_backend)');
      const err = await errorOf(c, `SELECT ${v.pid} #! 0::bigint AS killed`);
      expect(err?.code).toBe('42501');
      expect(err?.message).toMatch(/pg_terminate_backend\(\) \(run by operator #!\) is a dangerous operation/);
      // A name already known (`=`), with a definition for operand types pg_catalog's do not take.
      expect((await c.query('SELECT 1 = 1 AS t')).rows).toEqual([{ t: true }]);
      await c.query('CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = text, FUNCTION = lo_export)');
      expect((await errorOf(c, "SELECT 0::oid = '/tmp/x'::text AS t"))?.message).toMatch(
        /lo_export\(\) \(run by operator =\) is a dangerous operation \(large-object-file-io\)/,
      );
      expect((await v.client.query('SELECT 1 AS ok')).rows).toEqual([{ ok: 1 }]);
      // Where the definition's dangerous function is not allowed, the definition is refused: its use in the same
      // transaction would come before any catalog snapshot could show it.
      const defined = await errorOf(
        c,
        'CREATE AGGREGATE public.readit2(bigint, bigint) (SFUNC = pg_read_file, STYPE = text)',
      );
      expect(defined?.code).toBe('42501');
      expect(defined?.message).toMatch(
        /^pgwarden: statement denied: pg_read_file\(\) \(sfunc of aggregate public\.readit2\) is a dangerous operation \(server-file-access\)/,
      );
    } finally {
      await v.client.end().catch(() => undefined);
      // Every `=` of public would count lo_export from now on.
      await db.su('DROP OPERATOR IF EXISTS public.= (oid, text)');
    }
  });
});

describe('prepared statements', () => {
  it('are decided again once the catalog shows their operator redefined over a dangerous function', async () => {
    await db.su(`CREATE FUNCTION public.never(int, bigint) RETURNS boolean LANGUAGE sql AS $$ SELECT false $$;
      CREATE OPERATOR public.<#> (LEFTARG = int, RIGHTARG = bigint, FUNCTION = public.never)`);
    const c = await plain.client();
    // PID 1 is no backend: pg_terminate_backend(1) only warns, so an execution let through does no harm here.
    const q = { name: 'redefined', text: 'SELECT $1::int <#> 0::bigint AS v', values: [1] };
    expect((await c.query(q)).rows).toEqual([{ v: false }]);
    // Another connection: PostgreSQL plans the prepared statement again with the new operator.
    await db.su(`DROP OPERATOR public.<#> (int, bigint);
      CREATE OPERATOR public.<#> (LEFTARG = int, RIGHTARG = bigint, FUNCTION = pg_terminate_backend)`);
    const refused = await until(
      'an execution refused once the catalog check has seen the new operator',
      () =>
        c.query(q).then(
          () => undefined,
          (e: Error & { code?: string }) => e,
        ),
      (e) => e !== undefined,
      20_000,
    );
    expect(refused?.code).toBe('42501');
    expect(refused?.message).toMatch(/pg_terminate_backend\(\) \(run by operator <#>\) is a dangerous operation/);
  });
});

describe('cost', () => {
  it('a listener opens its catalog connection at the first statement that may run implied code, not before', async () => {
    // Connections opened since the listener started (the other listeners' catalog connections are older).
    const since = (await db.su('SELECT now()::text AS t')).rows[0].t as string;
    const catalogConnections = async () =>
      Number(
        (
          await db.su(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'pgwarden-catalog' AND datname = current_database() AND backend_start >= $1::timestamptz",
            [since],
          )
        ).rows[0].n,
      );
    const lazy = await startGoverned(
      db.name,
      policy('lazy', {
        role: db.roles.admin,
        rules: [{ name: 'reads', action: 'allow', statements: ['select', 'set', 'show'], tables: ['public.*'] }],
      }),
    );
    try {
      const c = await lazy.client();
      expect((await c.query('SELECT id, note FROM orders ORDER BY id LIMIT 1')).rows).toEqual([{ id: 1, note: null }]);
      await c.query('SHOW search_path');
      expect(await catalogConnections()).toBe(0);
      expect((await c.query('SELECT count(*)::int AS n FROM orders WHERE id = 1')).rows).toEqual([{ n: 1 }]);
      expect(await catalogConnections()).toBe(1);
    } finally {
      await lazy.close();
    }
  });
});

describe('a catalog that cannot be read', () => {
  it('refuses (53000) the statements that may run implied code until it is read, and runs the others', async () => {
    const v = await victim();
    // Its own sidecar, so that no snapshot was loaded before the catalog became unreadable to the login.
    await db.su('REVOKE SELECT ON pg_catalog.pg_proc FROM PUBLIC');
    let fresh: Governed | undefined;
    try {
      fresh = await startGoverned(
        db.name,
        policy('fresh', {
          role: db.roles.admin,
          rules: [{ name: 'reads', action: 'allow', statements: ['select'], tables: ['public.*'] }],
        }),
      );
      const c = await fresh.client();
      expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
      for (const sql of ['SELECT id FROM orders WHERE id = 1', `SELECT ${v.pid} ## 0::bigint`, 'SELECT readit(0, 1)']) {
        const err = await errorOf(c, sql);
        expect(err?.code).toBe('53000');
        expect(err?.message).toBe(
          'pgwarden: statement refused: the database catalog cannot be read, so masking and the policy cannot check this statement',
        );
      }
      await db.su('GRANT SELECT ON pg_catalog.pg_proc TO PUBLIC');
      // Loads are retried at most every 2 s after a failure.
      await until(
        'the statement to run once the catalog is read',
        () =>
          c.query('SELECT id FROM orders WHERE id = 1').then(
            (r) => r.rows,
            (e: Error) => e.message,
          ),
        (r) => Array.isArray(r) && r.length === 1,
        20_000,
      );
      expect((await errorOf(c, `SELECT ${v.pid} ## 0::bigint`))?.message).toMatch(
        /is a dangerous operation \(signal-backend\)/,
      );
      expect((await v.client.query('SELECT 1 AS ok')).rows).toEqual([{ ok: 1 }]);
    } finally {
      await db.su('GRANT SELECT ON pg_catalog.pg_proc TO PUBLIC');
      await fresh?.close();
      await v.client.end().catch(() => undefined);
    }
  }, 60_000);
});
