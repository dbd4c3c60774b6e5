import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROLES } from '../harness/index.js';
import { dropDatabase, freshDatabase, sharedClient } from '../harness/own-database.js';
import { findLeaks } from './byte-tap.js';
import { type MaskedSidecar, startMaskedSidecar } from './masked-sidecar.js';

const DB = 'mask_unseen';
const S = 'unseen';
const NAME = 'Ximena Unseenvalue Quorrafeld';
const SSN = '478-31-9052';
let side: MaskedSidecar;

/** SQL of a function that raises the first customer's name and ssn, returning `ret`. */
const peek = (name: string, args: string, returns: string, ret: string) =>
  `CREATE FUNCTION ${S}.${name}(${args}) RETURNS ${returns} LANGUAGE plpgsql AS $$ BEGIN
     RAISE NOTICE 'peek: % %', (SELECT full_name FROM ${S}.customers WHERE id = 1), (SELECT ssn FROM ${S}.customers WHERE id = 1);
     RETURN ${ret}; END $$`;

beforeAll(async () => {
  await freshDatabase(DB);
  const c = sharedClient(ROLES.scram, DB);
  await c.connect();
  try {
    await c.query(`CREATE SCHEMA ${S}`);
    await c.query(`CREATE TABLE ${S}.customers (id int PRIMARY KEY, full_name text, email text UNIQUE, ssn varchar(11),
      phone text, card_number text, secret_note text, city text)`);
    await c.query(
      `INSERT INTO ${S}.customers VALUES (2, 'Other', 'second@planted-unseen.example', NULL, NULL, NULL, NULL, 'Rome')`,
    );
    await c.query(
      `INSERT INTO ${S}.customers VALUES (1, $1, 'xq.unseen@planted-unseen.example', $2, NULL, NULL, NULL, 'Oslo')`,
      [NAME, SSN],
    );
    // Row-level security whose USING expression calls a user function (FORCE: the owner is subject to it too).
    await c.query(peek('rls_peek', 'int', 'boolean', 'true'));
    await c.query(`CREATE TABLE ${S}.docs (id int, body text)`);
    await c.query(`INSERT INTO ${S}.docs VALUES (1, 'a')`);
    await c.query(`CREATE POLICY p ON ${S}.docs USING (${S}.rls_peek(id))`);
    await c.query(`ALTER TABLE ${S}.docs ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY`);
    // ... and one whose policy reads that table, running its policy in turn.
    await c.query(`CREATE TABLE ${S}.docs2 (id int)`);
    await c.query(`INSERT INTO ${S}.docs2 VALUES (1)`);
    await c.query(`CREATE POLICY p ON ${S}.docs2 USING (id IN (SELECT id FROM ${S}.docs))`);
    await c.query(`ALTER TABLE ${S}.docs2 ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY`);
    // A policy with only built-in code does not count.
    await c.query(`CREATE TABLE ${S}.plain_rls (id int)`);
    await c.query(`CREATE POLICY p ON ${S}.plain_rls USING (id > 0)`);
    await c.query(`ALTER TABLE ${S}.plain_rls ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY`);
    // A CHECK that runs user code only through a cast to a domain (whose CHECK calls it).
    await c.query(peek('dom_peek', 'text', 'boolean', 'true'));
    await c.query(`CREATE DOMAIN ${S}.peeking AS text CHECK (${S}.dom_peek(VALUE))`);
    await c.query(`CREATE TABLE ${S}.via_domain (v text CHECK ((v::${S}.peeking) IS NOT NULL))`);
    // ... or through a cast made WITH a user function, invoked implicitly.
    await c.query(`CREATE TYPE ${S}.wrapped AS (v text)`);
    await c.query(peek('to_wrapped', 'text', `${S}.wrapped`, `ROW($1)::${S}.wrapped`));
    await c.query(`CREATE CAST (text AS ${S}.wrapped) WITH FUNCTION ${S}.to_wrapped(text) AS IMPLICIT`);
    await c.query(`CREATE TABLE ${S}.via_cast (v text CHECK (v::${S}.wrapped IS NOT NULL))`);
    // A user `=` for varchar only: comparisons of other types cannot choose it.
    await c.query(peek('veq', 'varchar, varchar', 'boolean', 'true'));
    await c.query(`CREATE OPERATOR ${S}.= (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = ${S}.veq)`);
    await c.query(`CREATE TABLE ${S}.items (id int, code varchar(5), label text)`);
    await c.query(`INSERT INTO ${S}.items VALUES (1, 'a', 'b')`);
    await c.query(`CREATE TABLE ${S}.via_default (v text, w text DEFAULT ('x'::${S}.peeking))`);
    await c.query(`CREATE TABLE ${S}.retyped (id int, v text)`);
  } finally {
    await c.end();
  }
  const su2 = sharedClient(ROLES.superuser, DB);
  await su2.connect();
  try {
    // Event triggers need a superuser; any role's DDL fires them.
    await su2.query(`CREATE FUNCTION ${S}.evt_peek() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN
      RAISE NOTICE 'evt: % %', (SELECT full_name FROM ${S}.customers WHERE id = 1), (SELECT ssn FROM ${S}.customers WHERE id = 1);
      END $$`);
    await su2.query(`CREATE EVENT TRIGGER evt_peek ON ddl_command_end EXECUTE FUNCTION ${S}.evt_peek()`);
  } finally {
    await su2.end();
  }
  side = await startMaskedSidecar(S, {}, { database: DB });
});

