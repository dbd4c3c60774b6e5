import { describe, expect, it } from 'vitest';
import { formatAuditEvent } from './audit-lines.js';

describe('formatAuditEvent', () => {
  it('prints a statement on one line with tag, duration and flattened SQL', () => {
    const line = formatAuditEvent({
      type: 'statement',
      time: '2026-11-30T04:01:02.123456Z',
      session: { id: 'abcdef0123456789', seq: 4 },
      statement: { text: 'SELECT email\n  FROM customers' },
      result: { tag: 'SELECT 40', rows: 40 },
      timing: { durationMs: 1.234 },
    });
    expect(line).toBe(
      '04:01:02.123 s:abcdef01   #4  ok          SELECT 40         1.2 ms  SELECT email FROM customers',
    );
  });

  it('shows how long a statement was held and who approved it, in person or by a grant', () => {
    const base = {
      type: 'statement',
      time: '2026-11-30T04:01:02.123Z',
      session: { id: 's1', seq: 1 },
      statement: { text: 'UPDATE orders SET status = 1 WHERE id = 1' },
      result: { tag: 'UPDATE 1', rows: 1 },
    };
    expect(
      formatAuditEvent({
        ...base,
        decision: { action: 'allow', rule: 'writes', reason: 'approved by alice' },
        timing: { durationMs: 5458.4, heldMs: 5450 },
      }),
    ).toContain('5458.4 ms held=5.5s (approved by alice)  UPDATE orders');
    const reason = 'approved by alice under the grant of approval 1f2e (until 2026-11-30T04:16:02Z)';
    expect(
      formatAuditEvent({ ...base, decision: { action: 'allow', reason }, timing: { durationMs: 1.2, heldMs: 0 } }),
    ).toContain(`held=0.0s (${reason})`);
    expect(formatAuditEvent({ ...base, timing: { durationMs: 1.2, heldMs: 0 } })).not.toContain('held=');
  });

  it('counts rows only where the tag does not and there are some (SHOW), not for SET or DISCARD ALL', () => {
    const ev = (tag: string, rows: number) =>
      formatAuditEvent({
        type: 'statement',
        time: '2026-11-30T04:01:02.123456Z',
        session: { id: 'abcdef0123456789', seq: 1 },
        statement: { text: tag },
        result: { tag, rows },
        timing: { durationMs: 0.4, heldMs: 0 },
      });
    expect(ev('SHOW', 1)).toContain('SHOW rows=1');
    expect(ev('DISCARD ALL', 0)).not.toContain('rows=');
    expect(ev('SET', 0)).not.toContain('rows=');
  });

  it('shows errors and denials instead of ok', () => {
    const base = {
      type: 'statement',
      time: '2026-11-30T04:01:02.123Z',
      session: { id: 's1', seq: 1 },
      statement: { text: 'x' },
    };
    expect(formatAuditEvent({ ...base, result: { error: { code: '42P01' } } })).toContain('ERROR 42P01');
    expect(formatAuditEvent({ ...base, decision: { action: 'deny', rule: 'no-ddl' } })).toContain('DENIED by no-ddl');
  });

  it('shortens long SQL and prints non-statement events by type', () => {
    const long = formatAuditEvent({ type: 'statement', statement: { text: `SELECT ${'a, '.repeat(100)}1` } });
    expect(long.endsWith('…')).toBe(true);
    expect(
      formatAuditEvent({
        type: 'session.start',
        session: { id: 'abc' },
        database: { user: 'postgres', name: 'postgres' },
      }),
    ).toMatch(/session\.start postgres@postgres$/);
  });

  it('prints chain heads as the sessions and seqs they name, at most four', () => {
    const chains = ['aaaaaaaa1', 'bbbbbbbb2', 'cccccccc3', 'dddddddd4', 'eeeeeeee5', 'ffffffff6'].map((id, i) => ({
      id,
      seq: i + 1,
      hash: '0'.repeat(64),
    }));
    const line = formatAuditEvent({
      type: 'audit.heads',
      time: '2026-11-30T04:01:02.123456Z',
      session: { id: 'sidecar-1234abcd', seq: 9 },
      heads: { chains },
    });
    expect(line).toBe(
      '04:01:02.123 s:sidecar-   #9  audit.heads s:aaaaaaaa#1 s:bbbbbbbb#2 s:cccccccc#3 s:dddddddd#4 +2',
    );
  });
});
