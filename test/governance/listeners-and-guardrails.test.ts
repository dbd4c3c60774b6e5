import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GovernedSidecar } from '../../sidecar/src/governance/index.js';
import { freePort } from '../harness/index.js';
import { createGovernanceDb, type GovernanceDb } from './governance-db.js';
import { errorOf, listenerClient, startListeners } from './governed-sidecar.js';
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
  db = await createGovernanceDb('multi');
  ports.reader = await freePort();
  ports.sleeper = await freePort();
  gs = await startListeners(
    db.name,
    [
      policy('reader', ports.reader, db.roles.analyst, {
        rules: [{ name: 'read-orders', action: 'allow', statements: ['select', 'copy'], tables: ['public.orders'] }],
        guardrails: { maxRowsReturned: 5 },
      }),
      policy('sleeper', ports.sleeper, db.roles.writer, {
        rules: [{ name: 'anything-read', action: 'allow', statements: ['select', 'show'] }],
        guardrails: { statementTimeout: '500ms' },
      }),
    ],
    { sslmode: 'disable' },
  );
});
afterAll(async () => {
  await gs?.close(500);
  await db?.drop();
});

const client = listenerClient;

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

  it('maxRowsReturned holds for COPY … TO STDOUT: rows up to the cap, then an error', async () => {
    const raw = await RawClient.connect(ports.reader);
    raw.send(serialize.query('COPY orders TO STDOUT'));
    const msgs = await raw.until('readyForQuery');
    expect(msgs.map((m) => m.name)).toContain('copyOutResponse');
    expect(msgs.filter((m) => m.name === 'copyData')).toHaveLength(5);
    expect(msgs.find((m) => m.name === 'error')).toMatchObject({
      code: '54000',
      message: expect.stringContaining('limit of 5 rows'),
    });
    raw.send(serialize.query('COPY (SELECT * FROM orders ORDER BY id LIMIT 5) TO STDOUT'));
    const ok = await raw.until('readyForQuery');
    expect(ok.filter((m) => m.name === 'copyData')).toHaveLength(5);
    expect(ok.map((m) => m.name)).not.toContain('error');
    expect(ok.find((m) => m.name === 'commandComplete')).toMatchObject({ text: 'COPY 5' });
    // A CSV HEADER line and a binary COPY's trailer are no rows (PostgreSQL's COPY 5 does not count them).
    for (const [options, copyData] of [
      ['FORMAT csv, HEADER', 6],
      ['FORMAT binary', 6],
    ] as const) {
      raw.send(serialize.query(`COPY (SELECT * FROM orders ORDER BY id LIMIT 5) TO STDOUT WITH (${options})`));
      const exact = await raw.until('readyForQuery');
      expect(
        exact.filter((m) => m.name === 'copyData'),
        options,
      ).toHaveLength(copyData);
      expect(
        exact.find((m) => m.name === 'commandComplete'),
        options,
      ).toMatchObject({ text: 'COPY 5' });
      raw.send(serialize.query(`COPY (SELECT * FROM orders ORDER BY id LIMIT 6) TO STDOUT WITH (${options})`));
      const over = await raw.until('readyForQuery');
      expect(
        over.find((m) => m.name === 'error'),
        options,
      ).toMatchObject({ code: '54000' });
    }
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