afterAll(async () => {
  await side?.stop();
  await dropDatabase(DB);
});

/** Runs the statements on a fresh client through the sidecar; returns the bytes the client got and the notices. */
async function through(
  sqls: string[],
  via: MaskedSidecar = side,
): Promise<{ leaks: string[]; notices: string[]; errors: string[] }> {
  const c = await via.client();
  const notices: string[] = [];
  const errors: string[] = [];
  c.on('notice', (n) => notices.push(n.message ?? ''));
  via.tap.take();
  try {
    for (const sql of sqls) await c.query(sql).catch((e: Error) => errors.push(e.message));
  } finally {
    await c.end().catch(() => undefined);
  }
  return { leaks: findLeaks(via.tap.take(), [NAME, SSN]), notices, errors };
}

describe('user code the statement does not name', () => {
  it('withholds what a row-level-security policy expression raises, on reads and writes', async () => {
    for (const sql of [`SELECT id FROM ${S}.docs`, `UPDATE ${S}.docs SET body = 'b'`, `SELECT id FROM ${S}.docs2`]) {
      const r = await through([sql]);
      expect(r.errors, sql).toEqual([]);
      expect(r.leaks, sql).toEqual([]);
      expect(r.notices.length, sql).toBeGreaterThan(0);
    }
  });

  it('a policy with only built-in code leaves messages alone', async () => {
    const r = await through([`SELECT id FROM ${S}.plain_rls`, `SELECT 1/0`]);
    expect(r.errors).toEqual(['division by zero']);
  });

  it('withholds what an event trigger raises on DDL', async () => {
    const r = await through([`CREATE TABLE ${S}.t_evt (a int)`, `DROP TABLE ${S}.t_evt`]);
    expect(r.errors).toEqual([]);
    expect(r.leaks).toEqual([]);
    expect(r.notices.length).toBeGreaterThan(0);
  });

  it('withholds what a CHECK or default runs through a cast to a domain or a user cast', async () => {
    for (const sql of [
      `INSERT INTO ${S}.via_domain VALUES ('a')`,
      `INSERT INTO ${S}.via_cast VALUES ('a')`,
      `INSERT INTO ${S}.via_default (v) VALUES ('a')`,
    ]) {
      const r = await through([sql]);
      expect(r.errors, sql).toEqual([]);
      expect(r.leaks, sql).toEqual([]);
      expect(r.notices.length, sql).toBeGreaterThan(0);
    }
  });

  it('counts a user `=` only where the operand types could choose it', async () => {
    const plain = await through([
      `SELECT id FROM ${S}.items WHERE id = 1 AND label = 'b' AND id IN (1, 2)`,
      `SELECT nullif(label, 'x') FROM ${S}.items`,
      'SELECT 1/0',
    ]);
    expect(plain.errors).toEqual(['division by zero']);
    const user = await through([
      `SET search_path TO ${S}, public`,
      `SELECT id FROM items WHERE code = 'a'`,
      'SELECT 1/0',
    ]);
    expect(user.leaks).toEqual([]);
    expect(user.errors).toHaveLength(1);
    expect(user.errors[0]).toContain('withheld');
    expect(user.notices.length).toBeGreaterThan(0);
  });
});

