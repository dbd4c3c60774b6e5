import type { Decision } from '@pgwarden/policy';
import { describe, expect, it } from 'vitest';
import { ApprovalGrants, type Grant, grantKey } from './approval-grants.js';

const policy = { namespace: 'agents', name: 'writer', hash: 'sha256:aaa' };
/** What the analysis found the statement does (one statement: a delete). */
const K = [['delete']];
const identity = { groups: ['data-team'], namespace: 'agents', serviceAccount: 'bot', user: 'alice' };
const decision = (over: Partial<Decision['statements'][number]> = {}): Decision => ({
  action: 'review',
  rule: 'write-orders-needs-review',
  reason: 'rule',
  message: '',
  statements: [
    {
      text: 'DELETE FROM orders WHERE id = 1',
      kind: 'delete',
      action: 'review',
      rule: 'write-orders-needs-review',
      reason: 'rule',
      message: '',
      tables: ['public.orders'],
      functions: [],
      ...over,
    },
  ],
});

describe('grantKey', () => {
  const base = grantKey(policy, decision(), identity, 'f1', K);

  it('is the same for the same shape, rule, identity and analysis, whatever the statement text', () => {
    expect(base).toBeDefined();
    expect(grantKey(policy, decision({ text: 'DELETE FROM orders WHERE id = 2' }), identity, 'f1', K)).toBe(base);
  });

  it('differs with anything a grant must not reach across', () => {
    const others = [
      grantKey({ ...policy, hash: 'sha256:bbb' }, decision(), identity, 'f1', K), // a reload changed the policy
      grantKey({ ...policy, namespace: 'other' }, decision(), identity, 'f1', K),
      grantKey(policy, { ...decision(), rule: 'other-rule' }, identity, 'f1', K),
      grantKey(policy, decision(), { ...identity, user: 'bob' }, 'f1', K),
      grantKey(policy, decision(), { ...identity, serviceAccount: 'other' }, 'f1', K),
      grantKey(policy, decision(), { ...identity, issuer: 'https://other.example' }, 'f1', K),
      grantKey(policy, decision(), identity, 'f2', K),
      grantKey(policy, decision({ tables: ['public.order_items'] }), identity, 'f1', K),
      grantKey(policy, decision({ functions: ['public.f'] }), identity, 'f1', K),
      grantKey(policy, decision({ kind: 'update' }), identity, 'f1', K),
    ];
    for (const k of others) expect(k).not.toBe(base);
    expect(new Set(others).size).toBe(others.length);
  });

  it('is undefined for DO blocks (their body is a constant) and SQL without a fingerprint', () => {
    expect(grantKey(policy, decision({ kind: 'do' }), identity, 'f1', [['do']])).toBeUndefined();
    // A constant names the setting: SET, or set_config() inside a SELECT.
    expect(grantKey(policy, decision({ kind: 'select' }), identity, 'f1', [['select', 'set']])).toBeUndefined();
    expect(grantKey(policy, decision({ kind: 'set' }), identity, 'f1', [['set']])).toBeUndefined();
    // The analysis's kinds are part of the key, and must name every statement.
    expect(grantKey(policy, decision(), identity, 'f1', [['delete', 'select']])).not.toBe(base);
    expect(grantKey(policy, decision(), identity, 'f1', [])).toBeUndefined();
    expect(grantKey(policy, decision(), identity, undefined, K)).toBeUndefined();
    expect(grantKey(policy, { ...decision(), statements: [] }, identity, 'f1', K)).toBeUndefined();
  });
});

describe('ApprovalGrants', () => {
  const grant = (id: string, key: string, until: number): Grant => ({
    id,
    by: 'dana',
    until,
    key,
    approvers: { groups: ['dba'] },
  });

  it('finds a live grant by key, and forgets it once it ends', () => {
    let now = 1000;
    const book = new ApprovalGrants(() => now);
    book.add(grant('a', 'k', 2000));
    expect(book.find('k')?.id).toBe('a');
    expect(book.ids()).toEqual(['a']);
    now = 2000;
    expect(book.find('k')).toBeUndefined();
    expect(book.ids()).toEqual([]);
    expect(book.size).toBe(0);
  });

  it('revokes by id; a newer grant for the same key replaces the older', () => {
    const book = new ApprovalGrants(() => 0);
    book.add(grant('a', 'k', 10));
    book.add(grant('b', 'k', 20));
    expect(book.find('k')?.id).toBe('b');
    expect(book.revoke('a')).toBeUndefined(); // replaced: nothing left to revoke
    expect(book.revoke('b')?.id).toBe('b');
    expect(book.find('k')).toBeUndefined();
    expect(book.revoke('b')).toBeUndefined();
  });

  it('keeps at most its limit, dropping the grant that ends first', () => {
    const book = new ApprovalGrants(() => 0, 2);
    book.add(grant('a', 'ka', 30));
    book.add(grant('b', 'kb', 10));
    book.add(grant('c', 'kc', 20));
    expect(book.size).toBe(2);
    expect(book.find('kb')).toBeUndefined();
    expect(book.find('ka')?.id).toBe('a');
    expect(book.find('kc')?.id).toBe('c');
  });
});
