import { initSqlParser, parsePolicyDocuments, type RenderedPolicy, renderPolicy } from '@pgwarden/policy';
import { beforeAll, describe, expect, it } from 'vitest';
import type { SessionInfo, StatementRequest, Verdict } from '../proxy/hooks.js';
import type { ApprovalGate } from './approval-gate.js';
import type { GovernanceEvent } from './governance-events.js';
import { PolicySession } from './policy-session.js';

const yaml = `apiVersion: pgwarden.dev/v1alpha1
kind: DatabaseAccessPolicy
metadata: {name: unit}
spec:
  database: {host: db, name: app}
  role: agent_ro
  rules:
    - {name: reads, action: allow, statements: [select], tables: ["public.*"]}
    - {name: writes, action: review, statements: [delete], tables: ["public.orders"]}
    - {name: audit-only, action: dryrun, statements: [update], tables: ["public.orders"]}
  guardrails: {maxRowsReturned: 100, statementTimeout: 5s}
  approval: {timeout: 10m}
`;
let policy: RenderedPolicy;
beforeAll(async () => {
  await initSqlParser();
  policy = renderPolicy(parsePolicyDocuments(yaml).policies[0], []);
});

const info: SessionInfo = {
  id: 'sess-1',
  startedAt: new Date(),
  client: { address: '127.0.0.1', port: 1 },
  startup: { user: 'agent', database: 'app', params: {} },
  identity: { groups: [] },
  upstream: { host: 'db', port: 5432, database: 'app', user: 'login', tls: false },
};
const q = (sql: string): StatementRequest => ({ sql, protocol: 'simple', txStatus: 'I' });

function session(
  opts: { policy?: () => RenderedPolicy | undefined; approvals?: ApprovalGate; reviewTimeoutMs?: number } = {},
) {
  const events: GovernanceEvent[] = [];
  const s = new PolicySession({
    info,
    policy: opts.policy ?? (() => policy),
    approvals: opts.approvals ?? { request: async () => ({ decision: 'timeout' }) },
    reviewTimeoutMs: opts.reviewTimeoutMs,
    emit: (e) => events.push(e),
  });
  return { s, events };
}

