import { randomUUID } from 'node:crypto';
import { type ApprovalDecisionMessage, approvalSubject, sidecarApprovalSubject } from '@pgwarden/policy';
import { describe, expect, it } from 'vitest';
import type { CollectorError } from '../errors.js';
import { approvalClosed, approvalRequest } from '../testing/approval-messages.js';
import { ApprovalBook } from './approval-book.js';

const T0 = Date.parse('2026-11-30T12:00:00Z');
const alice = { name: 'alice', groups: ['dba'] };

const request = (over: Parameters<typeof approvalRequest>[0] = {}) =>
  approvalRequest({
    requestedAt: new Date(T0).toISOString(),
    expiresAt: new Date(T0 + 600_000).toISOString(),
    ...over,
  });
const decision = (id: string, d: 'approved' | 'rejected' = 'approved', by = alice): ApprovalDecisionMessage => ({
  v: 1,
  id,
  decision: d,
  by,
  at: new Date(T0 + 1000).toISOString(),
});
const put = (
  book: ApprovalBook,
  kind: 'request' | 'decision' | 'closed' | 'revoked' | 'notified',
  msg: { id: string },
  at = T0,
) => book.apply(approvalSubject(kind, msg.id), JSON.stringify(msg), at);

const codeOf = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    return (err as CollectorError).code;
  }
  return 'no error';
};

