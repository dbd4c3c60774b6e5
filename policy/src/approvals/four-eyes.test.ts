import { describe, expect, it } from 'vitest';
import { selfApprovalReason } from './four-eyes.js';

const ana = { namespace: 'agents', serviceAccount: 'analytics', pod: 'analytics-0', user: 'ana', groups: [] };

describe('selfApprovalReason', () => {
  it('takes names that differ only in case, accents, look-alike letters, invisible characters or a domain for one', () => {
    for (const name of ['ana', 'ANA', ' ana ', '\u0430na', 'anа', 'ａｎａ', 'áná', 'a\u200bna', 'ana@example.com'])
      expect(selfApprovalReason(ana, { name }), name).toMatch(/can pass for it$/);
    const alice = { ...ana, user: 'alice' };
    for (const name of ['aIice', 'a1ice', 'ALICE', 'A1ICE'])
      expect(selfApprovalReason(alice, { name }), name).toMatch(/can pass for it$/);
    expect(selfApprovalReason({ ...ana, user: 'rnartin' }, { name: 'martin' })).toMatch(/can pass for it$/);
    expect(selfApprovalReason(alice, { name: 'alicia' })).toBeUndefined();
    // The same mailbox (sameIdentity, as the sidecar folds it): Gmail reads no dots, googlemail.com is gmail.com.
    const gmail = { ...ana, user: 'a.na@googlemail.com' };
    expect(selfApprovalReason(gmail, { name: 'ana@gmail.com' })).toMatch(/can pass for it$/);
    expect(selfApprovalReason(gmail, { name: 'x', oidc: [{ issuer: 'i', subject: 'an.a@gmail.com' }] })).toMatch(
      /^x is an\.a@gmail\.com at i/,
    );
  });

  it("takes the spellings Unicode's confusables (UTS #39) read as the requester's name for the requester", () => {
    // Entries of confusables.txt that the earlier hand-picked table did not have.
    for (const name of [
      '\u237ana', // APL ⍺ → a
      'a\u057ca', // Armenian ռ → n
      '\u15c5na', // Canadian syllabics ᗅ → A
      'a\u2c9aa', // Coptic Ⲛ → N
      '\u{102a0}na', // Carian 𐊠 → A
      'a\u{10513}a', // Elbasan 𐔓 → N
    ])
      expect(selfApprovalReason(ana, { name }), name).toMatch(/can pass for it$/);
    const boss = { ...ana, user: 'boss@example.com' };
    for (const name of ['b\u03c3ss', '\u13cfoss@example.org', 'b\u{1042c}ss@example.com'])
      expect(selfApprovalReason(boss, { name }), name).toMatch(/can pass for it$/);
    expect(selfApprovalReason(boss, { name: 'bass' })).toBeUndefined();
  });

  it('knows an approver by the OIDC subjects and service accounts the approvers file binds to them', () => {
    const oidc = { ...ana, user: '00u1f3', issuer: 'https://idp.example/' };
    const dora = { name: 'dora', oidc: [{ issuer: 'https://idp.example', subject: '00u1f3' }] };
    expect(selfApprovalReason(oidc, dora)).toMatch(/^dora is 00u1f3 at https:\/\/idp\.example\//);
    // The same subject at another issuer is not known to be someone else.
    expect(selfApprovalReason({ ...oidc, issuer: 'https://other.example' }, dora)).toMatch(/another issuer/);
    expect(selfApprovalReason({ ...oidc, issuer: undefined }, dora)).toMatch(/another issuer/);
    expect(selfApprovalReason({ ...oidc, user: '00u9zz' }, dora)).toBeUndefined();
    const sam = { name: 'sam', serviceAccounts: ['agents/analytics'] };
    expect(selfApprovalReason(ana, sam)).toMatch(/service account agents\/analytics/);
    expect(selfApprovalReason({ ...ana, namespace: 'other' }, sam)).toBeUndefined();
    expect(selfApprovalReason(ana, { name: 'bob' })).toBeUndefined();
  });

  it("takes a decision's `by` and the sidecar's own Identity as they are", () => {
    // What the sidecar holds: the token's issuer and user, the pod's fields, and a number that is no identity field.
    const session = {
      user: 'alice',
      issuer: 'https://idp.example',
      groups: ['data-team'],
      namespace: 'agents',
      serviceAccount: 'writer',
      pod: 'writer-0',
      sessionEndsAt: Date.now() + 60_000,
    };
    const by = (over: object) => ({ name: 'dana', groups: ['dba'], ...over });
    expect(selfApprovalReason(session, by({}))).toBeUndefined();
    expect(selfApprovalReason(session, by({ oidc: [{ issuer: 'https://idp.example/', subject: 'alice' }] }))).toMatch(
      /^dana is alice at https:\/\/idp\.example, who asked/,
    );
    expect(selfApprovalReason(session, by({ serviceAccounts: ['agents/writer'] }))).toMatch(/agents\/writer/);
    expect(selfApprovalReason(session, by({ oidc: [], serviceAccounts: [] }))).toBeUndefined();
  });

  it('fails closed when the request does not say who asked', () => {
    const sam = { name: 'sam', serviceAccounts: ['agents/analytics'] };
    expect(selfApprovalReason({ namespace: 'agents', pod: 'p' }, sam)).toMatch(/names no service account/);
    expect(selfApprovalReason({ user: 'ana', serviceAccount: '' }, sam)).toMatch(/names no service account/);
    // Without service accounts of their own, an approver is compared by name alone (a sidecar outside Kubernetes).
    expect(selfApprovalReason({ namespace: 'agents', pod: 'p' }, { name: 'bob' })).toBeUndefined();
    expect(selfApprovalReason({ ...ana, user: ['ana'] }, { name: 'bob' })).toMatch(/identity\.user is not a string/);
    expect(selfApprovalReason({ ...ana, issuer: 7 }, { name: 'bob' })).toMatch(/identity\.issuer/);
  });
});
