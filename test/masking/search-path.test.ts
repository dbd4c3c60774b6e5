import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initMaskingParser } from '../../policy/src/masking/sql-parse.js';
import { analyzeForMasking } from '../../policy/src/masking/statement-analysis.js';
import { findLeaks } from './byte-tap.js';
import { directAndMasked, type MaskedSidecar, startMaskedSidecar } from './masked-sidecar.js';
import { adminClient, seed } from './seed.js';

// One table name in two schemas, with its columns in another order: `pair` is whichever the session's search_path
// reaches first. card_number is masked in both (the `*` rule), in a shape no content detector knows. Through the real
// sidecar against PostgreSQL: a session whose search_path the sidecar gave at login (as the governed sidecar pins it)
// resolves `pair` as PostgreSQL does; one whose path it does not know takes every candidate, and never lines one
// schema's columns up with another's.
const S = 'mask_sp';
const ONE = `${S}_one`;
const TWO = `${S}_two`;
const cardOne = `confidential-one-${randomBytes(6).toString('hex')}`;
const cardTwo = `confidential-two-${randomBytes(6).toString('hex')}`;
const secrets = [cardOne, cardTwo];
/** The path given at login: TWO first. */
const PINNED = `${TWO}, ${ONE}`;
let pinned: MaskedSidecar;
let unpinned: MaskedSidecar;

beforeAll(async () => {
  await seed(S);
  const admin = adminClient();
  await admin.connect();
  try {
    await admin.query(`DROP SCHEMA IF EXISTS ${ONE} CASCADE; DROP SCHEMA IF EXISTS ${TWO} CASCADE;
      CREATE SCHEMA ${ONE}; CREATE SCHEMA ${TWO};
      CREATE TABLE ${ONE}.pair (memo text, card_number text);
      CREATE TABLE ${TWO}.pair (card_number text, memo text);
      INSERT INTO ${ONE}.pair VALUES ('memo-one', '${cardOne}');
      INSERT INTO ${TWO}.pair VALUES ('${cardTwo}', 'memo-two');
      CREATE FUNCTION ${S}.go_one() RETURNS int LANGUAGE plpgsql AS $$ BEGIN
        PERFORM set_config('search_path', '${ONE}', false); RETURN 1; END $$`);
  } finally {
    await admin.end();
  }
  await initMaskingParser();
  pinned = await startMaskedSidecar(S, {}, { searchPath: PINNED });
  unpinned = await startMaskedSidecar(S);
}, 90_000);
afterAll(async () => {
  await pinned?.stop();
  await unpinned?.stop();
});

const both = (via: MaskedSidecar, sql: string, setup: string) => directAndMasked(via, sql, setup);

const MASKED = '****';
/** Columns sent as computed (table OID 0), so lineage alone decides what is masked. */
const COMPUTED = 'SELECT s.*, upper(s.memo) AS m FROM (SELECT * FROM pair UNION ALL SELECT * FROM pair) s';

describe('a path the sidecar gave at login', () => {
  it('resolves the name as PostgreSQL does: its columns, its order, its masked column', async () => {
    const r = await both(pinned, COMPUTED, `SET search_path = ${PINNED}`);
    expect(r.direct.fields).toEqual(['card_number', 'memo', 'm']);
    expect(r.direct.rows[0]).toEqual({ card_number: cardTwo, memo: 'memo-two', m: 'MEMO-TWO' });
    expect(r.masked.rows).toEqual(r.direct.rows.map((row) => ({ ...row, card_number: MASKED })));
    expect(findLeaks(r.bytes, secrets)).toEqual([]);
  });

  it('names outputs as PostgreSQL does', async () => {
    for (const sql of [COMPUTED, 'WITH w AS (SELECT * FROM pair) SELECT * FROM w', 'SELECT p.* FROM pair p(a)']) {
      const r = await both(pinned, sql, `SET search_path = ${PINNED}`);
      expect(r.masked.fields).toEqual(r.direct.fields);
      const cat = await pinned.catalog.ensure();
      const named = { cursor: () => undefined, prepared: () => undefined };
      const paths = [[TWO, ONE]];
      expect(analyzeForMasking(sql, cat, named, { paths })[0].outputs.map((o) => o.name)).toEqual(r.direct.fields);
    }
  });

  it('a SET to another path adds it: either table may then be read', async () => {
    // The SET may fail or be rolled back: both paths are candidates from then on, and each table's masked column
    // stays masked wherever it sits.
    for (const path of [ONE, TWO]) {
      const r = await both(pinned, COMPUTED, `SET search_path = ${path}`);
      expect(r.masked.fields).toEqual(r.direct.fields);
      expect(r.direct.rows).toHaveLength(2);
      expect(r.masked.rows.map((row) => row.card_number)).toEqual([MASKED, MASKED]);
      expect(findLeaks(r.bytes, secrets)).toEqual([]);
    }
  });

  it('set_config() or user code that may call it makes the path unknown again', async () => {
    // Neither is a SET the sidecar can read: either table may be read from then on.
    for (const setup of [`SELECT set_config('search_path', '${ONE}', false)`, `SELECT ${S}.go_one()`]) {
      const r = await both(pinned, COMPUTED, setup);
      expect(r.direct.fields).toEqual(['memo', 'card_number', 'm']);
      expect(r.masked.rows.map((row) => row.card_number)).toEqual([MASKED, MASKED]);
      expect(findLeaks(r.bytes, secrets)).toEqual([]);
    }
  });
});

describe('a path the sidecar does not know', () => {
  it('never lines one schema’s columns up with another’s', async () => {
    for (const path of [ONE, TWO]) {
      const r = await both(unpinned, COMPUTED, `SET search_path = ${path}`);
      expect(r.direct.rows).toHaveLength(2);
      expect(r.masked.rows.map((row) => row.card_number)).toEqual([MASKED, MASKED]);
      expect(findLeaks(r.bytes, secrets)).toEqual([]);
      const cols = await both(
        unpinned,
        'SELECT upper(s.a) AS a, upper(s.b) AS b FROM (SELECT * FROM pair) s(a, b)',
        `SET search_path = ${path}`,
      );
      expect(cols.masked.rows).toEqual([{ a: MASKED, b: MASKED }]);
      expect(findLeaks(cols.bytes, secrets)).toEqual([]);
    }
  });
});