describe('ApprovalBook', () => {
  it('derives pending → decided → the closed outcome, and expired from the clock alone', () => {
    const book = new ApprovalBook();
    const r = request();
    expect(put(book, 'request', r)).toBe('applied');
    expect(book.get(r.id, T0)?.state).toBe('pending');
    expect(book.countPending(T0)).toBe(1);
    // No message arrives: past expiresAt the same entry is expired.
    expect(book.get(r.id, T0 + 600_001)?.state).toBe('expired');
    expect(book.countPending(T0 + 600_001)).toBe(0);

    put(book, 'decision', decision(r.id));
    expect(book.get(r.id, T0)).toMatchObject({ state: 'decided', decision: { by: alice } });
    // A decision made in time stays decided even after expiresAt: the sidecar may still be applying it.
    expect(book.get(r.id, T0 + 600_001)?.state).toBe('decided');
    put(book, 'closed', approvalClosed(r.id, 'approved', alice));
    expect(book.get(r.id, T0)).toMatchObject({ state: 'approved', closed: { outcome: 'approved' } });
  });

  it('reaches the same state whatever order the messages arrive in; the first of each kind wins', () => {
    const r = request();
    const msgs: ['request' | 'decision' | 'closed', { id: string }][] = [
      ['request', r],
      ['decision', decision(r.id, 'rejected')],
      ['closed', approvalClosed(r.id, 'rejected', alice)],
    ];
    const orders = [
      [0, 1, 2],
      [0, 2, 1],
      [1, 0, 2],
      [1, 2, 0],
      [2, 0, 1],
      [2, 1, 0],
    ];
    for (const order of orders) {
      const book = new ApprovalBook();
      for (const i of order) put(book, msgs[i][0], msgs[i][1]);
      expect(book.get(r.id, T0), order.join()).toMatchObject({ state: 'rejected', decision: { decision: 'rejected' } });
    }
    // Before the request arrives, an id with only a decision is not listed and cannot be looked up.
    const early = new ApprovalBook();
    put(early, 'decision', decision(r.id));
    expect(early.list('all', T0)).toEqual([]);
    expect(early.get(r.id, T0)).toBeUndefined();

    const book = new ApprovalBook();
    put(book, 'request', r);
    put(book, 'decision', decision(r.id, 'rejected'));
    expect(put(book, 'decision', decision(r.id, 'approved'))).toBe('repeated');
    expect(put(book, 'request', { ...r, sql: 'DROP TABLE x' })).toBe('repeated');
    expect(book.get(r.id, T0)).toMatchObject({ decision: { decision: 'rejected' }, request: { sql: r.sql } });
  });

  it('keeps when a notice went out (the first record), whatever arrives before or after it', () => {
    const book = new ApprovalBook();
    const r = request();
    const at = new Date(T0 + 500).toISOString();
    // A record before its request (another replica's stream position) is kept until the request arrives.
    expect(put(book, 'notified', { v: 1, id: r.id, at } as { id: string })).toBe('applied');
    expect(book.get(r.id, T0)).toBeUndefined();
    put(book, 'request', r);
    expect(book.get(r.id, T0)).toMatchObject({ state: 'pending', notifiedAt: at });
    const later = { v: 1, id: r.id, at: new Date(T0 + 900).toISOString() };
    expect(put(book, 'notified', later)).toBe('repeated');
    expect(book.get(r.id, T0)?.notifiedAt).toBe(at);
    const other = request();
    put(book, 'request', other);
    expect(book.get(other.id, T0)).not.toHaveProperty('notifiedAt');
    for (const bad of [
      { v: 1, id: other.id },
      { v: 1, id: other.id, at: 'soon' },
      { v: 2, id: other.id, at },
    ])
      expect(put(book, 'notified', bad as { id: string })).toBe('malformed');
    expect(book.get(other.id, T0)).not.toHaveProperty('notifiedAt');
  });

  it('refuses malformed messages without keeping anything', () => {
    const book = new ApprovalBook();
    const r = request();
    const other = randomUUID();
    expect(book.apply(approvalSubject('request', r.id), '{"v":1', T0)).toBe('malformed');
    expect(book.apply(approvalSubject('request', r.id), JSON.stringify({ ...r, v: 2 }), T0)).toBe('malformed');
    // The subject's id and the body's must agree: a message cannot speak for another request.
    expect(book.apply(approvalSubject('decision', other), JSON.stringify(decision(r.id)), T0)).toBe('malformed');
    expect(book.apply(`pgwarden.approval.verdict.${r.id}`, JSON.stringify(decision(r.id)), T0)).toBe('malformed');
    expect(book.apply('pgwarden.approval.request.not-a-uuid', JSON.stringify(r), T0)).toBe('malformed');
    expect(book.size).toBe(0);
  });

  it('takes a closing only on its request’s namespace, in either order; earlier sidecars’ subjects pair with each other', () => {
    const on = (ns: string | undefined, kind: 'request' | 'closed', msg: { id: string }) =>
      ns === undefined ? approvalSubject(kind, msg.id) : sidecarApprovalSubject(kind, ns, msg.id);
    // [the request's (and its real closing's) subject namespace, a forged closing's]: undefined is none.
    for (const [own, forged] of [
      ['agents', 'team-b'],
      ['agents', undefined],
      [undefined, 'agents'],
    ] as const) {
      for (const closingFirst of [false, true]) {
        const book = new ApprovalBook();
        const r = request();
        const steps: [string | undefined, 'request' | 'closed', { id: string }][] = [
          [forged, 'closed', approvalClosed(r.id, 'withdrawn')],
          [own, 'closed', approvalClosed(r.id, 'approved', alice)],
        ];
        if (closingFirst) steps.push([own, 'request', r]);
        else steps.unshift([own, 'request', r]);
        const outcomes = steps.map(([ns, kind, msg]) => book.apply(on(ns, kind, msg), JSON.stringify(msg), T0));
        const label = `${own} ← ${forged}, closings ${closingFirst ? 'first' : 'last'}`;
        // Before its request is known nothing can tell a closing from another: each waits under its namespace.
        expect(outcomes, label).toEqual(
          closingFirst ? ['applied', 'applied', 'applied'] : ['applied', 'foreign', 'applied'],
        );
        expect(book.get(r.id, T0)?.state, label).toBe('approved');
        expect(book.closingFits(r.id, forged), label).toBe(false);
        expect(book.closingFits(r.id, own), label).toBe(true);
      }
    }
    // A request whose subject names another namespace than its policy's is not queued at all.
    const book = new ApprovalBook();
    const r = request({ policy: { name: 'writer', hash: 'sha256:1', namespace: 'agents' } });
    expect(book.apply(sidecarApprovalSubject('request', 'team-b', r.id), JSON.stringify(r), T0)).toBe('foreign');
    expect(book.size).toBe(0);
    expect(book.apply(sidecarApprovalSubject('request', 'agents', r.id), JSON.stringify(r), T0)).toBe('applied');
  });

  it('lets only a listed approver who did not ask decide a pending request', () => {
    const book = new ApprovalBook();
    const r = request();
    put(book, 'request', r);
    expect(codeOf(() => book.checkDecision(randomUUID(), alice, T0))).toBe('COLLECTOR_APPROVAL_UNKNOWN');
    expect(codeOf(() => book.checkDecision(r.id, { name: 'mallory', groups: ['interns'] }, T0))).toBe(
      'COLLECTOR_APPROVAL_NOT_APPROVER',
    );
    // `ana` asked; being in an approving group does not let her approve herself.
    expect(codeOf(() => book.checkDecision(r.id, { name: 'ana', groups: ['dba'] }, T0))).toBe(
      'COLLECTOR_APPROVAL_SELF',
    );
    expect(book.checkDecision(r.id, alice, T0).id).toBe(r.id);
    expect(book.checkDecision(r.id, { name: 'bob', groups: [] }, T0).id).toBe(r.id);
    // The requester's name may come from a claim they edit: another spelling of the approver is still the approver.
    // Greek σ, Cherokee Ꮟ, Coptic ⲟ: Unicode's confusables (UTS #39) read them as o, b, o.
    for (const user of [
      'Bob',
      'bob+agent@example.com',
      'b\u043eb',
      'b.ob@googlemail.com',
      'b\u03c3b',
      '\u13cfob',
      'b\u2c9fb@example.com',
    ]) {
      const approvers = { users: ['bob', 'bob@example.com', 'bob@gmail.com'] };
      const self = request({ identity: { ...r.identity, user }, approvers });
      put(book, 'request', self);
      const approver =
        user.includes('@gmail') || user.includes('@googlemail')
          ? 'bob@gmail.com'
          : user.includes('@')
            ? 'bob@example.com'
            : 'bob';
      expect(
        codeOf(() => book.checkDecision(self.id, { name: approver, groups: [] }, T0)),
        user,
      ).toBe('COLLECTOR_APPROVAL_SELF');
    }
    expect(codeOf(() => book.checkDecision(r.id, alice, T0 + 600_001))).toBe('COLLECTOR_APPROVAL_NOT_PENDING');
    put(book, 'decision', decision(r.id));
    expect(codeOf(() => book.checkDecision(r.id, alice, T0))).toBe('COLLECTOR_APPROVAL_NOT_PENDING');

    // Group globs work as in rule subjects; a request whose approvers are not subjects is refused as malformed, so
    // nobody can decide it.
    const globbed = request({ approvers: { groups: ['db-*'] } });
    put(book, 'request', globbed);
    expect(book.checkDecision(globbed.id, { name: 'carol', groups: ['db-oncall'] }, T0).id).toBe(globbed.id);
    const odd = request({ approvers: { groups: 'dba' } as never });
    expect(put(book, 'request', odd)).toBe('malformed');
    expect(codeOf(() => book.checkDecision(odd.id, alice, T0))).toBe('COLLECTOR_APPROVAL_UNKNOWN');
  });

  it('lists newest first, filtered by state', () => {
    const book = new ApprovalBook();
    const a = request({ requestedAt: new Date(T0).toISOString() });
    const b = request({ requestedAt: new Date(T0 + 1000).toISOString() });
    const c = request({ requestedAt: new Date(T0 + 2000).toISOString() });
    for (const r of [a, c, b]) put(book, 'request', r);
    put(book, 'decision', decision(b.id));
    expect(book.list('all', T0).map((e) => e.id)).toEqual([c.id, b.id, a.id]);
    expect(book.list('pending', T0).map((e) => e.id)).toEqual([c.id, a.id]);
    expect(book.list('decided', T0).map((e) => e.id)).toEqual([b.id]);
    expect(book.list('withdrawn', T0)).toEqual([]);
  });

  it('keeps at most maxEntries ids, and none older than maxAge, oldest going first', () => {
    const book = new ApprovalBook({ maxEntries: 3, maxAgeMs: 60_000 });
    const rs = [0, 1, 2, 3].map(() => request());
    rs.forEach((r, i) => {
      put(book, 'request', r, T0 + i * 10_000);
    });
    expect(book.size).toBe(3);
    expect(book.get(rs[0].id, T0 + 30_000)).toBeUndefined();
    expect(book.get(rs[3].id, T0 + 30_000)).toBeDefined();
    // 75 s after the first message: ids first seen at T0+10 s are older than a minute and forgotten.
    expect(
      book
        .list('all', T0 + 75_000)
        .map((e) => e.id)
        .sort(),
    ).toEqual([rs[2].id, rs[3].id].sort());
    expect(book.size).toBe(2);
  });

  it('follows a grant: requested, active until its end (or a revocation), refused when the sidecar gave none', () => {
    const book = new ApprovalBook();
    const r = request({ grantMax: '1h', fingerprint: '0123456789abcdef' });
    put(book, 'request', r);
    // Only a duration within the request's grantMax, and only for a request that offers one.
    expect(codeOf(() => book.checkDecision(r.id, alice, T0, '2h'))).toBe('COLLECTOR_APPROVAL_BAD_GRANT');
    expect(codeOf(() => book.checkDecision(r.id, alice, T0, 'soon'))).toBe('COLLECTOR_APPROVAL_BAD_GRANT');
    expect(book.checkDecision(r.id, alice, T0, '30m').id).toBe(r.id);
    const plain = request();
    put(book, 'request', plain);
    expect(codeOf(() => book.checkDecision(plain.id, alice, T0, '30m'))).toBe('COLLECTOR_APPROVAL_BAD_GRANT');

    put(book, 'decision', { ...decision(r.id), grant: { for: '30m' } });
    expect(book.get(r.id, T0)?.grant).toEqual({ for: '30m', state: 'requested' });
    expect(codeOf(() => book.checkRevoke(r.id, alice, T0))).toBe('COLLECTOR_APPROVAL_NOT_PENDING');
    const until = new Date(T0 + 1_800_000).toISOString();
    put(book, 'closed', approvalClosed(r.id, 'approved', alice, until));
    expect(book.get(r.id, T0)?.grant).toEqual({ for: '30m', state: 'active', until });
    expect(book.activeGrants(T0).map((e) => e.id)).toEqual([r.id]);
    expect(book.get(r.id, T0 + 1_800_000)?.grant?.state).toBe('expired');
    expect(book.activeGrants(T0 + 1_800_000)).toEqual([]);
    // Who may end it: an approver of its policy only.
    expect(codeOf(() => book.checkRevoke(r.id, { name: 'mallory', groups: ['interns'] }, T0))).toBe(
      'COLLECTOR_APPROVAL_NOT_APPROVER',
    );
    expect(book.checkRevoke(r.id, alice, T0).id).toBe(r.id);
    const revoked = { v: 1, id: r.id, by: alice, at: new Date(T0 + 5000).toISOString(), reason: 'done' };
    expect(put(book, 'revoked', revoked)).toBe('applied');
    expect(put(book, 'revoked', { ...revoked, reason: 'again' })).toBe('repeated');
    expect(book.get(r.id, T0)?.grant).toMatchObject({ state: 'revoked', revoked: { reason: 'done' } });
    expect(book.activeGrants(T0)).toEqual([]);
    expect(codeOf(() => book.checkRevoke(r.id, alice, T0))).toBe('COLLECTOR_APPROVAL_NOT_PENDING');

    // An approval whose grant the sidecar's policy did not allow covered its statement only.
    const r2 = request({ grantMax: '1h' });
    put(book, 'request', r2);
    put(book, 'decision', { ...decision(r2.id), grant: { for: '30m' } });
    put(book, 'closed', approvalClosed(r2.id, 'approved', alice));
    expect(book.get(r2.id, T0)?.grant?.state).toBe('refused');
  });
});
