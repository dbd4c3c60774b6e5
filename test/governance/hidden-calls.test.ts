import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGovernanceDb, type GovernanceDb } from './governance-db.js';
import { errorOf, examplePolicy, type Governed, startGoverned } from './governed-sidecar.js';

// Reads and writes no function call in the SQL text shows, through the real sidecar against PostgreSQL: the analyst
// example (HR denied, read-only) must deny them, and the dry-run admin shows PostgreSQL would have run them.
let db: GovernanceDb;
let analyst: Governed;
let admin: Governed;

beforeAll(async () => {
  db = await createGovernanceDb('hidden');
  await db.su(`INSERT INTO hr.docs VALUES (to_tsvector('simple', 'bonus 250000'));
    INSERT INTO hr.salaries_data SELECT i, 90000 + i % 3 FROM generate_series(1, 200) i;
    ANALYZE hr.salaries_data;
    SELECT setval('hr.emp_seq', 31337);
    CREATE TABLE public.events (id int) WITH (autovacuum_enabled = false);
    CREATE INDEX events_brin ON public.events USING brin (id) WITH (pages_per_range = 1);
    INSERT INTO public.events SELECT generate_series(1, 2000)`);
  const a = examplePolicy('analyst-readonly.yaml');
  a.spec.role = db.roles.analyst;
  analyst = await startGoverned(db.name, a);
  const ad = examplePolicy('admin-dryrun.yaml');
  ad.spec.role = db.roles.admin;
  admin = await startGoverned(db.name, ad);
}, 60_000);
afterAll(async () => {
  await analyst?.close();
  await admin?.close();
  await db?.drop();
});

const cases: [string, string, RegExp][] = [
  // `(x).f` is f(x): ts_stat runs the SQL in its argument.
  ['field notation runs SQL', "SELECT ('SELECT vector FROM hr.docs'::text).ts_stat::text AS w", /250000/],
  // Planner statistics hold the most common values of every column the role may read.
  [
    'planner statistics',
    "SELECT most_common_vals::text AS v FROM pg_stats WHERE schemaname = 'hr' AND attname = 'amount'",
    /90001/,
  ],
  // pg_sequences shows the last value of every sequence the role may use.
  ['sequence values', "SELECT last_value::text AS v FROM pg_sequences WHERE schemaname = 'hr'", /31337/],
];

describe('HR data through calls and catalogs the SQL does not name', () => {
  it.each(cases)('%s: admin (dry-run) reads it, the analyst is denied', async (_what, sql, secret) => {
    const ad = await admin.client();
    const res = await ad.query(sql);
    expect(JSON.stringify(res.rows)).toMatch(secret);
    const c = await analyst.client();
    const err = await errorOf(c, sql);
    expect(err?.code).toBe('42501');
    expect(err?.message).toMatch(/^pgwarden: statement denied/);
  });

  it('field notation writes a sequence only when the policy allows the write', async () => {
    const before = await db.fingerprint();
    const c = await analyst.client();
    const err = await errorOf(c, "SELECT ('orders_id_seq'::regclass).nextval");
    expect(err?.message).toMatch(/^pgwarden: statement denied/);
    expect(await db.fingerprint()).toBe(before);
    const ad = await admin.client();
    expect(await errorOf(ad, "SELECT ('orders_id_seq'::regclass).nextval")).toBeUndefined();
    expect(await db.fingerprint()).not.toBe(before);
  });

  it('index maintenance in a function call changes the index only when the policy allows maintenance', async () => {
    const c = await analyst.client();
    const err = await errorOf(c, "SELECT brin_summarize_new_values('public.events_brin')");
    expect(err?.code).toBe('42501');
    expect(err?.message).toMatch(/^pgwarden: statement denied/);
    // The pages the INSERT added are still unsummarized (autovacuum is off for the table): the analyst's call never ran.
    const { rows } = await db.su("SELECT brin_summarize_new_values('public.events_brin') AS n");
    expect(Number(rows[0].n)).toBeGreaterThan(0);
  });
});
