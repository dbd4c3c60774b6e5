import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawClient } from '../governance/raw-client.js';
import { findLeaks } from './byte-tap.js';
import { type LeakQuery, leakCorpus, srfQueries } from './leak-corpus.js';
import { type MaskedSidecar, startMaskedSidecar } from './masked-sidecar.js';
import { adminClient, type Planted, seed } from './seed.js';

const S = 'mask_corpus';
let planted: Planted;
let side: MaskedSidecar;

beforeAll(async () => {
  planted = await seed(S);
  side = await startMaskedSidecar(S);
});
afterAll(async () => {
  await side?.stop();
});

interface Outcome {
  rows: number;
  errors: string[];
}

async function run(entry: LeakQuery): Promise<Outcome> {
  const c = await side.client({ binary: entry.mode === 'binary' });
  const out: Outcome = { rows: 0, errors: [] };
  try {
    for (const sql of entry.sql) {
      try {
        const r = entry.mode
          ? await c.query({ text: sql, values: entry.params, queryMode: 'extended' } as pg.QueryConfig)
          : await c.query(sql);
        for (const one of Array.isArray(r) ? r : [r]) out.rows += one.rows?.length || one.rowCount || 0;
      } catch (err) {
        out.errors.push(`${(err as { code?: string }).code}: ${(err as Error).message}`);
      }
    }
  } finally {
    await c.end().catch(() => undefined);
  }
  return out;
}

/** Detector-only values: the plain value and its case variants (content detection cannot see through transforms). */
function detectorLeaks(bytes: Buffer): string[] {
  const hay = bytes.toString('latin1');
  return planted.detectorValues.flatMap((v) =>
    [v, v.toUpperCase(), v.toLowerCase()].filter((x) => hay.includes(x)).map((x) => `detector value ${x}`),
  );
}

describe('leak corpus through the real sidecar', () => {
  it('has at least 60 extraction attempts', () => {
    expect(leakCorpus(S).length).toBeGreaterThanOrEqual(60);
  });

  it('no planted value or simple transform of it reaches the client, and each query gets the expected outcome', async () => {
    const problems: string[] = [];
    for (const entry of leakCorpus(S)) {
      side.tap.take();
      const o = await run(entry);
      const bytes = side.tap.take();
      const leaks = [...findLeaks(bytes, planted.columnValues), ...detectorLeaks(bytes)];
      const label = entry.sql.join(' ; ');
      if (leaks.length) problems.push(`LEAK ${label}: ${leaks.join(', ')}`);
      const denied = o.errors.some((e) => e.startsWith('42501'));
      if (entry.expect === 'rows' && (o.errors.length > 0 || o.rows === 0))
        problems.push(`expected rows: ${label} → ${o.rows} rows, ${o.errors.join(' | ')}`);
      if (entry.expect === 'denied' && !denied)
        problems.push(`expected denial: ${label} → ${o.rows} rows, ${o.errors.join(' | ')}`);
      if (entry.expect === 'error' && (o.errors.length === 0 || denied))
        problems.push(`expected an upstream error: ${label} → ${o.errors.join(' | ')}`);
    }
    expect(problems).toEqual([]);
  }, 60_000);

  it('a notification payload from another session is scrubbed by the detectors', async () => {
    const c = await side.client();
    const got = new Promise<string>((resolve) => c.on('notification', (n) => resolve(n.payload ?? '')));
    await c.query('LISTEN mask_corpus_ch');
    const admin = adminClient();
    await admin.connect();
    const [email, ssn] = planted.detectorValues;
    await admin.query(`SELECT pg_notify('mask_corpus_ch', $1)`, [`user ${email} ssn ${ssn}`]);
    await admin.end();
    const payload = await got;
    expect(payload).toMatch(/^user \*+ ssn \*+$/);
    await c.end();
  });

  it('an echoed fragment computed from a masked value is redacted even when the client planted it in SQL or the catalog', async () => {
    const c = await side.client();
    const ssn = planted.customers[0].ssn;
    const errorOf = (sql: string) =>
      c.query(sql).then(
        () => '',
        (e: Error) => e.message,
      );
    // A dictionary of every 3-digit value in a comment: kept as "the client's own text" before.
    const dict = Array.from({ length: 1000 }, (_, i) => `q${String(i).padStart(3, '0')}q`).join(' ');
    const fromSql = await errorOf(
      `SELECT ('q' || substr(ssn, 1, 3) || 'q')::int FROM ${S}.customers WHERE id = 1 /* ${dict} */`,
    );
    expect(fromSql).toBe('invalid input syntax for type integer: "****"');
    // The same dictionary as column names of a table: kept as "a catalog identifier" before.
    const cols = Array.from({ length: 10 }, (_, i) => `d${i}d int`).join(', ');
    await c.query(`CREATE TABLE ${S}.dict (${cols})`);
    const fromCatalog = await errorOf(`SELECT ('d' || substr(ssn, 5, 1) || 'd')::int FROM ${S}.customers WHERE id = 1`);
    expect(fromCatalog).toBe('invalid input syntax for type integer: "****"');
    expect([fromSql, fromCatalog].join()).not.toContain(ssn.slice(0, 3));
    // Statements that read no masked value keep their echoes.
    expect(await errorOf("SELECT 'abc'::int")).toBe('invalid input syntax for type integer: "abc"');
    expect(await errorOf(`SELECT d5d FROM ${S}.dict WHERE d1d::text::date IS NULL`)).toBe('');
    expect(await errorOf(`SELECT nosuch FROM ${S}.dict`)).toBe('column "nosuch" does not exist');
    await c.query(`DROP TABLE ${S}.dict`);
    await c.end();
  });

  it('FunctionCall (fast path, answered outside any RowDescription) is denied while masking applies', async () => {
    const admin = adminClient();
    await admin.connect();
    const oid = Number((await admin.query(`SELECT '${S}.first_name()'::regprocedure::oid AS oid`)).rows[0].oid);
    await admin.end();
    side.tap.take();
    const c = await RawClient.connect(side.tap.port);
    c.send(RawClient.functionCall(oid));
    const msgs = await c.until('readyForQuery');
    expect(msgs.find((m) => m.name === 'error')?.code).toBe('42501');
    c.end();
    expect(findLeaks(side.tap.take(), planted.columnValues)).toEqual([]);
  });

  it('unmaskedFor: an exempt subject sees the real values', async () => {
    const c = await side.client({ user: 'compliance' });
    const r = await c.query(`SELECT full_name, ssn FROM ${S}.customers ORDER BY id`);
    expect(r.rows[0]).toEqual({ full_name: planted.customers[0].fullName, ssn: planted.customers[0].ssn });
    await c.end();
  });
});

