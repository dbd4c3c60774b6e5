import { describe, expect, it } from 'vitest';
import { noApproversGate } from './approval-gate.js';
import { pinnedSearchPath, quoteIdent, sessionSetupSql } from './session-setup.js';

describe('session setup', () => {
  it('quotes the role as an identifier and sets the statement timeout', () => {
    expect(sessionSetupSql({ role: 'analytics_ro', guardrails: { statementTimeout: '30s' } })).toEqual([
      'SET ROLE "analytics_ro"',
      'SET statement_timeout = 30000',
    ]);
    expect(sessionSetupSql({ role: 'x"; RESET ROLE; --' })[0]).toBe('SET ROLE "x""; RESET ROLE; --"');
    expect(sessionSetupSql({})).toEqual([]);
    expect(sessionSetupSql({ guardrails: { statementTimeout: '1h30m' } })).toEqual(['SET statement_timeout = 5400000']);
    expect(() => sessionSetupSql({ guardrails: { statementTimeout: '5 s' } })).toThrow(/statementTimeout/);
    expect(() => quoteIdent('a\0b')).toThrow();
  });

  it('pins search_path to the client\'s own startup value, else "public"', () => {
    expect(pinnedSearchPath({ user: 'u' })).toEqual({ value: '"public"', schemas: ['public'] });
    expect(pinnedSearchPath({ Search_Path: 's2, "$user", "Mixed"' })).toEqual({
      value: 's2, "$user", "Mixed"',
      schemas: ['s2', '$user', 'Mixed'],
    });
    // A quoted name with a comma cannot be split for certain: any schema may be on the path.
    expect(pinnedSearchPath({ search_path: '"a,b", c' }).schemas).toContain('*');
  });

  it('the gate without approvers times out, or releases at once when the session ends', async () => {
    const base = { sessionId: 's', policy: { name: 'p', hash: 'h' }, rule: 'r', sql: 'x', identity: { groups: [] } };
    const t0 = Date.now();
    expect(await noApproversGate.request({ ...base, timeoutMs: 50, signal: new AbortController().signal })).toEqual({
      decision: 'timeout',
    });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(45);
    const ac = new AbortController();
    const held = noApproversGate.request({ ...base, timeoutMs: 60_000, signal: ac.signal });
    ac.abort();
    expect(await held).toEqual({ decision: 'timeout' });
  });
});
