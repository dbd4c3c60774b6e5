import { type AuditEvent, auditEventSchema, hashEvent, verifyChain } from '@pgwarden/policy';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import type { ProxyHooks, SessionInfo, StatementRecord, Verdict } from '../proxy/hooks.js';
import { createAuditRecorder } from './audit-recorder.js';
import type { AuditSink, GapListener } from './audit-sink.js';
import { AUDIT_UNAVAILABLE_SQLSTATE } from './errors.js';
import { recordPolicyEvent } from './governance-audit.js';
import { withAudit } from './with-audit.js';

const ajv = new Ajv({ allErrors: true });
const validate = ajv.compile(auditEventSchema);

/** A sink that keeps what it is given; `durable` plays the part of a full or broken spool. */
function capturingSink() {
  const events: AuditEvent[] = [];
  let gap: GapListener | undefined;
  const sink: AuditSink & { durable: boolean; fireGap: GapListener } = {
    durable: true,
    emit: (e) => void events.push(JSON.parse(JSON.stringify(e)) as AuditEvent),
    ready: () => sink.durable,
    close: async () => {},
    onGap: (l) => {
      gap = l;
    },
    fireGap: (g) => gap?.(g),
  };
  return { sink, events };
}

const info: SessionInfo = {
  id: 'sess-1',
  startedAt: new Date('2026-01-01T00:00:00Z'),
  client: { address: '127.0.0.1', port: 40000 },
  startup: { user: 'agent', database: 'orders', applicationName: 'psql', params: { user: 'agent', password: 'x' } },
  identity: { namespace: 'agents', serviceAccount: 'analytics', pod: 'analytics-0', groups: ['data-team'] },
  upstream: { host: 'orders-db', port: 5432, database: 'orders', user: 'agent_login', tls: true },
};

const allow: Verdict = {
  action: 'allow',
  rule: 'read-orders',
  policy: { name: 'analytics-agent', hash: 'sha256:abc' },
  statements: [
    { text: 'SELECT * FROM orders', kind: 'select', tables: ['public.orders'], functions: [], fingerprint: 'f1' },
    { text: "ALTER ROLE x PASSWORD 'hunter2'", kind: 'dcl', tables: [], functions: [] },
  ],
};

function record(verdict: Verdict, sql: string, results: StatementRecord['results']): StatementRecord {
  return {
    request: { sql, protocol: 'simple', txStatus: 'I' },
    verdict,
    results,
    startedAt: new Date('2026-01-01T00:00:01.250Z'),
    durationMs: 1.23456,
    upstreamMs: 0.9,
    heldMs: 0,
  };
}

