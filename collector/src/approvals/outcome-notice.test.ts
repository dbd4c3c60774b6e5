import type { ApprovalClosedMessage, ApprovalDecisionMessage } from '@pgwarden/policy';
import { describe, expect, it } from 'vitest';
import { approvalRequest } from '../testing/approval-messages.js';
import { type KnownRequest, outcomeNoticeBody } from './outcome-notice.js';

const ID = '0b9a4a4e-8a55-4c4e-9a39-3f4f3b1c2d10';
const AT = '2026-11-30T12:03:00.000Z';
const request = approvalRequest({ id: ID, requestedAt: '2026-11-30T12:00:00.000Z' });
const alice = { name: 'alice', groups: ['dba'] };
const closed = (over: Partial<ApprovalClosedMessage>): ApprovalClosedMessage => ({
  v: 1,
  id: ID,
  outcome: 'approved',
  at: AT,
  ...over,
});
const decision = (d: 'approved' | 'rejected'): ApprovalDecisionMessage => ({
  v: 1,
  id: ID,
  decision: d,
  by: { name: 'bob', groups: [] },
  at: '2026-11-30T12:02:00.000Z',
});
const slack = (c: ApprovalClosedMessage, known: KnownRequest = { request }, publicUrl?: string) =>
  JSON.parse(outcomeNoticeBody(c, known, { format: 'slack', publicUrl })).text;
const HELD = 'policy agents/writer-review, rule writes-need-approval, asked by ana.';

describe('follow-up bodies', () => {
  it('slack: one line per outcome saying who ended the wait and how, then which statement', () => {
    expect(slack(closed({ outcome: 'approved', by: alice }))).toBe(`✅ Approved by alice: ${HELD}`);
    expect(slack(closed({ outcome: 'approved', by: alice, grantUntil: '2026-11-30T13:42:10.000Z' }))).toBe(
      `✅ Approved by alice (grant until 13:42 UTC): ${HELD}`,
    );
    // A grant that ends on another day says which.
    expect(slack(closed({ outcome: 'approved', by: alice, grantUntil: '2026-12-01T09:15:00.000Z' }))).toContain(
      '(grant until 2026-12-01 09:15 UTC)',
    );
    expect(slack(closed({ outcome: 'rejected', by: { name: 'bob', groups: [] } }))).toBe(`⛔ Rejected by bob: ${HELD}`);
    expect(slack(closed({ outcome: 'expired' }))).toBe(`⌛ Expired without a decision: ${HELD}`);
    expect(slack(closed({ outcome: 'expired' }), { request, decision: decision('approved') })).toBe(
      `⌛ Expired before bob’s approval reached its sidecar: ${HELD}`,
    );
    expect(slack(closed({ outcome: 'expired' }), { request, decision: decision('rejected') })).toContain(
      'before bob’s rejection reached',
    );
    expect(slack(closed({ outcome: 'withdrawn' }))).toBe(`↩︎ Cancelled by the client (or it went away): ${HELD}`);
    expect(slack(closed({ outcome: 'refused' }))).toBe(
      `🚫 Refused (its sidecar could not hold it for approval): ${HELD}`,
    );
  });

  it('slack: names the approval by id when the queue never saw its request, and links only to an active grant', () => {
    expect(slack(closed({ outcome: 'withdrawn' }), {})).toBe(
      `↩︎ Cancelled by the client (or it went away): approval ${ID}.`,
    );
    const url = 'https://pgw.example.com';
    expect(slack(closed({ outcome: 'rejected', by: alice }), { request }, url)).not.toContain('<https://');
    expect(
      slack(closed({ outcome: 'approved', by: alice, grantUntil: '2026-11-30T13:00:00Z' }), { request }, url),
    ).toBe(
      `✅ Approved by alice (grant until 13:00 UTC): ${HELD} ` +
        `<https://pgw.example.com/?approval=${ID}#approvals|Review the grant in pgwarden>`,
    );
  });

  it('slack: escaped, so no name in it can ping a channel or forge a link', () => {
    const hostile = slack(closed({ outcome: 'approved', by: { name: '<!channel>', groups: [] } }), {
      request: { ...request, identity: { user: '<https://evil.example|click>' } },
    });
    expect(hostile).not.toMatch(/<!channel>|<https:\/\/evil/);
    expect(hostile).toContain('Approved by &lt;!channel&gt;');
    expect(hostile).toContain('asked by &lt;https://evil.example|click&gt;');
  });

  it('json: the documented fields, the request’s policy and session when known, never its SQL', () => {
    const body = outcomeNoticeBody(
      closed({ outcome: 'approved', by: alice, grantUntil: '2026-11-30T13:00:00.000Z' }),
      { request },
      { format: 'json', publicUrl: 'https://pgw.example.com/' },
    );
    expect(JSON.parse(body)).toEqual({
      type: 'approval.closed',
      id: ID,
      outcome: 'approved',
      by: { name: 'alice' },
      at: AT,
      grantUntil: '2026-11-30T13:00:00.000Z',
      policy: { name: 'writer-review', namespace: 'agents' },
      rule: 'writes-need-approval',
      session: 'sess-held-1',
      url: `https://pgw.example.com/?approval=${ID}#approvals`,
    });
    expect(body).not.toContain(request.sql);
    expect(JSON.parse(outcomeNoticeBody(closed({ outcome: 'expired' }), {}, { format: 'json' }))).toEqual({
      type: 'approval.closed',
      id: ID,
      outcome: 'expired',
      at: AT,
    });
  });
});