describe('with maskedColumnPredicates: allow', () => {
  let allow: MaskedSidecar;
  beforeAll(async () => {
    allow = await startMaskedSidecar(S, { maskedColumnPredicates: 'allow' });
  });
  afterAll(async () => {
    await allow?.stop();
  });

  it('filters on masked columns work (the documented inference risk) and echoed values in errors are redacted', async () => {
    const c = await allow.client();
    const r = await c.query(`SELECT id, ssn FROM ${S}.customers WHERE ssn = $1`, [planted.customers[1].ssn]);
    expect(r.rows).toEqual([{ id: 2, ssn: `*******${planted.customers[1].ssn.slice(-4)}` }]);
    allow.tap.take();
    const err = await c.query(`SELECT id FROM ${S}.customers WHERE full_name::int = 1`).catch((e: Error) => e);
    expect(String(err)).toMatch(/invalid input syntax for type integer: "\*\*\*\*"/);
    expect(findLeaks(allow.tap.take(), planted.columnValues)).toEqual([]);
    await c.end();
  });

  it('set-returning functions over masked values run, and return masked values only', async () => {
    const c = await allow.client();
    for (const sql of srfQueries(S)) {
      allow.tap.take();
      const r = await c.query(sql);
      expect(r.rows.length, sql).toBeGreaterThan(0);
      expect(findLeaks(allow.tap.take(), planted.columnValues), sql).toEqual([]);
    }
    await c.end();
  });
});

describe('pipelined statements (postgres.js sends several before reading results)', () => {
  it('each RowDescription is planned with its own statement’s lineage', async () => {
    const postgres = (await import('postgres')).default;
    const sql = postgres({
      host: '127.0.0.1',
      port: side.tap.port,
      user: 'agent',
      pass: 'unused',
      database: 'app',
      max: 1,
      onnotice: () => {},
    });
    side.tap.take();
    const queries = [
      `SELECT upper(full_name) AS a FROM ${S}.customers`,
      "SELECT 'clean' AS a",
      `SELECT lower(email) AS a FROM ${S}.customers`,
      'SELECT 1 AS a',
      `SELECT reverse(ssn) AS a FROM ${S}.customers`,
      "SELECT 'x' AS a UNION ALL SELECT 'y'",
    ];
    const results = await Promise.all(queries.map((q) => sql.unsafe(q)));
    expect(results[1]).toEqual([{ a: 'clean' }]);
    expect(results[0].map((r) => r.a)).toEqual(['****', '****', '****']);
    await sql.end();
    expect(findLeaks(side.tap.take(), planted.columnValues)).toEqual([]);
  });
});
