import { randomInt } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';
import { ROLES } from '../harness/index.js';

/** Luhn-valid 16-digit card number starting with 4. */
export function cardNumber(): string {
  const body = `4${Array.from({ length: 14 }, () => randomInt(10)).join('')}`;
  for (let d = 0; d < 10; d++) {
    const n = body + d;
    let sum = 0;
    for (let i = 0; i < n.length; i++) {
      let x = Number(n[n.length - 1 - i]);
      if (i % 2 === 1) x = x * 2 > 9 ? x * 2 - 9 : x * 2;
      sum += x;
    }
    if (sum % 10 === 0) return n;
  }
  throw new Error('unreachable');
}

/** A German IBAN with valid check digits (ISO 13616 mod-97) for an 18-digit BBAN. */
export function ibanFor(bban: string): string {
  const numeric = `${bban}131400`; // "DE" → 13 14, then "00"
  let rem = 0;
  for (const ch of numeric) rem = (rem * 10 + Number(ch)) % 97;
  return `DE${String(98 - rem).padStart(2, '0')}${bban}`;
}

export function ssn(): string {
  return `${randomInt(100, 666)}-${String(randomInt(1, 100)).padStart(2, '0')}-${String(randomInt(1, 10000)).padStart(4, '0')}`;
}

const word = (n: number) => Array.from({ length: n }, () => String.fromCharCode(97 + randomInt(26))).join('');

export interface Planted {
  /** Values in columns covered by column rules: must never reach the client, nor simple transforms of them. */
  columnValues: string[];
  /** Values only content detectors cover (the free-text `notes` column). */
  detectorValues: string[];
  customers: Array<{
    id: number;
    fullName: string;
    email: string;
    ssn: string;
    phone: string;
    card: string;
    note: string;
    city: string;
  }>;
}

export function adminClient(): pg.Client {
  const shared = inject('pg');
  return new pg.Client({
    host: shared.host,
    port: shared.port,
    database: shared.database,
    user: ROLES.scram.user,
    password: ROLES.scram.password,
  });
}

