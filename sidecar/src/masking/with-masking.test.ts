import { describe, expect, it } from 'vitest';
import type { ProxyHooks, SessionInfo, Verdict } from '../proxy/hooks.js';
import type { Masker } from './masker.js';
import { withMasking } from './with-masking.js';

const info = { id: 's', identity: { groups: [] }, startup: { params: {} } } as unknown as SessionInfo;
const allow: Verdict = { action: 'allow', rule: 'r' };
const inner: ProxyHooks = {
  needsPassword: false,
  authenticate: async () => ({ ok: true, identity: { groups: [] } }),
  openSession: () => ({
    setupSql: () => [],
    checkQuery: () => allow,
    checkParse: () => allow,
    checkFunctionCall: () => allow,
    planRows: () => undefined,
    statementDone: () => {},
    close: () => {},
  }),
};

/** A masker whose rules are in force or not, recording what it was asked. */
function masker(active: { now: boolean }) {
  const bound: Verdict[] = [];
  const names: string[] = [];
  const m = {
    get config() {
      return { active: active.now };
    },
    check: async () => undefined,
    bind: (v: Verdict) => void bound.push(v),
    rememberName: (n: string) => void names.push(n),
    unchecked: () => {},
  } as unknown as Masker;
  return { m, bound, names };
}

describe('withMasking', () => {
  it('keeps a verdict synchronous while no masking rule applies, and checks and binds a fresh one once rules do', async () => {
    const active = { now: false };
    const { m, bound, names } = masker(active);
    const s = withMasking(inner, () => m).openSession(info);
    const req = { sql: 'SELECT 1', protocol: 'extended' as const, statementName: 'p1', txStatus: 'I' as const };
    // No rules: the inner verdict itself, not a promise (a promise holds the client's input for a turn).
    expect(s.checkQuery(req)).toBe(allow);
    expect(s.checkParse(req)).toBe(allow);
    expect(bound).toEqual([]);
    expect(names).toEqual(['p1', 'p1']); // echo redaction still learns the names
    // A reload brought rules: checked by the masker, a fresh verdict bound to its SQL.
    active.now = true;
    const held = s.checkQuery(req);
    expect(held).toBeInstanceOf(Promise);
    const v = await held;
    // The wait was for masking's catalog, not a hold: held time 0, not the promise's age.
    expect(v).toEqual({ ...allow, heldMs: 0 });
    expect(v).not.toBe(allow);
    expect(bound).toEqual([v]);
  });
});

describe('the search_path a masker starts from', () => {
  it('is the one the login gives PostgreSQL: the hooks’ own in place of the client’s, else the client’s', () => {
    const { m } = masker({ now: false });
    const seen: Array<string | undefined> = [];
    const client = { ...info, startup: { params: { Search_Path: 'client_schema' } } } as unknown as SessionInfo;
    const pinned: ProxyHooks = {
      ...inner,
      openSession: (i) => ({ ...inner.openSession(i), startupParams: () => ({ search_path: '"public"' }) }),
    };
    for (const [hooks, who] of [
      [pinned, client],
      [inner, client],
      [inner, info],
    ] as const)
      withMasking(hooks, (_i, path) => {
        seen.push(path);
        return m;
      }).openSession(who);
    expect(seen).toEqual(['"public"', 'client_schema', undefined]);
  });
});
