import type { ProxyHooks, SessionHooks, SessionInfo, StatementRequest, Verdict } from '../proxy/hooks.js';
import { catalogRefusal } from './errors.js';
import { type Masker, type MaskingCheck, startupSearchPath } from './masker.js';

/** SQLSTATE 42501 insufficient_privilege, as for every policy denial. */
function denial(message: string, reason: string): Verdict {
  return { action: 'deny', code: '42501', message: `pgwarden: ${message}`, rule: 'masking', reason };
}

/**
 * Decorates proxy hooks with masking: statements are checked by the masker after the inner hooks decide,
 * every verdict is bound to its SQL (so RowDescriptions find their lineage), rows are planned by the masker,
 * free text is scrubbed, and error messages in statement records are scrubbed before anything outside (audit)
 * sees them. Sessions for which `masker` returns undefined are passed through untouched.
 */
export function withMasking(
  hooks: ProxyHooks,
  /** `searchPath`: the one the session's login gives PostgreSQL (startupSearchPath), undefined when none. */
  masker: (info: SessionInfo, searchPath: string | undefined) => Masker | undefined,
): ProxyHooks {
  return {
    get needsPassword() {
      return hooks.needsPassword;
    },
    ready: () => (hooks.ready ? hooks.ready() : true),
    authenticate: (req) => hooks.authenticate(req),
    openSession(info): SessionHooks {
      const inner = hooks.openSession(info);
      const m = masker(info, startupSearchPath(info.startup.params, inner.startupParams?.()));
      if (!m) return inner;
      // The policy decides first (its denial names its rule); masking can only turn an allow into a denial.
      const check = (
        req: StatementRequest,
        next: (r: StatementRequest) => Verdict | Promise<Verdict>,
      ): Verdict | Promise<Verdict> => {
        if (req.statementName) m.rememberName(req.statementName);
        // No masking rule applies to this session now: nothing to check or bind, and the inner verdict keeps its
        // synchronous form (a promise holds the session's input until a later turn, for every statement). A
        // statement planned after a reload that brings rules finds its SQL through the verdict's context instead
        // (Masker.bind).
        if (!m.config.active) {
          m.unchecked();
          return next(req);
        }
        return checkMasked(req, next);
      };
      /** Catalog refusals: never kept as a statement's masked verdict, as the next execution may find the catalog back. */
      const refusals = new WeakSet<Verdict>();
      /** What masking's check of each verdict it made rested on (the catalog snapshot), to tell when to check again. */
      const checks = new WeakMap<Verdict, MaskingCheck>();
      const checkMasked = async (
        req: StatementRequest,
        next: (r: StatementRequest) => Verdict | Promise<Verdict>,
      ): Promise<Verdict> => {
        const decided = await next(req);
        let checked: MaskingCheck | undefined;
        let refused: ReturnType<typeof catalogRefusal>;
        try {
          checked = await m.check(req.sql, req);
        } catch (err) {
          // The catalog could not be read when this statement needed it checked: refused (fail closed), the session
          // goes on. Anything else stays an error of the hook, which the proxy denies as such.
          refused = catalogRefusal(err);
          if (refused === undefined) throw err;
        }
        const denied = checked?.denied;
        // Always a fresh object: hooks may return one shared verdict (allow-all does), and planRows finds a
        // statement's SQL by verdict identity — pipelined statements must not see each other's SQL.
        const verdict: Verdict =
          decided.action === 'deny'
            ? { ...decided }
            : refused
              ? { action: 'deny', ...refused, policy: decided.policy, statements: decided.statements }
              : denied
                ? { ...denial(denied.message, denied.reason), policy: decided.policy, statements: decided.statements }
                : { ...decided };
        // This promise waits for masking's catalog, which is no hold: the statement was held only for what the
        // policy reported (a review, a rate limit), and the proxy would otherwise take the wait as held time.
        if (verdict.action !== 'review' && verdict.heldMs === undefined) verdict.heldMs = decided.heldMs ?? 0;
        if (refused && decided.action !== 'deny') refusals.add(verdict);
        if (checked !== undefined) checks.set(verdict, checked);
        m.bind(verdict, req.sql);
        return verdict;
      };
      /** Whether masking's decision on `v` may be reused now (see Masker.reusable); verdicts it never checked may. */
      const reusable = (v: Verdict): boolean => {
        const c = checks.get(v);
        return c === undefined || m.reusable(c);
      };
      // Per decided verdict its masked form, so that a statement re-decided once after a reload is checked once.
      const masked = new WeakMap<Verdict, Verdict>();
      /**
       * A prepared statement's masked verdict, checked again at a new Execute when the catalog its check rested on
       * moved or is due a check: as its text would be checked as a Query now, so also refused (53000) while the
       * catalog cannot be read. Per prepared verdict its latest re-check, reused while that stays current.
       */
      const rechecked = new WeakMap<Verdict, Verdict>();
      const recheck = (prepared: Verdict, req: StatementRequest): Verdict | Promise<Verdict> => {
        if (prepared.action === 'deny') return prepared;
        const last = rechecked.get(prepared) ?? prepared;
        // Not checked by masking: no rule applied at its Parse, under the policy version still in force (the inner
        // hooks returned it as it was), so none applies now. No config lookup here: this is every Execute's path.
        const c = checks.get(last);
        if (c === undefined || m.reusable(c)) return last;
        return checkMasked(req, () => prepared).then((verdict) => {
          if (!refusals.has(verdict)) rechecked.set(prepared, verdict);
          return verdict;
        });
      };
      const rebound = (prepared: Verdict, decided: Verdict, req: StatementRequest): Verdict | Promise<Verdict> => {
        if (decided === prepared) return recheck(prepared, req);
        if (decided.action === 'deny') return decided;
        const known = masked.get(decided);
        if (known !== undefined && (!m.config.active || reusable(known))) return known;
        if (!m.config.active) {
          // Fresh for the same reason as in checkMasked; bound so a reload that brings rules finds its SQL.
          const verdict: Verdict = { ...decided };
          m.bind(verdict, req.sql);
          masked.set(decided, verdict);
          return verdict;
        }
        return checkMasked(req, () => decided).then((verdict) => {
          if (!refusals.has(verdict)) masked.set(decided, verdict);
          return verdict;
        });
      };
      const session: SessionHooks = {
        setupSql: () => inner.setupSql(),
        startupParams: () => inner.startupParams?.() ?? {},
        checkQuery: (req) => check(req, (r) => inner.checkQuery(r)),
        checkParse: (req) => check(req, (r) => inner.checkParse(r)),
        // FunctionCall results come back as FunctionCallResponse, which no masking plan covers.
        checkFunctionCall: async (oid) => {
          const decided = await inner.checkFunctionCall(oid);
          if (decided.action === 'deny' || !m.config.active) return decided;
          return denial(
            `FunctionCall (function OID ${oid}) is not allowed while masking rules apply: its result cannot be masked`,
            'function-call',
          );
        },
        // The Parse's verdict passes through as it is: the row plan finds the statement's SQL by its identity (m.bind).
        // Another one (an approval, a decision under a reloaded policy) is checked and bound like a new statement's.
        // A new execution's masking is checked again when the catalog its check rested on is not current (see
        // recheck); the same execution going on (`resumed`) runs under what its first Execute decided.
        checkExecute: inner.checkExecute
          ? (prepared, req, resumed) => {
              if (!resumed) m.newStatement(req);
              const v = inner.checkExecute!(prepared, req, resumed);
              if (resumed && v === prepared) return v;
              if (!(v instanceof Promise)) return rebound(prepared, v, req);
              return v.then((d) => rebound(prepared, d, req));
            }
          : undefined,
        planRows: (fields, verdict) => m.planRows(fields, verdict),
        scrubText: (text, verdict, fields) =>
          m.scrubText(inner.scrubText ? inner.scrubText(text, verdict, fields) : text, undefined, verdict, fields),
        clientName: (name) => {
          inner.clientName?.(name);
          m.rememberName(name);
        },
        statementDone(record) {
          // The proxy records upstream error messages as received; scrub them before audit sees the record.
          for (const r of record.results) if (r.error) r.error.message = m.scrubText(r.error.message, 'error');
          // Audit `masking` {columns, cells} (read by the audit recorder from the result, see StatementResultExtras).
          const masking = m.takeStats(record.verdict);
          const target = record.results.find((r) => r.rows > 0) ?? record.results[0];
          if (masking && target) Object.assign(target, { masking });
          m.statementDone(record);
          inner.statementDone(record);
        },
        close: (reason) => inner.close(reason),
      };
      return session;
    },
  };
}
