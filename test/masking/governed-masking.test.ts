import { mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type GovernedSidecar, startGovernedSidecar } from '../../sidecar/src/governance/index.js';
import { startTestIdp } from '../governance/oidc-provider.js';
import { ROLES } from '../harness/index.js';
import { findLeaks } from './byte-tap.js';
import { adminClient, maskingPolicyDocs, type Planted, seed } from './seed.js';

// The governed sidecar (`pgwarden sidecar --policy`): a policy file with a MaskingRule, the real decision engine,
// masking wired in by startGovernedSidecar, audit outside it.
const S = 'mask_gov';
let planted: Planted;
let gs: GovernedSidecar;
let rewrite: (extraColumns: object[]) => void;
const events: Record<string, unknown>[] = [];

beforeAll(async () => {
  planted = await seed(S);
  const shared = inject('pg');
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-mask-'));
  const policyFile = join(dir, 'policy.yaml');
  const { policy, rule } = maskingPolicyDocs(S, ['select', 'explain', 'show', 'copy', 'transaction']);
  rewrite = (extra) => {
    const r = { ...rule, spec: { ...rule.spec, columns: [...rule.spec.columns, ...extra] } };
    writeFileSync(`${policyFile}.tmp`, [policy, r].map((d) => JSON.stringify(d)).join('\n---\n'));
    renameSync(`${policyFile}.tmp`, policyFile);
  };
  rewrite([]);
  const upstream = { host: shared.host, port: shared.port, database: shared.database, sslmode: 'disable' as const };
  const credentials = { username: ROLES.scram.user, password: ROLES.scram.password };
  gs = await startGovernedSidecar({
    policyPath: policyFile,
    listenPort: 0,
    upstream,
    credentials,
    audit: { emit: (e) => void events.push(e as Record<string, unknown>), ready: () => true, close: async () => {} },
    http: false,
    pollMs: 0,
  });
});
afterAll(async () => {
  await gs?.close(100);
});

async function client(): Promise<pg.Client> {
  const c = new pg.Client({
    host: '127.0.0.1',
    port: gs.listeners[0].sidecar.port,
    user: 'agent',
    database: 'app',
    password: 'unused',
  });
  c.on('error', () => {});
  await c.connect();
  return c;
}

