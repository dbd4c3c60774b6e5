import type { ProxyHooks, SessionHooks, Verdict } from './hooks.js';

const ALLOW: Verdict = { action: 'allow', rule: 'allow-all', reason: 'no policy configured' };

/**
 * The hooks `startSidecar` uses when none are given: every statement allowed, no masking, no setup SQL, no client
 * password. Records still flow (statementDone) so audit works without a policy.
 */
export function allowAllHooks(): ProxyHooks {
  return {
    needsPassword: false,
    authenticate: async () => ({ ok: true, identity: { groups: [] } }),
    openSession(): SessionHooks {
      return {
        setupSql: () => [],
        checkQuery: () => ALLOW,
        checkParse: () => ALLOW,
        checkFunctionCall: () => ALLOW,
        planRows: () => undefined,
        statementDone: () => {},
        close: () => {},
      };
    },
  };
}
