import { mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AuditEvent, auditEventSchema } from '@pgwarden/policy';
import { Ajv } from 'ajv';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import { ROLES } from '../../../test/harness/index.js';
import { type GovernedSidecar, startGovernedSidecar } from '../governance/index.js';
import { withPolicyMasking } from '../masking/index.js';
import { createAuditRecorder } from './audit-recorder.js';
import type { AuditSink } from './audit-sink.js';

// audit.captureResults through the real governed sidecar with masking, against the shared PostgreSQL: the sample
// is taken after masking, capped at maxResultBytes, scrubbed by the content detectors, and absent unless `rows`.
const S = 'audit_capture';
const ROWS = 40;
const validate = new Ajv({ allErrors: true }).compile(auditEventSchema);
const lines: string[] = [];
const sink: AuditSink = { emit: (e) => void lines.push(JSON.stringify(e)), ready: () => true, close: async () => {} };
const secretOf = (i: number) => `raw-secret-${i}-q7z`;
// Only a content detector (not a column rule) covers this one; the client sees it, the audit sample must not.
const cardOf = (i: number) => `card 4111111111111111 row ${i}`;
let gs: GovernedSidecar;
let policyFile: string;
let admin: pg.Client;

function writePolicy(audit: object): void {
  const policy = {
    apiVersion: 'pgwarden.dev/v1alpha1',
    kind: 'DatabaseAccessPolicy',
    metadata: { name: 'capture', namespace: 'agents' },
    spec: {
      database: { host: 'unused', name: 'app' },
      authentication: { mode: 'workload' },
      rules: [{ name: 'read', action: 'allow', statements: ['select'], tables: [`${S}.*`] }],
      audit,
    },
  };
  const rule = {
    apiVersion: 'pgwarden.dev/v1alpha1',
    kind: 'MaskingRule',
    metadata: { name: 'secrets', namespace: 'agents' },
    spec: {
      policies: ['capture'],
      columns: [{ table: `${S}.people`, column: 'secret', strategy: { type: 'redact' } }],
    },
  };
  writeFileSync(`${policyFile}.tmp`, [policy, rule].map((d) => JSON.stringify(d)).join('\n---\n'));
  renameSync(`${policyFile}.tmp`, policyFile);
  if (gs) expect(gs.source.reload()).toMatchObject({ type: 'policy.loaded' });
}

beforeAll(async () => {
  const shared = inject('pg');
  admin = new pg.Client({ ...ROLES.scram, host: shared.host, port: shared.port, database: shared.database });
  admin.on('error', () => {});
  await admin.connect();
  await admin.query(`DROP SCHEMA IF EXISTS ${S} CASCADE; CREATE SCHEMA ${S};
    CREATE TABLE ${S}.people (id int PRIMARY KEY, name text, secret text, note text)`);
  for (let i = 1; i <= ROWS; i++)
    await admin.query(`INSERT INTO ${S}.people VALUES ($1, $2, $3, $4)`, [i, `name-${i}`, secretOf(i), cardOf(i)]);
  policyFile = join(mkdtempSync(join(tmpdir(), 'pgwarden-capture-')), 'policy.yaml');
  writePolicy({ captureResults: 'rows', maxResultBytes: 300 });
  const upstream = { host: shared.host, port: shared.port, database: shared.database, sslmode: 'disable' as const };
  const credentials = { username: ROLES.scram.user, password: ROLES.scram.password };
  gs = await startGovernedSidecar({
    policyPath: policyFile,
    listenPort: 0,
    upstream,
    credentials,
    audit: sink,
    auditRecorder: createAuditRecorder(sink, { instanceId: 'capture' }),
    http: false,
    pollMs: 0,
    wrapHooks: (hooks) => withPolicyMasking(hooks, { policy: () => hooks.policy(), upstream, credentials }),
  });
});
afterAll(async () => {
  await gs?.close(100);
  await admin?.query(`DROP SCHEMA IF EXISTS ${S} CASCADE`).catch(() => {});
  await admin?.end();
});

