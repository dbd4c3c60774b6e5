import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CORPUS } from '../../policy/src/corpus/statement-corpus.js';
import { createGovernanceDb, type GovernanceDb } from './governance-db.js';
import { errorOf, examplePolicy, type Governed, startGoverned } from './governed-sidecar.js';

/**
 * The policy corpus (policy/src/corpus) under the analyst example, through the real sidecar against real
 * PostgreSQL. For every statement the analyst policy denies: the client gets pgwarden's error, and the database
 * fingerprint (rows, sequences, catalog, ACLs, read trace, advisory locks, ALTER SYSTEM) is unchanged, so the
 * statement never reached PostgreSQL. The admin (dry-run) policy then runs statements of the same kinds, and the
 * fingerprint changes: the check can fail.
 */
let db: GovernanceDb;
let analyst: Governed;
let admin: Governed;

beforeAll(async () => {
  db = await createGovernanceDb('corpus');
  const a = examplePolicy('analyst-readonly.yaml');
  a.spec.role = db.roles.analyst;
  analyst = await startGoverned(db.name, a);
  const ad = examplePolicy('admin-dryrun.yaml');
  ad.spec.role = db.roles.admin;
  admin = await startGoverned(db.name, ad);
});
afterAll(async () => {
  await analyst?.close();
  await admin?.close();
  await db?.drop();
});

const denied = CORPUS.filter((e) => e.analyst === 'D');
const allowed = CORPUS.filter((e) => e.analyst === 'A');

describe('analyst policy through the sidecar', () => {
  it('covers enough of the corpus', () => {
    expect(denied.length).toBeGreaterThanOrEqual(25);
  });

  // One session for all denials: a denied statement changes nothing upstream, and the analyser's session state
  // only grows stricter. Each statement's "after" fingerprint is the next one's "before".
  let c: pg.Client;
  let last: string;
  beforeAll(async () => {
    c = await analyst.client();
    last = await db.fingerprint();
  });
  afterAll(() => c?.end());

  it.each(denied.map((e) => [e.sql]))('denies and never executes: %s', async (sql) => {
    const err = await errorOf(c, sql);
    expect(err, 'statement was not denied').toBeDefined();
    expect(['42501', '42601']).toContain(err!.code);
    // Unparseable SQL gets PostgreSQL's own syntax error (message, position); the hint says pgwarden refused it.
    if (err!.code === '42601') expect((err as { hint?: string }).hint).toMatch(/^pgwarden refused the statement/);
    else expect(err!.message).toMatch(/^pgwarden: statement denied/);
    const now = await db.fingerprint();
    expect(now).toBe(last);
    last = now;
  });

  it('the session stayed usable, as the policy role', async () => {
    expect((await c.query('SELECT current_user AS u')).rows[0].u).toBe(db.roles.analyst);
  });

  it('lets the allowed part of the corpus through to PostgreSQL', async () => {
    for (const { sql } of allowed) {
      const c = await analyst.client();
      const err = await errorOf(c, sql);
      // PostgreSQL may still refuse (no such column); pgwarden must not.
      if (err) expect(err.message, sql).not.toMatch(/pgwarden/);
      await c.end();
    }
  });
});

describe('positive controls: the fingerprint sees each kind of effect', () => {
  it.each([
    ['DELETE FROM orders WHERE id = 42'],
    ["SELECT nextval('orders_id_seq')"],
    ['CREATE TABLE t (id int)'],
    ['GRANT SELECT ON orders TO public'],
    ['SELECT * FROM hr.salaries'],
    ['CALL do_things()'],
    ["UPDATE orders SET status = 'shipped' WHERE id = 1"],
  ])('admin (dry-run) runs it and the fingerprint changes: %s', async (sql) => {
    const c = await admin.client();
    const before = await db.fingerprint();
    expect(await errorOf(c, sql)).toBeUndefined();
    expect(await db.fingerprint()).not.toBe(before);
    await c.end();
  });

  it('an advisory lock held through the sidecar shows in the fingerprint', async () => {
    const c = await admin.client();
    const before = await db.fingerprint();
    await c.query('SELECT pg_advisory_lock(42)');
    expect(await db.fingerprint()).not.toBe(before);
    await c.end();
  });

  it('dry-run records "would deny" in the audit event while the statement runs', async () => {
    const c = await admin.client();
    const n = admin.audit.events.length;
    expect(await errorOf(c, 'DELETE FROM orders WHERE id = 43')).toBeUndefined();
    await c.end();
    const ev = admin.audit.events
      .slice(n)
      .find((e) => e.type === 'statement' && /id = 43/.test(e.statement?.text ?? ''));
    expect(ev?.decision).toMatchObject({ action: 'dryrun', reason: expect.stringMatching(/^would deny/) });
    expect((await db.su('SELECT count(*)::int AS n FROM orders WHERE id = 43')).rows[0].n).toBe(0);
  });
});
