import { describe, expect, it } from 'vitest';
import {
  approvalSubject,
  isApprover,
  parseApprovalClosed,
  parseApprovalDecision,
  parseApprovalRequest,
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
  });

  it('matches approvers by name or group, with globs, and nobody for empty approvers', () => {
    expect(isApprover({ users: ['dana'] }, { name: 'dana', groups: [] })).toBe(true);
    expect(isApprover({ groups: ['dba-*'] }, { name: 'x', groups: ['dba-emea'] })).toBe(true);
    expect(isApprover({ groups: ['dba'] }, { name: 'dba', groups: [] })).toBe(false);
    expect(isApprover({}, { name: 'dana', groups: ['dba'] })).toBe(false);
    expect(approvalSubject('decision', id)).toBe(`pgwarden.approval.decision.${id}`);
  });
});
