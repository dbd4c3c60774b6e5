import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AuditEvent, type DatabaseAccessPolicy, initSqlParser, parsePolicyDocuments } from '@pgwarden/policy';
import { beforeAll, describe, expect, it } from 'vitest';
import { readAuditFile } from './policy.js';
import { failed, formatReplay, groupChanges, recordedAction, replayStatements } from './policy-replay.js';

const example = (f: string) => readFileSync(new URL(`../../../examples/${f}`, import.meta.url), 'utf8');
const analyst = (): DatabaseAccessPolicy => parsePolicyDocuments(example('analyst-readonly.yaml')).policies[0];

/** A statement event as the sidecar records it (only what the replay reads). */
function stmt(session: string, seq: number, text: string, decision: Record<string, string>): AuditEvent {
  return {
    v: 1,
    type: 'statement',
    id: `${session}.${seq}`,
    time: `2026-11-30T12:00:${String(seq).padStart(2, '0')}.000000Z`,
    session: { id: session, seq },
    identity: { namespace: 'agents', serviceAccount: 'analytics', groups: [] },
    policy: { name: 'analyst', hash: 'sha256:1' },
    statement: { text, kind: 'select', tables: [], functions: [] },
    decision,
    prevHash: null,
    hash: 'x',
  } as unknown as AuditEvent;
}
const allowed = (rule: string) => ({ action: 'allow', rule, reason: 'rule' });
const deniedByDefault = { action: 'deny', reason: 'default', code: '42501' };

beforeAll(() => initSqlParser());

