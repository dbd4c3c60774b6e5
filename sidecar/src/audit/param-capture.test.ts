import { mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AuditEvent, auditEventSchema } from '@pgwarden/policy';
import { Ajv } from 'ajv';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import { ROLES } from '../../../test/harness/index.js';
import { type GovernedSidecar, startGovernedSidecar } from '../governance/index.js';
import { createAuditRecorder } from './audit-recorder.js';
import type { AuditSink } from './audit-sink.js';

// audit.captureParams through the real governed sidecar against the shared
// PostgreSQL, with both encodings of statement events: the event object (sinks like NATS) and the canonical JSON
// written directly (file, stdout: statement-json.ts).
const S = 'audit_params';
const SECRET_URI = 'postgres://app:hunter2@db.internal/app';
const validate = new Ajv({ allErrors: true }).compile(auditEventSchema);

function sinkOf(kind: 'object' | 'json', lines: string[]): AuditSink {
  const base = { ready: () => true, close: async () => {} };
  return kind === 'object'
    ? { ...base, emit: (e) => void lines.push(JSON.stringify(e)) }
    : { ...base, emit: () => expect.fail('emitJson expected'), emitJson: (json) => void lines.push(json) };
}

let admin: pg.Client;
beforeAll(async () => {
  const shared = inject('pg');
  admin = new pg.Client({ ...ROLES.scram, host: shared.host, port: shared.port, database: shared.database });
  admin.on('error', () => {});
  await admin.connect();
  await admin.query(`DROP SCHEMA IF EXISTS ${S} CASCADE; CREATE SCHEMA ${S};
    CREATE TABLE ${S}.t (id int PRIMARY KEY, note text); INSERT INTO ${S}.t VALUES (1, 'one'), (2, 'two')`);
});
afterAll(async () => {
  await admin?.query(`DROP SCHEMA IF EXISTS ${S} CASCADE`).catch(() => {});
  await admin?.end();
});

describe.each(['object', 'json'] as const)('statement events (%s encoding)', (kind) => {
  const lines: string[] = [];
  let gs: GovernedSidecar;
  let policyFile: string;
  let written = '';

  /** Writes the policy and reloads it (a reload of the same text changes nothing and says nothing). */
  function writePolicy(audit: object): void {
    const policy = {
      apiVersion: 'pgwarden.dev/v1alpha1',
      kind: 'DatabaseAccessPolicy',
      metadata: { name: 'params', namespace: 'agents' },
      spec: {
        database: { host: 'unused', name: 'app' },
        authentication: { mode: 'workload' },
        rules: [{ name: 'read', action: 'allow', statements: ['select'], tables: [`${S}.*`] }],
        audit,
      },
    };
    const text = JSON.stringify(policy);
    if (text === written) return;
    written = text;
    writeFileSync(`${policyFile}.tmp`, text);
    renameSync(`${policyFile}.tmp`, policyFile);
    if (gs) expect(gs.source.reload()).toMatchObject({ type: 'policy.loaded' });
  }

  beforeAll(async () => {
    const shared = inject('pg');
    policyFile = join(mkdtempSync(join(tmpdir(), 'pgwarden-params-')), 'policy.yaml');
    writePolicy({ captureParams: true });
    const upstream = { host: shared.host, port: shared.port, database: shared.database, sslmode: 'disable' as const };
    const sink = sinkOf(kind, lines);
    gs = await startGovernedSidecar({
      policyPath: policyFile,
      listenPort: 0,
      upstream,
      credentials: { username: ROLES.scram.user, password: ROLES.scram.password },
      audit: sink,
      auditRecorder: createAuditRecorder(sink, { instanceId: `params-${kind}` }),
      http: false,
      pollMs: 0,
    });
  });
  afterAll(async () => {
    await gs?.close(100);
  });

  const port = () => gs.listeners[0].sidecar.port;
  const statements = (from: number): AuditEvent[] => {
    const events = lines.slice(from).map((l) => JSON.parse(l) as AuditEvent);
    for (const e of events) expect(validate(e), JSON.stringify(validate.errors)).toBe(true);
    return events.filter((e) => e.type === 'statement');
  };

  /** Runs one statement with `pg` on a fresh connection; its events once the session has ended. */
  async function run(sql: string, params: unknown[]): Promise<{ error?: { code?: string }; events: AuditEvent[] }> {
    const n = lines.length;
    const c = new pg.Client({ host: '127.0.0.1', port: port(), user: 'agent', database: 'app' });
    c.on('error', () => {});
    await c.connect();
    const error = await c.query(sql, params).then(
      () => undefined,
      (e: { code?: string }) => e,
    );
    await c.end();
    await vi.waitFor(() => expect(lines.slice(n).some((l) => l.includes('"session.end"'))).toBe(true));
    return { error, events: statements(n) };
  }

  describe('audit.captureParams', () => {
    it('true: an Execute records the values its Bind gave, with their formats; secrets redacted, long ones cut', async () => {
      writePolicy({ captureParams: true });
      const long = 'x'.repeat(5000);
      const { error, events } = await run(`SELECT id FROM ${S}.t WHERE id = $1 AND note <> $2 AND note <> $3`, [
        1,
        SECRET_URI,
        long,
      ]);
      expect(error).toBeUndefined();
      expect(events).toHaveLength(1);
      const st = events[0].statement!;
      expect(st.protocol).toBe('extended');
      expect(st.params).toEqual([
        '1',
        'postgres://app:[REDACTED]@db.internal/app',
        `${'x'.repeat(4096)}…[truncated 904 chars]`,
      ]);
      expect(st.paramFormats).toEqual(['text', 'text', 'text']);
      expect(lines.join('\n')).not.toContain('hunter2');
    });

    it('false or absent: no params; a reload applies to the next statement', async () => {
      writePolicy({ captureParams: false });
      const off = await run(`SELECT id FROM ${S}.t WHERE id = $1`, [2]);
      expect(off.events).toHaveLength(1);
      expect(off.events[0].statement).not.toHaveProperty('params');
      expect(off.events[0].statement).not.toHaveProperty('paramFormats');
      writePolicy({});
      const absent = await run(`SELECT id FROM ${S}.t WHERE id = $1`, [2]);
      expect(absent.events[0].statement).not.toHaveProperty('params');
      writePolicy({ captureParams: true });
      const on = await run(`SELECT id FROM ${S}.t WHERE id = $1`, [2]);
      expect(on.events[0].statement?.params).toEqual(['2']);
    });
  });
});
