import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGovernanceDb, type GovernanceDb } from './governance-db.js';
import { errorOf, examplePolicy, type Governed, startGoverned } from './governed-sidecar.js';
import { RawClient, serialize } from './raw-client.js';

let db: GovernanceDb;
let g: Governed;

beforeAll(async () => {
  db = await createGovernanceDb('role');
  const policy = examplePolicy('analyst-readonly.yaml');
  policy.spec.role = db.roles.analyst;
  g = await startGoverned(db.name, policy);
});
afterAll(async () => {
  await g?.close();
  await db?.drop();
});

const whoami = async (c: { query: (s: string) => Promise<{ rows: any[] }> }) =>
  (await c.query('SELECT current_user AS cu, session_user AS su')).rows[0];

describe('the policy role cannot be changed', () => {
  it('sessions run as the policy role, and every way to change it is denied while current_user stays', async () => {
    const c = await g.client();
    expect(await whoami(c)).toEqual({ cu: db.roles.analyst, su: 'app_scram' });
    const attempts = [
      'SET ROLE app_scram',
      'SET ROLE NONE',
      'RESET ROLE',
      'SET SESSION AUTHORIZATION app_scram',
      'SET SESSION AUTHORIZATION DEFAULT',
      'RESET SESSION AUTHORIZATION',
      'SET LOCAL ROLE app_scram',
      'set "role" to default',
      "SELECT set_config('role', 'app_scram', false)",
      "SELECT set_config('ROLE', 'none', false)",
      "SELECT set_config('session_authorization', 'app_scram', false)",
      "DO $$ BEGIN EXECUTE 'RESET ROLE'; END $$",
      'SELECT 1; RESET ROLE',
    ];
    for (const sql of attempts) {
      const err = await errorOf(c, sql);
      expect(err?.code, sql).toBe('42501');
      expect(err?.message, sql).toMatch(/^pgwarden: statement denied/);
      expect(await whoami(c), sql).toEqual({ cu: db.roles.analyst, su: 'app_scram' });
    }
    // Through the extended protocol, with the setting name as a bind parameter.
    for (const [sql, params] of [
      ['SELECT set_config($1, $2, false)', ['role', 'app_scram']],
      ["SELECT set_config('role', $1, false)", ['app_scram']],
    ] as const) {
      const err = await errorOf(c, sql, [...params]);
      expect(err?.code, sql).toBe('42501');
      expect(await whoami(c)).toEqual({ cu: db.roles.analyst, su: 'app_scram' });
    }
    // RESET ALL keeps the role (GUC_NO_RESET_ALL); search_path returns to the pin the sidecar gave at login.
    expect(await errorOf(c, 'RESET ALL')).toBeUndefined();
    expect((await whoami(c)).cu).toBe(db.roles.analyst);
    expect((await c.query('SHOW search_path')).rows[0].search_path).toBe('"public"');
    await c.end();
  });

  it("a client's search_path at login is the pin (pgjdbc currentSchema): honoured, and RESET returns there", async () => {
    // Given at login, the value is what RESET returns to; a role's or database's default never is.
    const raw = await RawClient.connect(g.port, { user: 'agent', database: 'app', search_path: 'pg_catalog, public' });
    const show = async (sql: string) => {
      raw.send(serialize.query(`${sql}; SHOW search_path`));
      const msgs = await raw.until('readyForQuery');
      expect(
        msgs.find((m) => m.name === 'error'),
        sql,
      ).toBeUndefined();
      return String(
        msgs
          .filter((m) => m.name === 'dataRow')
          .map((m) => m.fields[0])
          .pop(),
      );
    };
    expect(await show('SELECT 1')).toBe('pg_catalog, public');
    expect(await show('SET search_path TO public')).toBe('public');
    for (const sql of ['RESET search_path', 'SET search_path TO DEFAULT', 'RESET ALL'])
      expect(await show(`SET search_path TO public; ${sql}`), sql).toBe('pg_catalog, public');
    raw.end();
    // Without one, the pin is "public", whatever the role's or database's default.
    const plain = await RawClient.connect(g.port);
    plain.send(serialize.query('RESET ALL; SHOW search_path'));
    const msgs = await plain.until('readyForQuery');
    expect(msgs.filter((m) => m.name === 'dataRow').map((m) => String(m.fields[0]).replaceAll('"', ''))).toEqual([
      'public',
    ]);
    plain.end();
  });

  it('even the permissive admin (dry-run, DDL allowed) policy cannot create functions that switch role', async () => {
    const policy = examplePolicy('admin-dryrun.yaml');
    policy.spec.role = db.roles.admin;
    const admin = await startGoverned(db.name, policy);
    try {
      const c = await admin.client();
      // A function's SET role is checked against the session user (the sidecar's login), so it would escape.
      for (const sql of [
        "CREATE FUNCTION esc() RETURNS text LANGUAGE sql SET role = app_scram AS 'SELECT current_user::text'",
        "CREATE FUNCTION esc() RETURNS text LANGUAGE sql SET session_authorization = app_scram AS 'SELECT 1::text'",
      ]) {
        expect((await errorOf(c, sql))?.code, sql).toBe('42501');
      }
      expect(
        await errorOf(c, "CREATE FUNCTION esc() RETURNS text LANGUAGE sql AS 'SELECT current_user::text'"),
      ).toBeUndefined();
      expect((await errorOf(c, 'ALTER FUNCTION esc() SET role = app_scram'))?.code).toBe('42501');
      expect((await c.query('SELECT esc() AS u')).rows[0].u).toBe(db.roles.admin);
      await c.end();
    } finally {
      await admin.close();
    }
  });

  it('the proxy-set role survives a reconnect storm: every new session is the policy role', async () => {
    const clients = await Promise.all(Array.from({ length: 5 }, () => g.client()));
    for (const c of clients) expect((await whoami(c)).cu).toBe(db.roles.analyst);
    await Promise.all(clients.map((c) => c.end()));
  });
});

