import { describe, expect, it } from 'vitest';
import {
  approvalSubject,
  formatGrantDuration,
  grantDurationMs,
  isApprover,
  parseApprovalClosed,
  parseApprovalDecision,
  parseApprovalRequest,
  parseApprovalRevoked,
  parseApprovalSubject,
  requestFitsSubject,
  STALE_APPROVAL_REASON,
  sidecarApprovalSubject,
} from './approval-messages.js';

const id = '6f1c2e3a-1b2c-4d5e-8f90-123456789abc';
const at = '2026-11-30T12:00:00.000000Z';

describe('approval messages', () => {
  it('accepts well-formed decisions and refuses everything else', () => {
    const ok = { v: 1, id, decision: 'approved', by: { name: 'dana', groups: ['dba'] }, at };
    expect(parseApprovalDecision(JSON.stringify(ok))).toEqual(ok);
    expect(parseApprovalDecision(Buffer.from(JSON.stringify({ ...ok, decision: 'rejected', reason: 'no' })))).toEqual({
      ...ok,
      decision: 'rejected',
      reason: 'no',
    });
    for (const bad of [
      'not json',
      '[]',
      'null',
      JSON.stringify({ ...ok, v: 2 }),
      JSON.stringify({ ...ok, id: 'x.>' }), // not a UUID: it would be a subject wildcard
      JSON.stringify({ ...ok, decision: 'maybe' }),
      JSON.stringify({ ...ok, by: { name: '', groups: [] } }),
      JSON.stringify({ ...ok, by: { name: 'dana', groups: [1] } }),
      JSON.stringify({ ...ok, by: 'dana' }),
      JSON.stringify({ ...ok, reason: 7 }),
    ]) {
      expect(parseApprovalDecision(bad), bad).toBeUndefined();
    }
    expect(parseApprovalDecision(JSON.stringify({ ...ok, reason: 'x'.repeat(1024) }))?.reason).toHaveLength(1024);
    expect(parseApprovalDecision(JSON.stringify({ ...ok, reason: 'x'.repeat(1025) }))).toBeUndefined();
    expect(parseApprovalDecision(JSON.stringify({ ...ok, sig: 7 }))).toBeUndefined();
  });

  it("carries the approver's OIDC subjects and service accounts exactly as sent, or refuses the decision", () => {
    const ok = { v: 1, id, decision: 'approved', by: { name: 'dana', groups: ['dba'] }, at };
    // An earlier collector's decision: no identity fields, and none are made up (the signature covers `by` whole).
    expect(parseApprovalDecision(JSON.stringify(ok))?.by).toStrictEqual({ name: 'dana', groups: ['dba'] });
    const by = {
      name: 'dana',
      groups: ['dba'],
      oidc: [
        { issuer: 'https://idp.example', subject: '00u1' },
        { issuer: 'https://idp.example', subject: '00u1' },
      ],
      serviceAccounts: ['agents/bot'],
    };
    expect(parseApprovalDecision(JSON.stringify({ ...ok, by }))?.by).toStrictEqual(by);
    expect(parseApprovalDecision(JSON.stringify({ ...ok, by: { ...by, oidc: [], serviceAccounts: [] } }))?.by).toEqual({
      ...by,
      oidc: [],
      serviceAccounts: [],
    });
    for (const bad of [
      { oidc: {} },
      { oidc: [{ issuer: 'https://idp.example' }] },
      { oidc: [{ issuer: 'https://idp.example', subject: '' }] },
      { oidc: [{ issuer: 'https://idp.example', subject: 7 }] },
      { oidc: [{ issuer: 'https://idp.example', subject: 'x', name: 'y' }] },
      { oidc: [null] },
      { oidc: [{ issuer: 'i', subject: 'x'.repeat(1025) }] },
      { oidc: Array(257).fill({ issuer: 'i', subject: 's' }) },
      { serviceAccounts: 'agents/bot' },
      { serviceAccounts: [''] },
      { serviceAccounts: [7] },
      { serviceAccounts: Array(257).fill('agents/bot') },
    ]) {
      const text = JSON.stringify({ ...ok, by: { ...ok.by, ...bad } });
      expect(parseApprovalDecision(text), JSON.stringify(bad).slice(0, 80)).toBeUndefined();
      // Revocations and closings name an approver the same way.
      expect(parseApprovalRevoked(JSON.stringify({ v: 1, id, by: { ...ok.by, ...bad }, at }))).toBeUndefined();
    }
  });

  it('reads requests and closings, refusing malformed ones', () => {
    const req = {
      v: 1,
      id,
      session: 's',
      policy: { name: 'writer', hash: 'sha256:1' },
      rule: 'r',
      sql: 'DELETE FROM t WHERE id = 1',
      identity: { groups: [] },
      approvers: { groups: ['dba'] },
      requestedAt: at,
      expiresAt: at,
    };
    expect(parseApprovalRequest(JSON.stringify(req))).toEqual(req);
    expect(parseApprovalRequest(JSON.stringify({ ...req, expiresAt: 'soon' }))).toBeUndefined();
    // Bound values with one format each; formats that do not line up with them, or name another format, are refused.
    const bound = { ...req, params: ['\\x41', '\\x41'], paramFormats: ['text', 'binary'] };
    expect(parseApprovalRequest(JSON.stringify(bound))).toEqual(bound);
    for (const paramFormats of [['text'], ['text', 'hex'], 'text', null])
      expect(parseApprovalRequest(JSON.stringify({ ...bound, paramFormats })), String(paramFormats)).toBeUndefined();
    expect(parseApprovalRequest(JSON.stringify({ ...req, paramFormats: [] }))).toBeUndefined();
    expect(parseApprovalRequest(JSON.stringify({ ...req, policy: { hash: '' } }))).toBeUndefined();
    for (const approvers of [null, [], { groups: 'dba' }, { groups: [1] }, { roles: ['x'] }]) {
      expect(parseApprovalRequest(JSON.stringify({ ...req, approvers })), JSON.stringify(approvers)).toBeUndefined();
    }
    expect(parseApprovalClosed(JSON.stringify({ v: 1, id, outcome: 'withdrawn', at }))).toEqual({
      v: 1,
      id,
      outcome: 'withdrawn',
      at,
    });
    expect(parseApprovalClosed(JSON.stringify({ v: 1, id, outcome: 'ran', at }))).toBeUndefined();
    // An approval the sidecar could not apply: the closing says the statement was denied, and why.
    const denied = { v: 1, id, outcome: 'denied', at, reason: STALE_APPROVAL_REASON };
    expect(parseApprovalClosed(JSON.stringify(denied))).toEqual(denied);
    expect(parseApprovalClosed(JSON.stringify({ ...denied, reason: undefined }))).toBeUndefined();
    expect(parseApprovalClosed(JSON.stringify({ ...denied, reason: 'x'.repeat(257) }))).toBeUndefined();
    expect(parseApprovalClosed(JSON.stringify({ ...denied, outcome: 'approved' }))).not.toHaveProperty('reason');
  });

  it('matches approvers by name or group, with globs, and nobody for empty approvers', () => {
    expect(isApprover({ users: ['dana'] }, { name: 'dana', groups: [] })).toBe(true);
    expect(isApprover({ groups: ['dba-*'] }, { name: 'x', groups: ['dba-emea'] })).toBe(true);
    expect(isApprover({ groups: ['dba'] }, { name: 'dba', groups: [] })).toBe(false);
    expect(isApprover({}, { name: 'dana', groups: ['dba'] })).toBe(false);
    // Exact: another spelling of an approver (which the four-eyes check takes for them) is not an approver.
    for (const name of ['Dana', 'd\u0430na', 'DANA', 'dan\u0430', 'd4na', 'dana+x'])
      expect(isApprover({ users: ['dana'] }, { name, groups: [] }), name).toBe(false);
    expect(isApprover({ users: ['ana@gmail.com'] }, { name: 'a.na@gmail.com', groups: [] })).toBe(false);
    expect(approvalSubject('decision', id)).toBe(`pgwarden.approval.decision.${id}`);
  });

  it('grants: a decision may carry one only with an approval and a duration from 1s to 24h', () => {
    const ok = { v: 1, id, decision: 'approved', by: { name: 'dana', groups: ['dba'] }, at, grant: { for: '30m' } };
    expect(parseApprovalDecision(JSON.stringify(ok))?.grant).toEqual({ for: '30m' });
    for (const bad of [
      { ...ok, decision: 'rejected' }, // a rejection grants nothing
      { ...ok, grant: { for: '25h' } },
      { ...ok, grant: { for: '500ms' } },
      { ...ok, grant: { for: 'soon' } },
      { ...ok, grant: { for: '30m', scope: 'all' } }, // nothing the sidecar would not understand
      { ...ok, grant: '30m' },
      { ...ok, grant: null },
    ]) {
      expect(parseApprovalDecision(JSON.stringify(bad)), JSON.stringify(bad)).toBeUndefined();
    }
    expect(grantDurationMs('1h30m')).toBe(5_400_000);
    expect(grantDurationMs('24h')).toBe(86_400_000);
    for (const ms of [1000, 59_000, 60_000, 5_400_000, 86_400_000, 3_723_000])
      expect(grantDurationMs(formatGrantDuration(ms))).toBe(ms);
    expect(formatGrantDuration(5_400_000)).toBe('1h30m');
  });

  it("a decision made under another approval's grant names it, only as an approval, and never itself", () => {
    const other = '7a2d3f4b-2c3d-4e5f-9a01-23456789abcd';
    const ok = {
      v: 1,
      id,
      decision: 'approved',
      by: { name: 'dana', groups: [] },
      at,
      grant: { for: '90s' },
      under: other,
    };
    expect(parseApprovalDecision(JSON.stringify(ok))).toEqual(ok);
    for (const bad of [
      { ...ok, decision: 'rejected', grant: undefined },
      { ...ok, under: id },
      { ...ok, under: 'not-an-id' },
      { ...ok, under: 7 },
    ])
      expect(parseApprovalDecision(JSON.stringify(bad)), JSON.stringify(bad)).toBeUndefined();
  });

  it('requests and closings name their policy’s namespace in the subject; the collector’s kinds do not', () => {
    expect(sidecarApprovalSubject('closed', 'team-a', id)).toBe(`pgwarden.approval.closed.team-a.${id}`);
    expect(sidecarApprovalSubject('request', undefined, id)).toBe(`pgwarden.approval.request._.${id}`);
    expect(parseApprovalSubject(`pgwarden.approval.closed.team-a.${id}`)).toEqual({
      kind: 'closed',
      id,
      namespace: 'team-a',
    });
    // Earlier sidecars' subjects still parse, without a namespace.
    expect(parseApprovalSubject(`pgwarden.approval.request.${id}`)).toEqual({ kind: 'request', id });
    for (const bad of [
      `pgwarden.approval.decision.team-a.${id}`,
      `pgwarden.approval.closed.a.b.${id}`,
      `pgwarden.approval.closed.team-a.not-an-id`,
    ])
      expect(parseApprovalSubject(bad), bad).toBeUndefined();
    const request = { policy: { name: 'w', hash: 'h', namespace: 'team-a' } } as Parameters<
      typeof requestFitsSubject
    >[0];
    expect(requestFitsSubject(request, 'team-a')).toBe(true);
    expect(requestFitsSubject(request, undefined)).toBe(true);
    expect(requestFitsSubject(request, 'team-b')).toBe(false);
  });

  it('revocations: parsed on their own subject, refused when malformed', () => {
    expect(parseApprovalSubject(approvalSubject('revoked', id))).toEqual({ kind: 'revoked', id });
    const ok = { v: 1, id, by: { name: 'dana', groups: ['dba'] }, at, reason: 'done' };
    expect(parseApprovalRevoked(JSON.stringify(ok))).toEqual(ok);
    for (const bad of [
      { ...ok, id: 'x' },
      { ...ok, by: 'dana' },
      { ...ok, at: 'yesterday' },
      { ...ok, reason: 'x'.repeat(1025) },
      { ...ok, sig: 1 },
    ])
      expect(parseApprovalRevoked(JSON.stringify(bad)), JSON.stringify(bad)).toBeUndefined();
  });

  it('a request says whether its sidecar reads the approver identities of a decision, with `true` or not at all', () => {
    const r = {
      v: 1,
      id,
      session: 's',
      policy: { name: 'p', hash: 'h' },
      rule: '',
      sql: 'DELETE FROM t',
      identity: { user: 'ana' },
      approvers: { groups: ['dba'] },
      requestedAt: at,
      expiresAt: at,
    };
    expect(parseApprovalRequest(JSON.stringify(r))).not.toHaveProperty('approverIdentities');
    expect(parseApprovalRequest(JSON.stringify({ ...r, approverIdentities: true }))?.approverIdentities).toBe(true);
    for (const bad of [false, 'true', 1, null])
      expect(parseApprovalRequest(JSON.stringify({ ...r, approverIdentities: bad })), String(bad)).toBeUndefined();
  });

  it('requests and closings carry the grant fields only when well-formed', () => {
    const req = {
      v: 1,
      id,
      session: 's',
      policy: { name: 'writer', hash: 'sha256:x' },
      rule: 'r',
      sql: 'DELETE FROM t WHERE id = 1',
      identity: {},
      approvers: { groups: ['dba'] },
      requestedAt: at,
      expiresAt: at,
    };
    expect(parseApprovalRequest(JSON.stringify({ ...req, grantMax: '1h', fingerprint: 'abc' }))?.grantMax).toBe('1h');
    expect(parseApprovalRequest(JSON.stringify({ ...req, grantMax: '48h' }))).toBeUndefined();
    const grantKey = 'ab'.repeat(32);
    expect(parseApprovalRequest(JSON.stringify({ ...req, grantMax: '1h', grantKey }))?.grantKey).toBe(grantKey);
    for (const bad of ['AB'.repeat(32), 'ab'.repeat(31), 42])
      expect(parseApprovalRequest(JSON.stringify({ ...req, grantKey: bad })), String(bad)).toBeUndefined();
    const closed = { v: 1, id, outcome: 'approved', at, grantUntil: at };
    expect(parseApprovalClosed(JSON.stringify(closed))?.grantUntil).toBe(at);
    expect(parseApprovalClosed(JSON.stringify({ ...closed, outcome: 'rejected' }))?.grantUntil).toBeUndefined();
    expect(parseApprovalClosed(JSON.stringify({ ...closed, grantUntil: 'later' }))?.grantUntil).toBeUndefined();
  });
});