describe('policy session hooks', () => {
  it('answers synchronously when nothing is held, with guardrail limits and per-statement detail', () => {
    const { s } = session();
    const v = s.checkQuery(q('SELECT * FROM orders')) as Verdict;
    expect(v).not.toBeInstanceOf(Promise);
    expect(v).toMatchObject({
      action: 'allow',
      rule: 'reads',
      maxRows: 100,
      timeoutMs: 5000,
      policy: { name: 'unit', hash: policy.hash },
    });
    expect(v.statements).toEqual([
      { text: 'SELECT * FROM orders', kind: 'select', tables: ['public.orders'], functions: [] },
    ]);
    const d = s.checkQuery(q('SELECT 1; DROP TABLE orders')) as Verdict;
    expect(d).toMatchObject({ action: 'deny', code: '42501' });
    expect(d.statements).toHaveLength(2);
    expect(s.checkQuery(q('SELEC 1'))).toMatchObject({ action: 'deny', code: '42601' });
    expect(s.checkQuery(q("UPDATE orders SET status = 'x' WHERE id = 1"))).toMatchObject({
      action: 'dryrun',
      reason: expect.stringMatching(/^would deny/),
    });
    expect(s.setupSql()).toEqual(['SET ROLE "agent_ro"', 'SET statement_timeout = 5000']);
    // search_path is given at login instead (RESET returns to it).
    expect(s.startupParams()).toEqual({ search_path: '"public"' });
  });

  it('holds review statements: approval allows with heldMs, timeout and rejection deny naming the rule', async () => {
    const approved = session({ approvals: { request: async () => ({ decision: 'approved', by: 'dba@example.com' }) } });
    const held = approved.s.checkQuery(q('DELETE FROM orders WHERE id = 1'));
    expect(held).toBeInstanceOf(Promise);
    expect(await held).toMatchObject({
      action: 'allow',
      reason: 'approved by dba@example.com',
      heldMs: expect.any(Number),
    });
    const rejected = session({
      approvals: { request: async () => ({ decision: 'rejected', by: 'dba', reason: 'not today' }) },
    });
    expect(await rejected.s.checkQuery(q('DELETE FROM orders WHERE id = 1'))).toMatchObject({
      action: 'deny',
      code: '42501',
      message: expect.stringContaining('rule "writes" and rejected by dba: not today'),
    });
    let asked = 0;
    const timeout = session({
      reviewTimeoutMs: 5,
      approvals: {
        request: async (r) => {
          asked = r.timeoutMs;
          return { decision: 'timeout' };
        },
      },
    });
    expect(await timeout.s.checkQuery(q('DELETE FROM orders WHERE id = 1'))).toMatchObject({
      action: 'deny',
      reason: 'review-timeout',
    });
    expect(asked).toBe(5);
    expect(timeout.events.map((e) => e.type)).toEqual(['statement.held', 'statement.released']);
    // An unreachable queue is nobody's decision: denied at once, with its own reason, and no approver named.
    const down = session({
      approvals: {
        request: async () => ({
          decision: 'unavailable',
          reason: 'the approval queue is unavailable (NATS is not connected)',
        }),
      },
    });
    expect(await down.s.checkQuery(q('DELETE FROM orders WHERE id = 1'))).toMatchObject({
      action: 'deny',
      code: '42501',
      reason: 'review-unavailable',
      message:
        'pgwarden: statement denied: held for review by rule "writes", but the approval queue is unavailable (NATS is not connected)',
    });
    const released = down.events.find((e) => e.type === 'statement.released');
    expect(released).toMatchObject({ outcome: 'unavailable', reason: expect.stringMatching(/unavailable/) });
    expect(released).not.toHaveProperty('by');
  });

  it('a named Parse is remembered, so SQL EXECUTE of that name is judged as the parsed statement', () => {
    const { s } = session();
    expect(
      s.checkParse({ sql: 'DROP TABLE orders', protocol: 'extended', statementName: 'p1', txStatus: 'I' }),
    ).toMatchObject({ action: 'deny' });
    expect(s.checkQuery(q('EXECUTE p1'))).toMatchObject({ action: 'deny' });
    expect(
      s.checkParse({ sql: 'SELECT * FROM orders', protocol: 'extended', statementName: 'p2', txStatus: 'I' }),
    ).toMatchObject({ action: 'allow' });
    expect(s.checkQuery(q('EXECUTE p2'))).toMatchObject({ action: 'allow' });
  });

  it('fails closed: no policy, a failing check, FunctionCall', () => {
    expect(session({ policy: () => undefined }).s.checkQuery(q('SELECT 1'))).toMatchObject({
      action: 'deny',
      code: '42501',
      reason: 'policy-not-ready',
    });
    const broken = {
      ...policy,
      policy: { ...policy.policy, spec: { ...policy.policy.spec, rules: null } },
    } as unknown as RenderedPolicy;
    const { s, events } = session({ policy: () => broken });
    expect(s.checkQuery(q('SELECT 1'))).toMatchObject({ action: 'deny', code: 'XX000', reason: 'internal-error' });
    expect(events[0]).toMatchObject({ type: 'statement.check_failed', session: 'sess-1' });
    expect(JSON.stringify(events)).not.toContain('SELECT 1');
    expect(session().s.checkFunctionCall(2880)).toMatchObject({
      action: 'deny',
      code: '42501',
      message: expect.stringContaining('FunctionCall'),
    });
  });

  it('decides a prepared statement again once per reload, and not while the policy is unchanged', () => {
    let current = policy;
    const { s } = session({ policy: () => current });
    const parse: StatementRequest = {
      sql: 'SELECT * FROM orders',
      protocol: 'extended',
      statementName: 's1',
      txStatus: 'I',
    };
    const prepared = s.checkParse(parse);
    expect(prepared.action).toBe('allow');
    expect(s.checkExecute(prepared, parse, false)).toBe(prepared);
    const denying = renderPolicy(
      parsePolicyDocuments(yaml.replace('action: allow, statements: [select]', 'action: deny, statements: [select]'))
        .policies[0],
      [],
    );
    expect(denying.hash).not.toBe(policy.hash);
    current = denying;
    const again = s.checkExecute(prepared, parse, false) as Verdict;
    expect(again).toMatchObject({ action: 'deny', code: '42501', rule: 'reads', policy: { hash: denying.hash } });
    expect(s.checkExecute(prepared, parse, false)).toBe(again);
    // The same execution going on keeps the verdict it started under.
    expect(s.checkExecute(prepared, parse, true)).toBe(prepared);
    current = policy;
    expect(s.checkExecute(prepared, parse, false)).toBe(prepared);
  });
});