describe('errors of statements that read masked columns', () => {
  /** One statement on a fresh client: the error's message and detail as the client got them, and any leak. */
  async function failing(sql: string): Promise<{ message: string; detail?: string; leaks: string[] }> {
    const c = await side.client();
    side.tap.take();
    try {
      await c.query(sql);
    } catch (err) {
      const e = err as { message: string; detail?: string };
      return { message: e.message, detail: e.detail, leaks: findLeaks(side.tap.take(), [NAME, SSN]) };
    } finally {
      await c.end().catch(() => undefined);
    }
    throw new Error(`no error: ${sql}`);
  }

  it('keep the identifiers they name and the structure, not the values', async () => {
    expect((await failing(`SELECT ssn, nosuch FROM ${S}.customers`)).message).toBe('column "nosuch" does not exist');
    expect((await failing(`SELECT ssn, "NoSuch" FROM ${S}.customers`)).message).toBe('column "NoSuch" does not exist');
    expect((await failing(`SELECT c.ssn FROM ${S}.customers c JOIN ${S}.nosuch n ON true`)).message).toBe(
      `relation "${S}.nosuch" does not exist`,
    );
    const dup = await failing(
      `INSERT INTO ${S}.customers (id, email) VALUES (3, 'second@planted-unseen.example') RETURNING ssn`,
    );
    expect(dup.message).toBe('duplicate key value violates unique constraint "customers_email_key"');
    expect(dup.detail).toBe('Key (email)=(****) already exists.');
    expect((await failing(`SELECT 1 / (length(ssn) - 11) FROM ${S}.customers`)).message).toBe('division by zero');
  });

  it('still remove values computed from masked columns, also where they look like identifiers', async () => {
    for (const [sql, message] of [
      [`SELECT full_name::int FROM ${S}.customers`, 'invalid input syntax for type integer: "****"'],
      // The value (q478q) is planted as an alias, a column reference at the error's position would be too.
      [
        `SELECT ('q' || substr(ssn, 1, 3) || 'q')::int AS q478q FROM ${S}.customers WHERE id = 1`,
        'invalid input syntax for type integer: "****"',
      ],
      [
        `SELECT has_column_privilege('${S}.customers', ssn, 'SELECT') FROM ${S}.customers WHERE id = 1`,
        'column "****" of relation "****" does not exist',
      ],
      [`SELECT ssn::regclass FROM ${S}.customers WHERE id = 1`, 'relation "****" does not exist'],
    ]) {
      const r = await failing(sql);
      expect(r.message, sql).toBe(message);
      expect(r.leaks, sql).toEqual([]);
    }
  });
});

describe('code another connection creates', () => {
  it('is seen by the next statement a second later, without a reload through the sidecar', async () => {
    await through(['SELECT 1']); // the snapshot is loaded and current
    const admin = sharedClient(ROLES.scram, DB);
    admin.on('notice', () => {});
    await admin.connect();
    try {
      await admin.query(peek('late_peek', 'text, text', 'boolean', 'true'));
      await admin.query(`CREATE OPERATOR ${S}.<~~> (LEFTARG = text, RIGHTARG = text, FUNCTION = ${S}.late_peek)`);
      await admin.query(peek('late_fn', 'text', 'text', "'x'"));
    } finally {
      await admin.end();
    }
    await new Promise((r) => setTimeout(r, 1200));
    for (const sql of [`SELECT full_name <~~> 'x' FROM customers`, 'SELECT late_fn(full_name) FROM customers']) {
      const r = await through([`SET search_path TO ${S}, public`, sql]);
      expect(r.errors, sql).toEqual([]);
      expect(r.leaks, sql).toEqual([]);
      expect(r.notices.length, sql).toBeGreaterThan(0);
    }
  });
});

describe('a column another connection retypes', () => {
  let own: MaskedSidecar | undefined;
  afterAll(async () => {
    await own?.stop();
  });

  it('to a domain whose CHECK runs user code is seen by the catalog check, not only at the periodic reload', async () => {
    // Its own sidecar, with the periodic reload out of reach: only the once-a-second fingerprint check can see it.
    own = await startMaskedSidecar(S, {}, { database: DB, catalog: { maxAgeMs: 3_600_000 } });
    const insert = `INSERT INTO ${S}.retyped VALUES (1, 'a')`;
    const plain = await through([insert, 'SELECT 1/0'], own);
    expect(plain.notices).toEqual([]);
    expect(plain.errors).toEqual(['division by zero']);
    const admin = sharedClient(ROLES.scram, DB);
    admin.on('notice', () => {});
    await admin.connect();
    try {
      await admin.query(`ALTER TABLE ${S}.retyped ALTER COLUMN v TYPE ${S}.peeking`);
    } finally {
      await admin.end();
    }
    // Generous polling: the check runs at most once a second, and this machine may be slow.
    let r = await through([insert], own);
    for (const until = Date.now() + 20_000; r.leaks.length > 0 && Date.now() < until; ) {
      await new Promise((res) => setTimeout(res, 250));
      r = await through([insert], own);
    }
    expect(r.errors).toEqual([]);
    expect(r.leaks).toEqual([]);
    expect(r.notices.length).toBeGreaterThan(0);
  });
});
