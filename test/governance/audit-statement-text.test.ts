import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGovernanceDb, type GovernanceDb } from './governance-db.js';
import { errorOf, type Governed, startGoverned } from './governed-sidecar.js';

// audit.statementText: normalized through the real sidecar and PostgreSQL: the trail keeps each statement's shape
// (constants as $n, as pg_stat_statements shows them) and none of the values agents put in their SQL.
let db: GovernanceDb;
let normalized: Governed;
let full: Governed;
let fingerprinted: Governed;

const policy = (name: string, audit?: { statementText?: 'normalized'; fingerprint?: boolean }) => ({
  apiVersion: 'pgwarden.dev/v1alpha1',
  kind: 'DatabaseAccessPolicy',
  metadata: { name, namespace: 'agents' },
  spec: {
    database: { host: 'unused', name: 'app' },
    role: db.roles.writer,
    defaultAction: 'allow',
    guardrails: { blockDDL: false, requireWhere: [] },
    ...(audit ? { audit } : {}),
  },
});

beforeAll(async () => {
  db = await createGovernanceDb('stmttext');
  [normalized, full, fingerprinted] = await Promise.all([
    startGoverned(db.name, policy('normalized', { statementText: 'normalized' })),
    startGoverned(db.name, policy('full')),
    startGoverned(db.name, policy('fingerprinted', { fingerprint: true })),
  ]);
});
afterAll(async () => {
  await normalized?.close();
  await full?.close();
  await fingerprinted?.close();
  await db?.drop();
});

const statementTexts = (g: Governed) =>
  g.audit.events.filter((e) => e.type === 'statement').map((e) => e.statement.text as string);

describe('audit.statementText', () => {
  it('normalized: constants become $n in every statement event; the values are nowhere in the trail', async () => {
    const c = await normalized.client();
    await c.query("SELECT id FROM customers WHERE email = 'ann@example.com' AND id IN (1, 2)");
    await c.query('SELECT id FROM customers WHERE email = $1', ['bob@example.com']);
    await c.query("SELECT 'one-secret-value' AS a; SELECT 42 AS b");
    expect((await errorOf(c, "SELEC 'garbled-secret'"))?.code).toBe('42601');
    await c.query("DO $$ BEGIN PERFORM 'do-body-secret'; END $$");
    await c.query("SELECT id FROM customers WHERE email = 'carol@example.com' AND id IN (7, 8)");
    await c.end();
    await normalized.waitEvent(() => statementTexts(normalized).length >= 7);
    expect(statementTexts(normalized)).toEqual([
      'SELECT id FROM customers WHERE email = $1 AND id IN ($2, $3)',
      'SELECT id FROM customers WHERE email = $1',
      'SELECT $1 AS a',
      'SELECT $1 AS b',
      `[unparseable statement, ${"SELEC 'garbled-secret'".length} characters]`,
      'DO $1',
      'SELECT id FROM customers WHERE email = $1 AND id IN ($2, $3)',
    ]);
    const trail = JSON.stringify(normalized.audit.events);
    for (const value of [
      'ann@example.com',
      'bob@example.com',
      'one-secret-value',
      'garbled-secret',
      'do-body-secret',
      'carol@example.com',
    ])
      expect(trail).not.toContain(value);
    // Kind and tables still say what ran, and statements of one shape share a fingerprint.
    const events = normalized.audit.events.filter((e) => e.type === 'statement');
    expect(events[0].statement).toMatchObject({ kind: 'select', tables: ['public.customers'] });
    expect(events[0].statement.fingerprint).toMatch(/^[0-9a-f]{16}$/);
    expect(events[6].statement.fingerprint).toBe(events[0].statement.fingerprint); // same shape, other values
    expect(events[1].statement.fingerprint).not.toBe(events[0].statement.fingerprint);
  });

  it('full (the default) keeps the text as the client sent it, without a fingerprint', async () => {
    const c = await full.client();
    await c.query("SELECT id FROM customers WHERE email = 'ann@example.com'");
    await c.end();
    await full.waitEvent(() => statementTexts(full).length >= 1);
    expect(statementTexts(full)).toContain("SELECT id FROM customers WHERE email = 'ann@example.com'");
    expect(full.audit.events.find((e) => e.type === 'statement')?.statement.fingerprint).toBeUndefined();
  });

  it('full with audit.fingerprint: the text as sent, and the same fingerprint as the normalized trail', async () => {
    const c = await fingerprinted.client();
    await c.query("SELECT id FROM customers WHERE email = 'ann@example.com' AND id IN (1, 2)");
    await c.query("SELECT id FROM customers WHERE email = 'dan@example.com' AND id IN (5, 6)");
    await c.query('SELECT id FROM customers WHERE email = $1', ['bob@example.com']);
    expect((await errorOf(c, "SELEC 'garbled'"))?.code).toBe('42601');
    await c.end();
    await fingerprinted.waitEvent(() => statementTexts(fingerprinted).length >= 4);
    const [ann, dan, bob, garbled] = fingerprinted.audit.events
      .filter((e) => e.type === 'statement')
      .map((e) => e.statement);
    expect(ann.text).toBe("SELECT id FROM customers WHERE email = 'ann@example.com' AND id IN (1, 2)");
    expect(ann.fingerprint).toMatch(/^[0-9a-f]{16}$/);
    expect(dan.fingerprint).toBe(ann.fingerprint); // same shape, other values
    expect(bob.fingerprint).not.toBe(ann.fingerprint);
    expect(garbled.fingerprint).toBeUndefined();
    // One definition for both modes (sha256 of the normalized text), so trails of either kind group together.
    const norm = normalized.audit.events.filter((e) => e.type === 'statement').map((e) => e.statement);
    expect(norm[0].fingerprint).toBe(ann.fingerprint);
    expect(norm[1].fingerprint).toBe(bob.fingerprint);
  });
});