/** Creates schema `schema` with planted PII (as the database owner, directly, not through the sidecar). */
export async function seed(schema: string): Promise<Planted> {
  const customers = [1, 2, 3].map((id) => ({
    id,
    fullName: `Ximena ${word(6)} Quorrafeld`,
    email: `xq.${word(8)}@planted-${word(5)}.example`,
    ssn: ssn(),
    phone: `+1 415 ${randomInt(200, 999)} ${randomInt(1000, 9999)}`,
    card: cardNumber(),
    note: `confidential-${word(10)}`,
    city: ['Lisbon', 'Oslo', 'Quito'][id - 1],
  }));
  const detector = {
    email: `dz.${word(8)}@detect-${word(5)}.example`,
    ssn: ssn(),
    card: cardNumber(),
    aws: `AKIA${Array.from({ length: 16 }, () => 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'[randomInt(32)]).join('')}`,
    jwt: `eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI${word(12)}In0.${word(20)}`,
    iban: ibanFor(`${Array.from({ length: 18 }, () => randomInt(10)).join('')}`),
    pem: `MIIEv${word(30)}`,
  };
  const S = schema;
  const c = adminClient();
  await c.connect();
  try {
    await c.query(`DROP SCHEMA IF EXISTS ${S} CASCADE`);
    await c.query(`CREATE SCHEMA ${S}`);
    await c.query(`CREATE TABLE ${S}.customers (id int PRIMARY KEY, full_name text NOT NULL, email text UNIQUE, ssn varchar(11),
      phone text, card_number text, secret_note text, city text, age int CHECK (age >= 0), notes text)`);
    await c.query(
      `CREATE TABLE ${S}.orders (id int PRIMARY KEY, customer_id int REFERENCES ${S}.customers(id), amount numeric, card_number text)`,
    );
    await c.query(`CREATE TABLE ${S}.sink (v text)`);
    await c.query(
      `CREATE VIEW ${S}.customer_view AS SELECT id, upper(email) AS contact, ssn AS tax_id, city FROM ${S}.customers`,
    );
    await c.query(`CREATE MATERIALIZED VIEW ${S}.customer_mat AS SELECT id, email AS e, city FROM ${S}.customers`);
    await c.query(
      `CREATE FUNCTION ${S}.get_name(int) RETURNS text LANGUAGE sql AS $$ SELECT full_name FROM ${S}.customers WHERE id = $1 $$`,
    );
    await c.query(
      `CREATE FUNCTION ${S}.first_name() RETURNS text LANGUAGE sql AS $$ SELECT full_name FROM ${S}.customers ORDER BY id LIMIT 1 $$`,
    );
    await c.query(`CREATE FUNCTION ${S}.leak_notice() RETURNS int LANGUAGE plpgsql AS $$ BEGIN
      RAISE NOTICE 'n: %', (SELECT full_name FROM ${S}.customers ORDER BY id LIMIT 1); RETURN 1; END $$`);
    await c.query(`CREATE FUNCTION ${S}.leak_error() RETURNS int LANGUAGE plpgsql AS $$ BEGIN
      RAISE EXCEPTION 'e: %', (SELECT full_name FROM ${S}.customers ORDER BY id LIMIT 1); END $$`);
    // A view whose function raises what it is given: reading the view runs it in the reader's session.
    await c.query(`CREATE FUNCTION ${S}.shout(text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN
      RAISE NOTICE 's: %', $1; RETURN 'x'; END $$`);
    await c.query(`CREATE VIEW ${S}.shouting_view AS SELECT id, ${S}.shout(full_name) AS x FROM ${S}.customers`);
    // User code that runs without a function call in the SQL text: an operator's function, a cast's function, a
    // domain's CHECK, a function called in field notation (`c.peek_row` is `peek_row(c)`). Each raises its input.
    await c.query(`CREATE FUNCTION ${S}.peek(text, text) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN
      RAISE NOTICE 'o: %', $1; RETURN true; END $$`);
    await c.query(`CREATE OPERATOR ${S}.=~~= (LEFTARG = text, RIGHTARG = text, FUNCTION = ${S}.peek)`);
    await c.query(`CREATE FUNCTION ${S}.peek_row(${S}.customers) RETURNS text LANGUAGE plpgsql AS $$ BEGIN
      RAISE NOTICE 'r: %', $1.full_name; RETURN 'x'; END $$`);
    await c.query(`CREATE TYPE ${S}.boxed AS (v text)`);
    await c.query(`CREATE FUNCTION ${S}.to_boxed(text) RETURNS ${S}.boxed LANGUAGE plpgsql AS $$ BEGIN
      RAISE NOTICE 'c: %', $1; RETURN ROW('x'::text); END $$`);
    await c.query(`CREATE CAST (text AS ${S}.boxed) WITH FUNCTION ${S}.to_boxed(text)`);
    // A cast from a row type: `n::text` of a view the client owns runs it, with no user type named in the SQL.
    await c.query(`CREATE VIEW ${S}.name_view AS SELECT id, full_name FROM ${S}.customers`);
    await c.query(`CREATE FUNCTION ${S}.name_text(${S}.name_view) RETURNS text LANGUAGE plpgsql AS $$ BEGIN
      RAISE NOTICE 'nv: %', $1.full_name; RETURN 'x'; END $$`);
    await c.query(`CREATE CAST (${S}.name_view AS text) WITH FUNCTION ${S}.name_text(${S}.name_view)`);
    await c.query(`CREATE FUNCTION ${S}.chk(text) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN
      RAISE NOTICE 'd: %', $1; RETURN true; END $$`);
    await c.query(`CREATE DOMAIN ${S}.checked AS text CHECK (${S}.chk(VALUE))`);
    // A CHECK and a domain column whose function reads and raises a name: any write to these tables runs it.
    await c.query(`CREATE FUNCTION ${S}.leaky_check(text) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN
      RAISE NOTICE 'k: %', (SELECT full_name FROM ${S}.customers ORDER BY id LIMIT 1); RETURN true; END $$`);
    await c.query(`CREATE TABLE ${S}.guarded (v text CHECK (${S}.leaky_check(v)))`);
    await c.query(`CREATE DOMAIN ${S}.leaky_dom AS text CHECK (${S}.leaky_check(VALUE))`);
    await c.query(`CREATE TABLE ${S}.domained (v ${S}.leaky_dom)`);
    // A table whose trigger raises and notifies a masked value: user code the sidecar cannot see in the SQL.
    await c.query(`CREATE TABLE ${S}.touched (id int PRIMARY KEY, v text)`);
    await c.query(`INSERT INTO ${S}.touched VALUES (1, 'a')`);
    await c.query(`CREATE FUNCTION ${S}.leak_trigger() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
      RAISE NOTICE 't: %', (SELECT full_name FROM ${S}.customers ORDER BY id LIMIT 1);
      PERFORM pg_notify('mask_trg', (SELECT full_name FROM ${S}.customers ORDER BY id LIMIT 1));
      RETURN NEW; END $$`);
    await c.query(`CREATE TRIGGER leak AFTER UPDATE ON ${S}.touched FOR EACH ROW EXECUTE FUNCTION ${S}.leak_trigger()`);
    for (const p of customers) {
      const notes =
        p.id === 1
          ? `reach me at ${detector.email}, ssn ${detector.ssn}, card ${detector.card}, key ${detector.aws}`
          : 'no secrets here';
      await c.query(`INSERT INTO ${S}.customers VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 30, $9)`, [
        p.id,
        p.fullName,
        p.email,
        p.ssn,
        p.phone,
        p.card,
        p.note,
        p.city,
        notes,
      ]);
      await c.query(`INSERT INTO ${S}.orders VALUES ($1, $1, $2, $3)`, [p.id, p.id * 10 + 5, p.card]);
    }
    await c.query(`REFRESH MATERIALIZED VIEW ${S}.customer_mat`);
    await c.query(`ANALYZE ${S}.customers`);
  } finally {
    await c.end();
  }
  return {
    customers,
    columnValues: customers.flatMap((p) => [p.fullName, p.email, p.ssn, p.phone, p.card, p.note]),
    detectorValues: Object.values(detector),
  };
}