async function run(
  sql: string,
  params?: unknown[],
): Promise<{ rows: Record<string, unknown>[]; events: AuditEvent[] }> {
  const n = lines.length;
  const c = new pg.Client({ host: '127.0.0.1', port: gs.listeners[0].sidecar.port, user: 'agent', database: 'app' });
  c.on('error', () => {});
  await c.connect();
  const r = await c.query(sql, params).finally(() => c.end());
  const events = lines.slice(n).map((l) => JSON.parse(l) as AuditEvent);
  for (const e of events) expect(validate(e), JSON.stringify(validate.errors)).toBe(true);
  return { rows: r.rows, events: events.filter((e) => e.type === 'statement') };
}

describe('audit.captureResults', () => {
  it('rows: a sample of the masked rows, capped at maxResultBytes, scrubbed by the content detectors', async () => {
    const { rows, events } = await run(`SELECT id, name, secret, note FROM ${S}.people ORDER BY id`);
    expect(rows).toHaveLength(ROWS);
    expect(rows[0].secret).toBe('****'); // the client got the masked value
    expect(rows[0].note).toBe(cardOf(1)); // no detector configured for the client's rows
    const result = events[0].result!;
    expect(result).toMatchObject({ tag: `SELECT ${ROWS}`, rows: ROWS });
    const sample = result.sample!;
    expect(sample.columns).toEqual(['id', 'name', 'secret', 'note']);
    expect(sample.truncated).toBe(true);
    expect(sample.rows.length).toBeGreaterThan(2);
    expect(sample.rows.length).toBeLessThan(ROWS);
    const size = sample.rows.flat().reduce((n, v) => n + (v === null ? 0 : Buffer.byteLength(v)), 0);
    expect(size).toBeLessThanOrEqual(300);
    expect(sample.rows[0]).toEqual(['1', 'name-1', '****', 'card **************** row 1']);
    const all = lines.join('\n');
    for (let i = 1; i <= ROWS; i++) expect(all).not.toContain(secretOf(i));
    expect(all).not.toContain('4111111111111111');
  });

  it('rows: the extended protocol (bind parameters) and a multi-statement Query get one sample per result', async () => {
    const ext = await run(`SELECT id, secret FROM ${S}.people WHERE id <= $1 ORDER BY id`, [3]);
    expect(ext.events[0].statement?.protocol).toBe('extended');
    expect(ext.events[0].result?.sample).toEqual({
      columns: ['id', 'secret'],
      rows: [
        ['1', '****'],
        ['2', '****'],
        ['3', '****'],
      ],
      truncated: false,
    });
    const multi = await run(`SELECT id FROM ${S}.people WHERE id = 1; SELECT name FROM ${S}.people WHERE id = 2`);
    expect(multi.events.map((e) => e.result?.sample)).toEqual([
      { columns: ['id'], rows: [['1']], truncated: false },
      { columns: ['name'], rows: [['name-2']], truncated: false },
    ]);
  });

  it('summary records tag, rows and bytes without a sample; none records no result', async () => {
    writePolicy({ captureResults: 'summary', maxResultBytes: 300 });
    const summary = await run(`SELECT id, secret FROM ${S}.people ORDER BY id`);
    expect(summary.events[0].result).toMatchObject({ tag: `SELECT ${ROWS}`, rows: ROWS });
    expect(summary.events[0].result?.bytes).toBeGreaterThan(0);
    expect(summary.events[0].result?.sample).toBeUndefined();
    writePolicy({ captureResults: 'none' });
    const none = await run(`SELECT id, secret FROM ${S}.people ORDER BY id`);
    expect(none.rows).toHaveLength(ROWS);
    expect(none.events).toHaveLength(1);
    expect(none.events[0].result).toBeUndefined();
    // A failed statement keeps its error even under `none`.
    const failed = await run(`SELECT id / (id - 1) FROM ${S}.people`).catch((e: Error & { code?: string }) => e);
    expect((failed as { code?: string }).code).toBe('22012');
    // pg rejects on the ErrorResponse; the proxy records the statement at its ReadyForQuery, which may come later.
    await vi.waitFor(() => {
      const err = lines.map((l) => JSON.parse(l) as AuditEvent).findLast((e) => e.type === 'statement');
      expect(err?.result).toMatchObject({ error: { code: '22012' } });
      expect(err?.result?.tag).toBeUndefined();
    });
    writePolicy({ captureResults: 'rows', maxResultBytes: 300 });
  });
});
