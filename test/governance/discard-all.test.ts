import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseChecks, runClient } from '../compat/through-sidecar.js';
import { createGovernanceDb, type GovernanceDb } from './governance-db.js';
import { errorOf, examplePolicy, type Governed, startGoverned } from './governed-sidecar.js';

// DISCARD ALL through a sidecar started from a policy, against the real PostgreSQL: allowed by a rule listing
// `discard`, it leaves the session as the sidecar set it up (the policy role, statementTimeout, the pinned
// search_path) and is audited as its own kind; PostgreSQL's own refusals reach the client as they are.
const script = fileURLToPath(new URL('./psycopg2_reset.py', import.meta.url));
// Debian's python3-psycopg2 (scripts/system-deps.sh); the check runs before any sidecar exists in this process.
const psycopg2 = spawnSync('/usr/bin/python3', ['-c', 'import psycopg2'], { stdio: 'ignore' }).status === 0;

let db: GovernanceDb;
let g: Governed;

beforeAll(async () => {
  db = await createGovernanceDb('discard');
  const policy = examplePolicy('analyst-readonly.yaml');
  policy.spec.role = db.roles.analyst;
  policy.spec.guardrails.statementTimeout = '7s';
  const housekeeping = policy.spec.rules.find((r: { name: string }) => r.name === 'session-housekeeping');
  if (!housekeeping.statements.includes('discard')) housekeeping.statements.push('discard');
  g = await startGoverned(db.name, policy);
});
afterAll(async () => {
  await g?.close();
  await db?.drop();
});

const session = async (c: { query: (s: string) => Promise<{ rows: any[] }> }) =>
  (
    await c.query(
      "SELECT current_user AS u, current_setting('statement_timeout') AS t, current_setting('search_path') AS p",
    )
  ).rows[0];

describe('DISCARD ALL under a policy', () => {
  it('keeps the policy role, statementTimeout and the pinned search_path (simple and extended protocol)', async () => {
    const c = await g.client();
    const start = { u: db.roles.analyst, t: '7s', p: '"public"' };
    expect(await session(c)).toEqual(start);
    await c.query('SET statement_timeout = 0; SET search_path TO hr, public');
    expect(await errorOf(c, 'DISCARD ALL')).toBeUndefined();
    expect(await session(c)).toEqual(start);
    await c.query('SET statement_timeout = 0');
    const r = await c.query({ text: 'DISCARD ALL', queryMode: 'extended' } as never);
    expect((r as { command: string }).command).toBe('DISCARD');
    expect(await session(c)).toEqual(start);
    await c.end();
  });

  it('forgets prepared statements, in PostgreSQL and in the proxy', async () => {
    const c = await g.client();
    await c.query({ name: 'cached', text: 'SELECT 1 AS n' });
    await c.query('DISCARD ALL');
    expect((await c.query('SELECT count(*)::int AS n FROM pg_prepared_statements')).rows).toEqual([{ n: 0 }]);
    // node-postgres still believes "cached" is prepared: PostgreSQL's own 26000 comes back.
    const err = await c.query({ name: 'cached', text: 'SELECT 1 AS n' }).catch((e) => e);
    expect(err.code).toBe('26000');
    await c.end();
  });

  it("inside a transaction block: PostgreSQL's 25001, the role untouched", async () => {
    const c = await g.client();
    await c.query('BEGIN');
    const err = await errorOf(c, 'DISCARD ALL');
    expect(err?.code).toBe('25001');
    expect(err?.message).toBe('DISCARD ALL cannot run inside a transaction block');
    expect((await errorOf(c, 'SELECT 1'))?.code).toBe('25P02');
    await c.query('ROLLBACK');
    expect((await session(c)).u).toBe(db.roles.analyst);
    await c.end();
  });

  it('is audited as kind `discard`, and denied where no rule lists it; never inside a DO block', async () => {
    const c = await g.client();
    await c.query('DISCARD ALL');
    const e = g.audit.events.find((x) => x.type === 'statement' && x.statement?.text === 'DISCARD ALL');
    expect(e?.statement).toMatchObject({ kind: 'discard' });
    expect(e?.decision).toMatchObject({ action: 'allow', rule: 'session-housekeeping' });
    const nested = await errorOf(c, 'DO $$ BEGIN DISCARD ALL; END $$');
    expect(nested?.code).toBe('42501');
    expect(nested?.message).toMatch(/never allowed/);
    await c.end();

    const strictPolicy = examplePolicy('analyst-readonly.yaml');
    strictPolicy.spec.role = db.roles.analyst;
    // The example allows it (pools reset with it); a policy whose rules do not list `discard` denies it.
    for (const r of strictPolicy.spec.rules) r.statements = r.statements?.filter((k: string) => k !== 'discard');
    const strict = await startGoverned(db.name, strictPolicy);
    try {
      const s = await strict.client();
      expect((await errorOf(s, 'DISCARD ALL'))?.code).toBe('42501');
      await s.end();
    } finally {
      await strict.close();
    }
  });

  // Skipped only where python3-psycopg2 is not installed (scripts/system-deps.sh installs it).
  it.skipIf(!psycopg2)(
    "psycopg2's conn.reset() (ABORT, DISCARD ALL) keeps the session as the sidecar set it up",
    async () => {
      const env = {
        ...process.env,
        PGHOST: '127.0.0.1',
        PGPORT: String(g.port),
        PGUSER: 'agent',
        PGDATABASE: 'app',
        PGSSLMODE: 'disable',
        PGCONNECT_TIMEOUT: '10',
      };
      const resets = () =>
        g.audit.events.filter((x) => x.type === 'statement' && x.statement?.text === 'DISCARD ALL').length;
      const before = resets();
      const r = await runClient('/usr/bin/python3', [script], { env, timeoutMs: 30_000 });
      if (r.status !== 0) throw new Error(`psycopg2 client failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
      const checks = parseChecks(r.stdout);
      const start = [db.roles.analyst, '7s', '"public"'];
      expect(checks.before.session).toEqual(start);
      expect(checks.after_reset.session).toEqual(start);
      expect(checks.failed_transaction.pgcode).toBe('22012');
      expect(checks.after_failed_reset.session).toEqual(start);
      // psycopg2 sent DISCARD ALL itself, twice, and each went through the policy.
      expect(resets() - before).toBe(2);
    },
  );
});