describe('denials behave like PostgreSQL errors', () => {
  it('a denial inside a transaction leaves it failed until ROLLBACK, upstream included', async () => {
    const c = await g.client();
    const before = await db.fingerprint();
    await c.query('BEGIN');
    await c.query('SELECT count(*) FROM orders');
    expect((await errorOf(c, 'DELETE FROM orders'))?.code).toBe('42501');
    const aborted = await errorOf(c, 'SELECT 1');
    expect(aborted?.code).toBe('25P02'); // in_failed_sql_transaction, from PostgreSQL itself
    await c.query('ROLLBACK');
    expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    expect(await db.fingerprint()).toBe(before);
    await c.end();
  });

  it('extended protocol: a denied Parse discards up to Sync and the connection stays usable', async () => {
    const c = await g.client();
    const before = await db.fingerprint();
    const err = await errorOf(c, 'DELETE FROM orders WHERE id = $1', [1]);
    expect(err?.code).toBe('42501');
    expect((await c.query('SELECT $1::int + 1 AS n', [41])).rows).toEqual([{ n: 42 }]);
    expect(await db.fingerprint()).toBe(before);
    await c.end();
  });

  it('unparseable SQL is denied with 42601 before PostgreSQL sees it', async () => {
    const c = await g.client();
    const err = await errorOf(c, 'SELEC * FROM orders');
    expect(err).toMatchObject({ code: '42601', message: 'syntax error at or near "SELEC"', position: '1' });
    expect((err as { hint?: string }).hint).toMatch(/^pgwarden refused the statement before it reached PostgreSQL/);
    await c.end();
  });
});

describe('raw protocol', () => {
  it('FunctionCall is denied without reaching PostgreSQL (pg_advisory_lock by OID)', async () => {
    const oid = Number((await db.su("SELECT 'pg_advisory_lock(bigint)'::regprocedure::oid AS oid")).rows[0].oid);
    const c = await RawClient.connect(g.port);
    const before = await db.fingerprint();
    c.send(RawClient.functionCall(oid));
    const msgs = await c.until('readyForQuery');
    const err = msgs.find((m) => m.name === 'error');
    expect(err?.code).toBe('42501');
    expect(err?.message).toMatch(/FunctionCall/);
    expect(await db.fingerprint()).toBe(before);
    c.send(serialize.query('SELECT current_user'));
    const ok = await c.until('readyForQuery');
    expect(ok.find((m) => m.name === 'dataRow')?.fields[0]).toBe(db.roles.analyst);
    c.end();
  });

  it('pipelined Queries: a search_path change is seen before the next statement is judged', async () => {
    // hr.products shadows the allowed public.products once hr is first on the path; reading it leaves a trace.
    await db.su(`CREATE VIEW hr.products AS SELECT * FROM public.products_data WHERE public.log_read('hr.products');
      GRANT SELECT ON hr.products TO ${db.roles.analyst}`);
    const c = await RawClient.connect(g.port);
    c.send(serialize.query('SELECT * FROM products'));
    expect((await c.until('readyForQuery')).map((m) => m.name)).not.toContain('error');
    const reads = await db.readCount();
    // Sent back to back, without waiting: the second must be judged with hr on the path, and denied.
    c.send(serialize.query('SET search_path = hr, public'), serialize.query('SELECT * FROM products'));
    expect((await c.until('readyForQuery')).map((m) => m.name)).not.toContain('error');
    const second = await c.until('readyForQuery');
    expect(second.find((m) => m.name === 'error')?.code).toBe('42501');
    expect(await db.readCount()).toBe(reads);
    c.end();
  });

  it('re-Parsing an allowed statement name with denied SQL cannot swap what Bind/Execute runs', async () => {
    const c = await RawClient.connect(g.port);
    const before = await db.fingerprint();
    c.send(serialize.parse({ name: 's1', text: 'SELECT count(*) FROM orders' }), serialize.sync());
    expect((await c.until('readyForQuery')).map((m) => m.name)).toContain('parseComplete');
    c.send(
      serialize.close({ type: 'S', name: 's1' }),
      serialize.parse({ name: 's1', text: 'DELETE FROM orders' }),
      serialize.bind({ statement: 's1' }),
      serialize.execute({}),
      serialize.sync(),
    );
    const msgs = await c.until('readyForQuery');
    expect(msgs.find((m) => m.name === 'error')?.code).toBe('42501');
    expect(msgs.map((m) => m.name)).not.toContain('commandComplete');
    expect(await db.fingerprint()).toBe(before);
    // The name is gone (the denied Parse replaced it): binding it again fails, nothing runs.
    c.send(serialize.bind({ statement: 's1' }), serialize.execute({}), serialize.sync());
    const again = await c.until('readyForQuery');
    expect(again.map((m) => m.name)).not.toContain('commandComplete');
    expect(await db.fingerprint()).toBe(before);
    c.end();
  });
});