describe('masking in the governed sidecar', () => {
  it('masks by the policy file’s MaskingRule, denies COPY of masked columns, keeps audit events clean', async () => {
    const c = await client();
    const r = await c.query(`SELECT id, full_name, upper(email) AS e, ssn, city FROM ${S}.customers ORDER BY id`);
    expect(r.rows[0].city).toBe(planted.customers[0].city);
    expect(r.rows[0].e).toBe('****');
    expect(r.rows[0].ssn).toBe(`*******${planted.customers[0].ssn.slice(-4)}`);
    const copy = await c.query(`COPY ${S}.customers TO STDOUT`).catch((e: { code?: string }) => e);
    expect((copy as { code?: string }).code).toBe('42501');
    const cast = await c.query(`SELECT full_name::int FROM ${S}.customers`).catch((e: Error) => e);
    expect(String(cast)).toMatch(/invalid input syntax/);
    await c.end();
    // node-postgres rejects at the ErrorResponse; the sidecar records the statement at the ReadyForQuery after it.
    for (let i = 0; i < 100 && !JSON.stringify(events).includes('invalid input syntax'); i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const everything = Buffer.from(JSON.stringify(events));
    expect(events.length).toBeGreaterThan(0);
    const masked = events.map((e) => e.masking as { columns: string[]; cells: number } | undefined).find((m) => m);
    expect(masked?.columns).toContain(`${S}.customers.ssn`);
    expect(masked?.cells).toBeGreaterThanOrEqual(9);
    expect(findLeaks(everything, planted.columnValues)).toEqual([]);
    expect(everything.toString()).toMatch(/invalid input syntax for type integer: \\"\*\*\*\*\\"/);
    // Masking's plan waits for its catalog, which holds nothing: no statement here was held.
    const statements = events.filter((e) => e.type === 'statement');
    expect(statements.length).toBeGreaterThanOrEqual(3);
    expect(statements.map((e) => (e.timing as { heldMs: number }).heldMs)).toEqual(statements.map(() => 0));
  });

  it('a policy reload applies to sessions that are already open', async () => {
    const c = await client();
    const before = await c.query(`SELECT city FROM ${S}.customers WHERE id = 1`);
    expect(before.rows[0].city).toBe(planted.customers[0].city);
    rewrite([{ table: `${S}.customers`, column: 'city', strategy: { type: 'redact' } }]);
    let city = before.rows[0].city;
    for (let i = 0; i < 100 && city !== '****'; i++) {
      await new Promise((r) => setTimeout(r, 50));
      city = (await c.query(`SELECT city FROM ${S}.customers WHERE id = 1`)).rows[0].city;
    }
    expect(city).toBe('****');
    await c.end();
  });

  it('a rule on a partitioned or inheritance parent covers queries that name a partition or child directly', async () => {
    // Values no content detector recognises: only the column rule can mask them.
    const planted = ['confidential-partition-k7d2', 'confidential-inherit-m4x9'];
    const admin = adminClient();
    await admin.connect();
    try {
      await admin.query(`CREATE TABLE ${S}.events (id int, email text) PARTITION BY RANGE (id)`);
      await admin.query(`CREATE TABLE ${S}.events_p1 PARTITION OF ${S}.events FOR VALUES FROM (0) TO (100)`);
      await admin.query(`CREATE TABLE ${S}.events_p1a PARTITION OF ${S}.events FOR VALUES FROM (100) TO (200)`);
      await admin.query(`INSERT INTO ${S}.events VALUES (1, $1), (150, $1)`, [planted[0]]);
      await admin.query(`CREATE TABLE ${S}.legacy_base (id int, email text)`);
      await admin.query(`CREATE TABLE ${S}.legacy_child () INHERITS (${S}.legacy_base)`);
      await admin.query(`INSERT INTO ${S}.legacy_child VALUES (1, $1)`, [planted[1]]);
    } finally {
      await admin.end();
    }
    // Rules name only the parents; the reload also refreshes the catalog snapshot.
    rewrite([
      { table: `${S}.events`, column: 'email', strategy: { type: 'redact' } },
      { table: `${S}.legacy_base`, column: 'email', strategy: { type: 'redact' } },
    ]);
    const c = await client();
    try {
      // Ready when the new rules apply (the previous test's city rule is gone) and the catalog snapshot knows the
      // new tables (until then their columns are undecidable and come back masked or NULL: failing closed, but not
      // what this test is about).
      const until = Date.now() + 10_000;
      for (;;) {
        const city = (await c.query(`SELECT city FROM ${S}.customers WHERE id = 1`)).rows[0].city;
        const ids = (await c.query(`SELECT id FROM ${S}.events_p1a`)).rows.map((r) => r.id);
        const child = (await c.query(`SELECT id FROM ${S}.legacy_child`)).rows.map((r) => r.id);
        if (city !== '****' && ids[0] === 150 && child[0] === 1) break;
        if (Date.now() > until) throw new Error('policy reload or catalog refresh not seen in time');
        await new Promise((r) => setTimeout(r, 50));
      }
      const seen: string[] = [];
      for (const sql of [
        `SELECT email FROM ${S}.events_p1`,
        `SELECT id, email FROM ${S}.events_p1a`,
        `SELECT upper(email) AS e FROM ${S}.events_p1`,
        `SELECT email FROM ${S}.events`,
        `SELECT email FROM ${S}.legacy_child`,
        `SELECT email || '' AS e FROM ${S}.legacy_child`,
      ]) {
        const r = await c.query(sql);
        expect(r.rows.length, sql).toBeGreaterThan(0);
        for (const row of r.rows) seen.push(JSON.stringify(row));
      }
      for (const v of planted) expect(seen.join('\n')).not.toContain(v);
      // A predicate on the masked column through the partition is refused like one through the parent.
      const probe = await c
        .query(`SELECT id FROM ${S}.events_p1 WHERE email = $1`, [planted[0]])
        .catch((e: { code?: string }) => e);
      expect((probe as { code?: string }).code).toBe('42501');
    } finally {
      await c.end();
    }
  });
});

describe('unmaskedFor against OIDC identities', () => {
  it('matches groups and users exactly: another case of a listed name stays masked', async () => {
    const idp = await startTestIdp();
    const dir = mkdtempSync(join(tmpdir(), 'pgwarden-mask-oidc-'));
    const { policy, rule } = maskingPolicyDocs(S, ['select']);
    const oidcPolicy = {
      ...policy,
      spec: { ...policy.spec, authentication: { mode: 'oidc', oidc: { issuer: idp.issuer, audience: 'pgwarden' } } },
    };
    const exempt = { ...rule, spec: { ...rule.spec, unmaskedFor: { groups: ['compliance'], users: ['auditor-*'] } } };
    writeFileSync(join(dir, 'policy.yaml'), [oidcPolicy, exempt].map((d) => JSON.stringify(d)).join('\n---\n'));
    const shared = inject('pg');
    const oidc = await startGovernedSidecar({
      policyPath: join(dir, 'policy.yaml'),
      listenPort: 0,
      upstream: { host: shared.host, port: shared.port, database: shared.database, sslmode: 'disable' },
      credentials: { username: ROLES.scram.user, password: ROLES.scram.password },
      audit: { emit: () => {}, ready: () => true, close: async () => {} },
      http: false,
      pollMs: 0,
      governance: { oidc: { ca: idp.ca } },
    });
    const ssnAs = async (claims: Record<string, unknown>) => {
      const c = new pg.Client({
        host: '127.0.0.1',
        port: oidc.listeners[0].sidecar.port,
        user: 'agent',
        database: 'app',
        password: await idp.sign(claims),
      });
      await c.connect();
      try {
        return (await c.query(`SELECT ssn FROM ${S}.customers WHERE id = 1`)).rows[0].ssn as string;
      } finally {
        await c.end();
      }
    };
    try {
      const clear = planted.customers[0].ssn;
      const masked = `*******${clear.slice(-4)}`;
      expect(await ssnAs({ sub: 'someone', groups: ['compliance'] })).toBe(clear);
      expect(await ssnAs({ sub: 'auditor-7' })).toBe(clear);
      for (const groups of [['Compliance'], ['COMPLIANCE'], ['compliance ']])
        expect(await ssnAs({ sub: 'someone', groups }), JSON.stringify(groups)).toBe(masked);
      expect(await ssnAs({ sub: 'AUDITOR-7' })).toBe(masked);
    } finally {
      await oidc.close(100);
      await idp.close();
    }
  });
});