describe('audit recorder', () => {
  it('emits session.start, one statement event per statement, session.end: schema-valid, chained, secret-free', () => {
    const { sink, events } = capturingSink();
    const rec = createAuditRecorder(sink, {
      instanceId: 'i1',
      role: () => 'analytics_ro',
      policy: () => ({ name: 'analytics-agent', hash: 'sha256:abc' }),
    });
    rec.policyLoaded({ name: 'analytics-agent', hash: 'sha256:abc' });
    const s = rec.openSession(info);
    const results = [
      { tag: 'SELECT 2', rows: 2, bytes: 120, masking: { columns: ['public.orders.email'], cells: 2 } },
      { tag: 'ALTER ROLE', rows: 0, bytes: 0 },
    ];
    s.statement(record(allow, "SELECT * FROM orders; ALTER ROLE x PASSWORD 'hunter2'", results));
    s.statement(
      record(
        { action: 'deny', code: '42501', message: 'denied by rule no-ddl', rule: 'no-ddl' },
        'DROP TABLE orders',
        [],
      ),
    );
    s.statement(
      record({ action: 'allow' }, 'SELECT 1; SELECT 2', [
        { tag: 'SELECT 1', rows: 1, bytes: 10 },
        { tag: 'SELECT 1', rows: 1, bytes: 10 },
      ]),
    );
    s.approval('approval.requested', { id: 'ap-1', reason: 'writes need approval' });
    s.end({ error: 'client went away' });

    for (const e of events) expect(validate(e), JSON.stringify(validate.errors)).toBe(true);
    const sess = events.filter((e) => e.session.id === 'sess-1');
    expect(sess.map((e) => e.type)).toEqual([
      'session.start',
      'statement',
      'statement',
      'statement',
      'statement',
      'approval.requested',
      'session.end',
    ]);
    expect(sess.map((e) => e.session.seq)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(verifyChain(events)).toMatchObject({ ok: true, sessions: 2, open: [] });

    const [start, sel, alter, deny, combined] = sess;
    expect(start.identity).toEqual({
      namespace: 'agents',
      serviceAccount: 'analytics',
      pod: 'analytics-0',
      groups: ['data-team'],
    });
    expect(start.database).toEqual({
      host: 'orders-db',
      port: 5432,
      name: 'orders',
      user: 'agent_login',
      role: 'analytics_ro',
    });
    expect(start.client).toEqual({ address: '127.0.0.1', port: 40000, application: 'psql' });
    expect(sel.statement).toMatchObject({ text: 'SELECT * FROM orders', kind: 'select', index: 0, count: 2 });
    expect(sel.result).toEqual({ tag: 'SELECT 2', rows: 2, bytes: 120 });
    expect(sel.masking).toEqual({ columns: ['public.orders.email'], cells: 2 });
    expect(sel.timing).toEqual({ start: '2026-01-01T00:00:01.250000Z', durationMs: 1.235, upstreamMs: 0.9, heldMs: 0 });
    expect(alter.statement?.text).toBe("ALTER ROLE x PASSWORD '[REDACTED]'");
    expect(deny.decision).toEqual({ action: 'deny', rule: 'no-ddl', code: '42501', reason: 'denied by rule no-ddl' });
    expect(deny.result).toBeUndefined();
    expect(combined.statement?.text).toBe('SELECT 1; SELECT 2');
    expect(combined.result).toEqual({ tag: 'SELECT 1', rows: 2, bytes: 20 });
    expect(sess.at(-1)?.end).toMatchObject({ statements: 4, error: 'client went away' });
    expect(JSON.stringify(events)).not.toMatch(/hunter2|"password"/);
    for (const e of events) expect(e.hash).toBe(hashEvent(e));
  });

  it('records sink gaps as audit.gap events in the sidecar chain', () => {
    const { sink, events } = capturingSink();
    createAuditRecorder(sink, { instanceId: 'i2', source: { namespace: 'agents', pod: 'p-0' } });
    sink.fireGap({
      dropped: 3,
      since: '2026-01-01T00:00:00.000001Z',
      until: '2026-01-01T00:00:01.000001Z',
      cause: 'spool_full',
      sessions: [{ id: 's', fromSeq: 4, toSeq: 6 }],
    });
    expect(events).toHaveLength(1);
    expect(validate(events[0]), JSON.stringify(validate.errors)).toBe(true);
    expect(events[0]).toMatchObject({
      type: 'audit.gap',
      id: 'sidecar-i2.1',
      gap: { dropped: 3 },
      identity: { namespace: 'agents' },
    });
  });

  it('records applied control messages (through the governance listener) as control.applied in the sidecar chain', () => {
    const { sink, events } = capturingSink();
    const recorder = createAuditRecorder(sink, { instanceId: 'i3', source: { namespace: 'agents', pod: 'p-0' } });
    const control = {
      kind: 'suspend' as const,
      id: '7f1c2a9e-3b4d-4e5f-8a9b-0c1d2e3f4a5b',
      by: 'dana',
      reason: 'incident 7',
      at: '2026-12-01T03:00:00.000Z',
      policy: { namespace: 'agents', name: 'analyst' },
      signed: true,
      sessionsEnded: 2,
    };
    recordPolicyEvent(recorder, { type: 'control.applied', control });
    recordPolicyEvent(recorder, {
      type: 'control.applied',
      control: { ...control, kind: 'terminate', policy: undefined, session: 'sess-9', signed: false, sessionsEnded: 1 },
    });
    expect(events).toHaveLength(2);
    for (const e of events) expect(validate(e), JSON.stringify(validate.errors)).toBe(true);
    expect(events[0]).toMatchObject({ type: 'control.applied', id: 'sidecar-i3.1', control });
    expect(events[1].control).toMatchObject({ kind: 'terminate', session: 'sess-9', signed: false });
    expect(verifyChain(events).ok).toBe(true);
    // A control block missing what the schema requires is not a valid event.
    expect(validate({ ...events[0], control: { kind: 'suspend' } })).toBe(false);
  });
});

describe('withAudit', () => {
  const inner: ProxyHooks = {
    needsPassword: false,
    authenticate: async () => ({ ok: true, identity: { groups: [] } }),
    openSession: () => ({
      setupSql: () => [],
      checkQuery: () => ({ action: 'allow', rule: 'r' }),
      checkParse: () => ({ action: 'allow', rule: 'r' }),
      checkFunctionCall: () => ({ action: 'deny', code: '42501', message: 'no' }),
      planRows: () => undefined,
      statementDone: () => {},
      close: () => {},
    }),
  };

  it('failMode closed: denies with 53000 while the sink cannot make events durable, and records the denial', async () => {
    const { sink, events } = capturingSink();
    const hooks = withAudit(inner, createAuditRecorder(sink), 'closed');
    const s = hooks.openSession(info);
    const req = { sql: 'SELECT 1', protocol: 'simple' as const, txStatus: 'I' as const };
    expect(await s.checkQuery(req)).toMatchObject({ action: 'allow' });
    sink.durable = false;
    const v = await s.checkQuery(req);
    expect(v).toMatchObject({ action: 'deny', code: AUDIT_UNAVAILABLE_SQLSTATE });
    expect(await s.checkParse(req)).toMatchObject({ action: 'deny', code: '53000' });
    // A statement prepared earlier is refused at each Execute as well.
    const prepared: Verdict = { action: 'allow', rule: 'r' };
    expect(s.checkExecute?.(prepared)).toMatchObject({ action: 'deny', code: '53000' });
    s.statementDone(record(v, 'SELECT 1', []));
    sink.durable = true;
    expect(await s.checkQuery(req)).toMatchObject({ action: 'allow' });
    expect(s.checkExecute?.(prepared)).toBe(prepared);
    s.close({});
    expect(events.map((e) => e.type)).toEqual(['session.start', 'statement', 'session.end']);
    expect(events[1].decision).toMatchObject({ action: 'deny', code: '53000', reason: 'audit_unavailable' });
  });

  it('failMode open: keeps serving while the sink is not ready', async () => {
    const { sink } = capturingSink();
    const hooks = withAudit(inner, createAuditRecorder(sink), 'open');
    sink.durable = false;
    const s = hooks.openSession(info);
    expect(await s.checkQuery({ sql: 'SELECT 1', protocol: 'simple', txStatus: 'I' })).toMatchObject({
      action: 'allow',
    });
    expect(hooks.ready?.()).toBe(true);
  });

  it("the stricter side wins: a policy's audit.failMode closed overrides --audit-fail-mode open; its name and role go into events", async () => {
    const { sink, events } = capturingSink();
    const governed = Object.assign(Object.create(inner) as ProxyHooks, {
      openSession: inner.openSession,
      policy: () => ({
        policy: { name: 'strict', spec: { role: 'ro', audit: { failMode: 'closed' } } },
        hash: 'sha256:s',
      }),
    });
    const hooks = withAudit(governed, createAuditRecorder(sink), 'open');
    sink.durable = false;
    const s = hooks.openSession(info);
    expect(await s.checkQuery({ sql: 'SELECT 1', protocol: 'simple', txStatus: 'I' })).toMatchObject({ code: '53000' });
    expect(events[0]).toMatchObject({
      type: 'session.start',
      policy: { name: 'strict', hash: 'sha256:s' },
      database: { role: 'ro' },
    });
  });
});
