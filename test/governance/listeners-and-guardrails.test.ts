import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type GovernedSidecar, startGovernedSidecar } from '../../sidecar/src/governance/index.js';
import { freePort } from '../harness/index.js';
import { createGovernanceDb, type GovernanceDb } from './governance-db.js';
import { errorOf, memoryAudit, writePolicy } from './governed-sidecar.js';
import { RawClient, serialize } from './raw-client.js';

let db: GovernanceDb;
let gs: GovernedSidecar;
const ports = { reader: 0, sleeper: 0 };

const policy = (name: string, port: number, role: string, spec: object) => ({
  apiVersion: 'pgwarden.dev/v1alpha1',
  kind: 'DatabaseAccessPolicy',
  metadata: { name, namespace: 'agents' },
  spec: { database: { host: 'ignored.example', name: 'ignored' }, listen: { port }, role, ...spec },
});

beforeAll(async () => {
  const shared = inject('pg');
  db = await createGovernanceDb('multi');
  ports.reader = await freePort();
  ports.sleeper = await freePort();
  const file = join(mkdtempSync(join(tmpdir(), 'pgwarden-multi-')), 'policies.yaml');
  writePolicy(
    file,
    policy('reader', ports.reader, db.roles.analyst, {
      rules: [{ name: 'read-orders', action: 'allow', statements: ['select'], tables: ['public.orders'] }],
      guardrails: { maxRowsReturned: 5 },
    }),
    policy('sleeper', ports.sleeper, db.roles.writer, {
      rules: [{ name: 'anything-read', action: 'allow', statements: ['select', 'show'] }],
      guardrails: { statementTimeout: '500ms' },
    }),
  );
  gs = await startGovernedSidecar({
    policyPath: file,
    upstream: { host: shared.host, port: shared.port, database: db.name, sslmode: 'disable' },
    credentials: { username: 'app_scram', password: 'scram-pw-1' },
    audit: memoryAudit(),
    pollMs: 0,
  });
});
afterAll(async () => {
  await gs?.close(500);
  await db?.drop();
});

async function client(port: number): Promise<pg.Client> {
  const c = new pg.Client({ host: '127.0.0.1', port, user: 'agent', database: 'app' });
  c.on('error', () => {});
  await c.connect();
  return c;
}

describe('one listener per policy, each enforcing its own policy', () => {
  it('opens a listener on each policy listen.port with its own role and rules', async () => {
    expect(gs.listeners.map((l) => [l.policy, l.sidecar.port])).toEqual([
      ['reader', ports.reader],
      ['sleeper', ports.sleeper],
    ]);
    const r = await client(ports.reader);
    const s = await client(ports.sleeper);
    expect((await r.query('SELECT current_user AS u')).rows[0].u).toBe(db.roles.analyst);
    expect((await s.query('SELECT current_user AS u')).rows[0].u).toBe(db.roles.writer);
    // customers: only the sleeper policy reads everything.
    expect((await errorOf(r, 'SELECT * FROM customers'))?.message).toMatch(/^pgwarden: statement denied/);
    expect(await errorOf(s, 'SELECT * FROM customers')).toBeUndefined();
    await r.end();
    await s.end();
  });

  it('maxRowsReturned: the client gets rows up to the cap, then an error', async () => {
    const raw = await RawClient.connect(ports.reader);
    raw.send(serialize.query('SELECT * FROM orders ORDER BY id'));
    const msgs = await raw.until('readyForQuery');
    expect(msgs.filter((m) => m.name === 'dataRow')).toHaveLength(5);
    const err = msgs.find((m) => m.name === 'error');
    expect(err).toMatchObject({ code: '54000', message: expect.stringContaining('limit of 5 rows') });
    raw.send(serialize.query('SELECT * FROM orders ORDER BY id LIMIT 5'));
    const ok = await raw.until('readyForQuery');
    expect(ok.filter((m) => m.name === 'dataRow')).toHaveLength(5);
    expect(ok.map((m) => m.name)).not.toContain('error');
    raw.end();
  });

  it('statementTimeout is set upstream: a long statement is cancelled', async () => {
    const s = await client(ports.sleeper);
    expect((await s.query('SHOW statement_timeout')).rows[0].statement_timeout).toBe('500ms');
    const t0 = Date.now();
    const err = await errorOf(s, 'SELECT pg_sleep(5)');
    expect(err?.code).toBe('57014'); // query_canceled
    expect(Date.now() - t0).toBeLessThan(4000);
    await s.end();
  });
});