describe('policy replay', () => {
  it('takes from the trail what the policy decided, and leaves run-time refusals out', () => {
    expect(recordedAction({ action: 'allow', rule: 'r', reason: 'rule' })).toBe('allow');
    expect(recordedAction({ action: 'deny', reason: 'guardrail:requireWhere' })).toBe('deny');
    // A default denial records what no rule covered.
    expect(
      recordedAction({ action: 'deny', reason: 'default: statement kind "copy" is not allowed by any rule' }),
    ).toBe('deny');
    expect(recordedAction({ action: 'allow', rule: 'r', reason: 'approved by dana' })).toBe('review');
    expect(recordedAction({ action: 'deny', rule: 'r', reason: 'review-timeout' })).toBe('review');
    expect(recordedAction({ action: 'dryrun', rule: 'r', reason: 'would deny: x' })).toBe('dryrun');
    for (const reason of ['rate_limited', 'policy-suspended', 'audit_unavailable', 'statement too large'])
      expect(recordedAction({ action: 'deny', reason }), reason).toBeUndefined();
  });

  it('the shipped policy reproduces its own trail; a stricter one shows what it would deny, grouped by shape', () => {
    const trail = [
      stmt('s1', 1, 'SELECT * FROM orders WHERE id = 1', allowed('read-shop')),
      stmt('s1', 2, 'SELECT email FROM customers WHERE id = 7', allowed('read-shop')),
      stmt('s1', 3, 'SELECT email FROM customers WHERE id = 8', allowed('read-shop')),
      stmt('s1', 4, 'DELETE FROM orders WHERE id = 1', deniedByDefault),
      stmt('s1', 5, 'SELECT 1', { action: 'deny', reason: 'rate_limited' }),
      stmt('s2', 1, 'SELECT email FROM customers WHERE id = 9', allowed('read-shop')),
      stmt('s2', 2, '[unparseable statement, 12 characters]', deniedByDefault),
      stmt('s2', 3, 'SELECT email FROM customers WHERE id IN (1, 2…[truncated 9000 chars]', allowed('read-shop')),
    ];
    const same = replayStatements(trail, [analyst()]);
    expect(same.transitions).toEqual({ 'allow → allow': 4, 'deny → deny': 1 });
    expect(same.changes).toEqual([]);
    expect(same.skipped).toEqual({ noPolicy: 0, decidedAtRunTime: 1, unreplayable: 2 });
    expect(same.sessions).toBe(2);
    expect(formatReplay(same)).toContain('no decision would change');
    expect(failed(same, 'changed')).toBe(false);

    const stricter = analyst();
    stricter.spec.rules = [
      { name: 'no-pii', action: 'deny', tables: ['public.customers'] } as never,
      ...stricter.spec.rules,
    ];
    const r = replayStatements(trail, [stricter]);
    expect(r.transitions).toEqual({ 'allow → allow': 1, 'allow → deny': 3, 'deny → deny': 1 });
    expect(r.changes.map((c) => [c.session, c.seq, c.rule, c.shape])).toEqual([
      ['s1', 2, 'no-pii', 'SELECT email FROM customers WHERE id = $1'],
      ['s1', 3, 'no-pii', 'SELECT email FROM customers WHERE id = $1'],
      ['s2', 1, 'no-pii', 'SELECT email FROM customers WHERE id = $1'],
    ]);
    expect(groupChanges(r.changes).map((g) => g.count)).toEqual([3]);
    const text = formatReplay(r);
    expect(text).toContain('3× allow → deny (rule "no-pii") [rule]  SELECT email FROM customers WHERE id = $1');
    expect(text).toContain('e.g. agents/analytics, session s1 #2 at 2026-11-30T12:00:02.000000Z');
    expect([failed(r, 'denied'), failed(r, 'changed'), failed(r, 'never')]).toEqual([true, true, false]);
  });

  it('replays each session in seq order through its own analysis state (search_path set earlier counts)', () => {
    // A candidate that allows public.salaries: an unqualified `salaries` after SET search_path = hr, public may be
    // hr.salaries too, so the sidecar would have denied it, and so does the replay. Events arrive newest first.
    const candidate = analyst();
    candidate.spec.rules = [
      { name: 'salaries', action: 'allow', statements: ['select'], tables: ['public.salaries'] } as never,
      ...candidate.spec.rules,
    ];
    const trail = [
      stmt('s3', 2, 'SELECT * FROM salaries', deniedByDefault),
      stmt('s3', 1, 'SET search_path = hr, public', allowed('session-housekeeping')),
      stmt('s4', 1, 'SELECT * FROM salaries', deniedByDefault),
    ];
    const r = replayStatements(trail, [candidate]);
    // s3 stays denied (hr may be on its path); s4, with the default path, would now be allowed.
    expect(r.changes.map((c) => [c.session, c.before, c.after])).toEqual([['s4', 'deny', 'allow']]);
    expect(r.transitions).toEqual({ 'allow → allow': 1, 'deny → deny': 1, 'deny → allow': 1 });
  });

  it('with several policies, matches each event to the policy of its name; others are counted apart', () => {
    const other = analyst();
    other.metadata = { ...other.metadata, name: 'someone-else' };
    const r = replayStatements(
      [stmt('s5', 1, 'SELECT * FROM orders', allowed('read-shop'))].map((e) => ({
        ...e,
        policy: { name: 'unknown', hash: 'x' },
      })),
      [analyst(), other],
    );
    expect(r.statements).toBe(0);
    expect(r.skipped.noPolicy).toBe(1);
    expect(
      replayStatements([stmt('s6', 1, 'SELECT * FROM orders', allowed('read-shop'))], [other, analyst()]).statements,
    ).toBe(1);
  });

  it('reads a sidecar audit file with the API’s filters, the newest `max` statements', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgw-replay-'));
    const file = join(dir, 'audit.jsonl');
    const other = { ...stmt('s8', 1, 'SELECT 1', allowed('read-shop')), policy: { name: 'other', hash: 'x' } };
    const elsewhere = stmt('s9', 1, 'SELECT 2', allowed('read-shop'));
    (elsewhere.identity as { namespace?: string }).namespace = 'billing';
    const lines = [
      ...[1, 2, 3].map((i) => JSON.stringify(stmt('s7', i, `SELECT ${i}`, allowed('read-shop')))),
      JSON.stringify({ ...stmt('s7', 4, 'x', allowed('r')), type: 'session.end' }),
      JSON.stringify(other),
      JSON.stringify(elsewhere),
      '{"truncated',
      '',
    ];
    writeFileSync(file, lines.join('\n'));
    const all = { from: '2026-11-30T00:00:00Z', max: 100 };
    expect(readAuditFile(file, all).map((e) => e.id)).toEqual(['s7.1', 's7.2', 's7.3', 's8.1', 's9.1']);
    expect(readAuditFile(file, { ...all, policy: 'analyst', namespace: 'agents' }).map((e) => e.id)).toEqual([
      's7.1',
      's7.2',
      's7.3',
    ]);
    expect(readAuditFile(file, { ...all, policy: 'analyst', max: 2 }).map((e) => e.id)).toEqual(['s7.3', 's9.1']);
    // Window: [from, to) on the event's time.
    expect(
      readAuditFile(file, { from: '2026-11-30T12:00:02Z', to: '2026-11-30T12:00:03Z', max: 100 }).map((e) => e.id),
    ).toEqual(['s7.2']);
    rmSync(dir, { recursive: true, force: true });
  });
});