/** MaskingRule spec used by the leak tests. */
export function maskingSpec(schema: string) {
  return {
    columns: [
      { table: `${schema}.customers`, column: 'full_name', strategy: { type: 'hash' as const } },
      { table: `${schema}.customers`, column: 'email', strategy: { type: 'email' as const } },
      { table: `${schema}.customers`, column: 'ssn', strategy: { type: 'partial' as const, keepLast: 4 } },
      { table: `${schema}.customers`, column: 'phone', strategy: { type: 'digits' as const } },
      { table: '*', column: 'card_number', strategy: { type: 'redact' as const } },
      { table: `${schema}.customers`, column: 'secret_note', strategy: { type: 'null' as const } },
    ],
    detectors: ['email', 'credit-card', 'us-ssn', 'phone', 'iban', 'jwt', 'aws-access-key', 'private-key'] as const,
    unmaskedFor: { groups: ['compliance'] },
  };
}

/**
 * The policy `maskgov` (workload identity, the scram role, deny by default, one `read` rule on the schema's tables
 * allowing `statements`) and the MaskingRule `pii` on it (maskingSpec): the documents of a governed sidecar's file.
 */
export function maskingPolicyDocs(schema: string, statements: string[]) {
  const policy = {
    apiVersion: 'pgwarden.dev/v1alpha1',
    kind: 'DatabaseAccessPolicy',
    metadata: { name: 'maskgov', namespace: 'agents' },
    spec: {
      database: { host: 'unused', name: 'app', credentialsSecretRef: { name: 'c' } },
      authentication: { mode: 'workload' },
      role: ROLES.scram.user,
      defaultAction: 'deny',
      rules: [{ name: 'read', action: 'allow', statements, tables: [`${schema}.*`] }],
    },
  };
  const rule = {
    apiVersion: 'pgwarden.dev/v1alpha1',
    kind: 'MaskingRule',
    metadata: { name: 'pii', namespace: 'agents' },
    spec: { policies: ['maskgov'], ...maskingSpec(schema) },
  };
  return { policy, rule };
}
