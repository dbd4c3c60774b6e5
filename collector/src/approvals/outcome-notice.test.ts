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

  it('an approval the sidecar could not apply (policy reloaded during the hold) is told as a denial, not approved', () => {
    const stale = closed({ outcome: 'denied', reason: 'stale: policy reloaded' });
    expect(slack(stale, { request, decision: decision('approved') })).toBe(
      `🚫 Denied by its sidecar after bob’s approval (stale: policy reloaded): ${HELD}`,
    );
    expect(slack(stale)).not.toMatch(/approved/i);
    const json = JSON.parse(outcomeNoticeBody(stale, { request, decision: decision('approved') }, { format: 'json' }));
    expect(json).toMatchObject({ outcome: 'denied', deniedBecause: 'stale: policy reloaded' });
    expect(json).not.toHaveProperty('grantUntil');
  });

  it('slack: names the approval by id when the queue never saw its request (unlinked), else links to it', () => {
    expect(slack(closed({ outcome: 'withdrawn' }), {})).toBe(
      `↩︎ Cancelled by the client (or it went away): approval ${ID}.`,
    );
    const url = 'https://pgw.example.com';
    // The page lists only requests the queue holds.
    expect(slack(closed({ outcome: 'rejected', by: alice }), {}, url)).not.toContain('<https://');
    expect(slack(closed({ outcome: 'rejected', by: alice }), { request }, url)).toBe(
      `⛔ Rejected by alice: ${HELD} <https://pgw.example.com/?approval=${ID}#approvals|Open in pgwarden>`,
    );
    expect(
      slack(closed({ outcome: 'approved', by: alice, grantUntil: '2026-11-30T13:00:00Z' }), { request }, url),
    ).toBe(
      `✅ Approved by alice (grant until 13:00 UTC): ${HELD} ` +
        `<https://pgw.example.com/?approval=${ID}#approvals|Review the grant in pgwarden>`,
    );
  });

  it('carries the reason of the decision the sidecar applied, cut to 256 characters, in slack and json', () => {
    const withReason = (d: 'approved' | 'rejected', reason: string, by = 'bob') => ({
      request,
      decision: { ...decision(d), by: { name: by, groups: [] }, reason },
    });
    const bob = { name: 'bob', groups: [] };
    expect(slack(closed({ outcome: 'rejected', by: bob }), withReason('rejected', 'not in business hours'))).toBe(
      `⛔ Rejected by bob (“not in business hours”): ${HELD}`,
    );
    expect(slack(closed({ outcome: 'approved', by: bob }), withReason('approved', 'ticket OPS-7'))).toBe(
      `✅ Approved by bob (“ticket OPS-7”): ${HELD}`,
    );
    const json = (c: ApprovalClosedMessage, known: KnownRequest) =>
      JSON.parse(outcomeNoticeBody(c, known, { format: 'json' })).reason;
    expect(json(closed({ outcome: 'rejected', by: bob }), withReason('rejected', 'x'.repeat(300)))).toBe(
      `${'x'.repeat(255)}…`,
    );
    // Not when the closing is not that decision's: another approver's, another outcome, or no decision applied.
    expect(json(closed({ outcome: 'approved', by: alice }), withReason('approved', 'mine'))).toBeUndefined();
    expect(json(closed({ outcome: 'rejected', by: bob }), withReason('approved', 'ok'))).toBeUndefined();
    expect(json(closed({ outcome: 'expired' }), withReason('approved', 'too late'))).toBeUndefined();
    expect(slack(closed({ outcome: 'expired' }), withReason('approved', 'too late'))).not.toContain('too late');
    // A reason is the approver's free text: escaped like every name.
    expect(slack(closed({ outcome: 'rejected', by: bob }), withReason('rejected', '<!here> see <https://x|y>'))).toBe(
      `⛔ Rejected by bob (“&lt;!here&gt; see &lt;https://x|y&gt;”): ${HELD}`,
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
