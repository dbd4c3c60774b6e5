import fc from 'fast-check';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findLeaks } from './byte-tap.js';
import { type MaskedSidecar, startMaskedSidecar } from './masked-sidecar.js';
import { adminClient } from './seed.js';

// Property: random values planted in a masked column never reach the client, however the generator selects them.
const S = 'mask_prop';
let side: MaskedSidecar;
let admin: pg.Client;

beforeAll(async () => {
  admin = adminClient();
  await admin.connect();
  await admin.query(`DROP SCHEMA IF EXISTS ${S} CASCADE; CREATE SCHEMA ${S}`);
  // Same table and column names as the rules in seed.ts target (customers.full_name: hash; ssn: partial).
  await admin.query(`CREATE TABLE ${S}.customers (id serial PRIMARY KEY, full_name text, ssn text, city text)`);
  side = await startMaskedSidecar(S);
});
afterAll(async () => {
  await side?.stop();
  await admin?.end();
});

const WRAPPERS: Array<(x: string) => string> = [
  (x) => `upper(${x})`,
  (x) => `lower(${x})`,
  (x) => `reverse(${x})`,
  (x) => `${x} || ''`,
  (x) => `concat('', ${x})`,
  (x) => `${x}::varchar`,
  (x) => `substr(${x}, 1)`,
  (x) => `coalesce(${x}, 'n')`,
  (x) => `encode(convert_to(${x}, 'UTF8'), 'base64')`,
  (x) => `encode(convert_to(${x}, 'UTF8'), 'hex')`,
  (x) => `(SELECT ${x})`,
  (x) => `CASE WHEN true THEN ${x} END`,
  (x) => `format('%s', ${x})`,
];

const SHAPES: Array<(e: string) => string> = [
  (e) => `SELECT ${e} FROM ${S}.customers c`,
  (e) => `SELECT v FROM (SELECT ${e} AS v FROM ${S}.customers c) s`,
  (e) => `WITH w AS (SELECT ${e} AS v FROM ${S}.customers c) SELECT * FROM w`,
  (e) => `SELECT string_agg(${e}, ',') FROM ${S}.customers c`,
  (e) => `SELECT json_agg(${e}) FROM ${S}.customers c`,
  (e) => `SELECT array_agg(${e}) FROM ${S}.customers c`,
  (e) => `SELECT 'z' UNION ALL SELECT ${e} FROM ${S}.customers c`,
  (e) => `SELECT x.v FROM ${S}.customers c, LATERAL (SELECT ${e} AS v) x`,
  () => `SELECT c FROM ${S}.customers c`,
  () => `SELECT row_to_json(c) FROM ${S}.customers c`,
  () => `SELECT * FROM ${S}.customers c`,
];

const planted = fc.stringMatching(/^[A-Za-z0-9]{10,24}$/).map((s) => `Pv${s}`);
const selection = fc.record({
  column: fc.constantFrom('full_name', 'c.full_name', 'ssn', 'c.ssn'),
  wrappers: fc.array(fc.integer({ min: 0, max: WRAPPERS.length - 1 }), { maxLength: 3 }),
  shape: fc.integer({ min: 0, max: SHAPES.length - 1 }),
  binary: fc.boolean(),
});

describe('property: planted values never reach the client', () => {
  it('for random values selected every way the generator knows', async () => {
    const clients = { text: await side.client(), binary: await side.client({ binary: true }) };
    await fc.assert(
      fc.asyncProperty(
        planted,
        planted,
        fc.array(selection, { minLength: 3, maxLength: 3 }),
        async (name, ssn, selections) => {
          await admin.query(`TRUNCATE ${S}.customers`);
          await admin.query(`INSERT INTO ${S}.customers (full_name, ssn, city) VALUES ($1, $2, 'Oslo')`, [name, ssn]);
          for (const sel of selections) {
            const expr = sel.wrappers.reduce((e, w) => WRAPPERS[w](e), sel.column);
            const sql = SHAPES[sel.shape](expr);
            side.tap.take();
            const c = sel.binary ? clients.binary : clients.text;
            const r = sel.binary
              ? await c.query({ text: sql, values: [], queryMode: 'extended' } as pg.QueryConfig)
              : await c.query(sql);
            expect(r.rows.length, sql).toBeGreaterThan(0);
            expect(findLeaks(side.tap.take(), [name, ssn]), sql).toEqual([]);
          }
        },
      ),
      { numRuns: 40 },
    );
  }, 60_000);
});
