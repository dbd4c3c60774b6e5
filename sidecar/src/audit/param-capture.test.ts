import { mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AuditEvent, auditEventSchema } from '@pgwarden/policy';
import { Ajv } from 'ajv';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import { RawClient, serialize } from '../../../test/governance/raw-client.js';
import { ROLES } from '../../../test/harness/index.js';
import { type GovernedSidecar, startGovernedSidecar } from '../governance/index.js';
import { B } from '../protocol/codes.js';
import { runScript, type Step } from '../testing/differential-scripts.js';
import { msg, RawClient as WireClient } from '../testing/raw-client.js';
import { ROLE } from '../testing/sidecar-fixture.js';
import { connectUpstream } from '../upstream/connect.js';
import { createAuditRecorder } from './audit-recorder.js';
import type { AuditSink } from './audit-sink.js';

// audit.captureParams and statements whose Bind fails, through the real governed sidecar against the shared
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
        rules: [{ name: 'read', action: 'allow', statements: ['select', 'prepare'], tables: [`${S}.*`] }],
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

  describe('a statement whose Bind fails', () => {
    it('pg (Parse/Bind/Describe/Execute/Sync in one batch): one event with the error, redacted', async () => {
      writePolicy({ captureParams: true });
      const sql = `SELECT id FROM ${S}.t WHERE id = $1::int`;
      const { error, events } = await run(sql, [SECRET_URI]);
      expect(error?.code).toBe('22P02');
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({
        decision: { action: 'allow' },
        statement: { text: sql, protocol: 'extended', params: ['postgres://app:[REDACTED]@db.internal/app'] },
        result: { rows: 0, error: { code: '22P02' } },
      });
      expect(events[0].result?.error?.message).toContain('invalid input syntax for type integer');
      expect(events[0].result?.error?.message).toContain('[REDACTED]');
      expect(lines.join('\n')).not.toContain('hunter2');
    });

    it('raw protocol, pipelined and Bind-then-Flush: one event each, none for the skipped Execute', async () => {
      writePolicy({});
      const sql = `SELECT id FROM ${S}.t WHERE id = $1::int`;
      const n = lines.length;
      const c = await RawClient.connect(port());
      // Pipelined: Parse, Bind, Execute, Sync at once; PostgreSQL fails the Bind and skips the Execute.
      c.send(
        serialize.parse({ name: 'p1', text: sql }),
        serialize.bind({ statement: 'p1', values: ['abc'] }),
        serialize.execute({}),
        serialize.sync(),
      );
      let got = await c.until('readyForQuery');
      expect(got.map((m) => m.name)).toEqual(['parseComplete', 'error', 'readyForQuery']);
      // Bind-then-Flush: the client sees the Bind's error before it sends its Execute, which is then skipped.
      c.send(serialize.bind({ statement: 'p1', values: ['def'] }), serialize.flush());
      expect((await c.next()).name).toBe('error');
      c.send(serialize.execute({}), serialize.sync());
      got = await c.until('readyForQuery');
      expect(got.map((m) => m.name)).toEqual(['readyForQuery']);
      // The session goes on: a good Bind runs.
      c.send(serialize.bind({ statement: 'p1', values: ['2'] }), serialize.execute({}), serialize.sync());
      got = await c.until('readyForQuery');
      expect(got.map((m) => m.name)).toEqual(['bindComplete', 'dataRow', 'commandComplete', 'readyForQuery']);
      c.end();
      await vi.waitFor(() => expect(lines.slice(n).some((l) => l.includes('"session.end"'))).toBe(true));
      const events = statements(n);
      // A Parse that succeeds records nothing: the two failed Binds and the Execute that ran.
      expect(events.map((e) => e.result?.error?.code ?? e.result?.tag)).toEqual(['22P02', '22P02', 'SELECT 1']);
      for (const e of events.slice(0, 2)) {
        expect(e.statement?.text).toBe(sql);
        expect(e.statement).not.toHaveProperty('params'); // captureParams absent
        expect(e.result?.error?.message).toMatch(/invalid input syntax for type integer/);
      }
      const end = lines
        .slice(n)
        .map((l) => JSON.parse(l) as AuditEvent)
        .find((e) => e.type === 'session.end');
      expect(end?.end?.statements).toBe(events.length);
    });

    it('of a statement pgwarden never checked (SQL PREPARE, or none): the bytes PostgreSQL sends, one event each', async () => {
      writePolicy({});
      const steps: Step[] = [
        { send: [msg.query(`PREPARE sqlprep (int) AS SELECT id FROM ${S}.t WHERE id = $1`)] },
        // Pipelined: the Bind fails, PostgreSQL skips the Execute (which the proxy refuses as unchecked).
        { send: [msg.bind('', 'sqlprep', ['abc']), msg.execute(''), msg.sync()] },
        // Bind-then-Flush: the client sees the error before it sends its Execute, which is then skipped.
        { send: [msg.bind('', 'sqlprep', ['def']), msg.flush()], until: B.ErrorResponse },
        { send: [msg.execute(''), msg.sync()] },
        // No statement of that name at all: 26000.
        { send: [msg.bind('p', 'nosuch'), msg.execute('p'), msg.sync()] },
      ];
      const shared = inject('pg');
      const upstream = { host: shared.host, port: shared.port, database: shared.database, sslmode: 'disable' as const };
      const direct = WireClient.fromSocket((await connectUpstream(upstream, ROLE.scram, {})).socket);
      const want = await runScript(direct, steps);
      direct.close();
      const n = lines.length;
      const proxied = (await WireClient.startup(port())).client;
      const got = await runScript(proxied, steps);
      proxied.close();
      expect(got).toEqual(want);
      expect(want.filter((m) => m.startsWith('E')).map((m) => /\bC(\w{5})\b/.exec(m)?.[1])).toEqual([
        '22P02',
        '22P02',
        '26000',
      ]);
      expect(got.at(-1)).toBe('Z I');
      await vi.waitFor(() => expect(lines.slice(n).some((l) => l.includes('"session.end"'))).toBe(true));
      const events = statements(n);
      expect(events.map((e) => e.result?.error?.code ?? e.result?.tag)).toEqual(['PREPARE', '22P02', '22P02', '26000']);
      for (const e of events.slice(1)) {
        expect(e.decision).toMatchObject({ action: 'deny', reason: 'unchecked portal' });
        expect(e.statement?.protocol).toBe('extended');
      }
      expect(events[3].result?.error?.message).toBe('prepared statement "nosuch" does not exist');
    });
  });
});
