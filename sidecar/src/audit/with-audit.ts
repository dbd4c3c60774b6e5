import { readWorkloadIdentity } from '../identity/workload.js';
import type { ProxyHooks, SessionHooks, StatementRequest, Verdict } from '../proxy/hooks.js';
import type { AuditRecorder } from './audit-recorder.js';
import { AUDIT_UNAVAILABLE_SQLSTATE } from './errors.js';
import { type CaptureResults, ResultSamples } from './result-sample.js';
import { type StatementTextMode, withFingerprints, withNormalizedText } from './statement-text.js';

/** Defaults of the policy schema's `audit` block (policy/src/api/access-policy-schema.ts). */
const DEFAULT_CAPTURE: CaptureResults = 'summary';
const DEFAULT_MAX_RESULT_BYTES = 65_536;

export type AuditFailMode = 'closed' | 'open';

/** What a client gets for a statement while `failMode: closed` and the audit trail cannot be made durable. */
export const AUDIT_UNAVAILABLE_VERDICT: Verdict = {
  action: 'deny',
  code: AUDIT_UNAVAILABLE_SQLSTATE,
  message: 'pgwarden: audit log unavailable, statement refused (audit failMode: closed)',
  hint: 'Retry later; the sidecar accepts statements again once audit events can be stored.',
  rule: 'audit.failMode',
  reason: 'audit_unavailable',
};

/**
 * Decorates proxy hooks with auditing: `session.start` on open, statement events from statementDone,
 * `session.end` on close. With failMode `closed` it is also the gate: while the recorder's sink is not ready,
 * every statement is denied with SQLSTATE 53000 before the inner hooks run (the upstream never sees it).
 * With the policy's `audit.captureResults: rows` it wraps the inner row transformer (masking) so that the first
 * rows, as the client receives them, up to `audit.maxResultBytes`, are recorded as `result.sample`.
 */
export function withAudit(hooks: ProxyHooks, recorder: AuditRecorder, failMode: AuditFailMode): ProxyHooks {
  const current = policyOf(hooks);
  // The stricter of the flag and the policy's `audit.failMode` applies.
  const closed = () => failMode === 'closed' || current()?.policy.spec?.audit?.failMode === 'closed';
  const blocked = () => closed() && !recorder.ready();
  const workload = readWorkloadIdentity();
  return {
    get needsPassword() {
      return hooks.needsPassword;
    },
    // Audit durability is reported on /readyz by the sidecar itself (sink.ready()); this stays the policy's.
    ready: () => (hooks.ready ? hooks.ready() : true),
    authenticate: (req) => hooks.authenticate(req),
    startupRefused(r) {
      hooks.startupRefused?.(r);
      const p = current();
      recorder.authRefused({
        reason: r.reason ?? 'startup_parameter',
        code: r.code,
        message: r.message,
        client: r.client,
        user: r.user,
        database: r.database,
        application: r.applicationName,
        workload,
        ...(p ? { policy: { name: p.policy.name, hash: p.hash } } : {}),
      });
    },
    openSession(info): SessionHooks {
      const inner = hooks.openSession(info);
      const p = current();
      const audit = recorder.openSession(
        info,
        p ? { policy: { name: p.policy.name, hash: p.hash }, role: p.policy.spec?.role } : undefined,
      );
      const samples = new ResultSamples();
      const capture = (): CaptureResults => current()?.policy.spec?.audit?.captureResults ?? DEFAULT_CAPTURE;
      // The policy's audit.captureParams (read per statement: a reload applies to the session's next one); without a
      // policy, the recorder's own option.
      const params = (): boolean => current()?.policy.spec?.audit?.captureParams ?? recorder.captureParams === true;
      const gate = (check: () => Verdict | Promise<Verdict>) => (blocked() ? AUDIT_UNAVAILABLE_VERDICT : check());
      const session: SessionHooks = {
        setupSql: () => inner.setupSql(),
        startupParams: () => inner.startupParams?.() ?? {},
        checkQuery: (req: StatementRequest) => gate(() => inner.checkQuery(req)),
        checkParse: (req: StatementRequest) => gate(() => inner.checkParse(req)),
        checkFunctionCall: (oid: number) => gate(() => inner.checkFunctionCall(oid)),
        // A statement prepared while the trail was durable must not run once it is not: each Execute is gated too.
        checkExecute: (prepared: Verdict, req: StatementRequest, resumed: boolean) =>
          blocked()
            ? AUDIT_UNAVAILABLE_VERDICT
            : inner.checkExecute
              ? inner.checkExecute(prepared, req, resumed)
              : prepared,
        planRows(fields, verdict) {
          const t = inner.planRows(fields, verdict);
          if (capture() !== 'rows') return t;
          const max = current()?.policy.spec?.audit?.maxResultBytes ?? DEFAULT_MAX_RESULT_BYTES;
          return samples.plan(fields, verdict, t, max);
        },
        statementDone(record) {
          // Inner first: masking scrubs error messages and adds its counters before audit reads the record.
          inner.statementDone(record);
          // One policy lookup per statement for all its settings.
          const settings = current()?.policy.spec?.audit;
          const captureResults: CaptureResults = settings?.captureResults ?? DEFAULT_CAPTURE;
          const captureParams = settings?.captureParams ?? recorder.captureParams === true;
          if (captureResults === 'rows') samples.attach(record.verdict, record.results);
          const text: StatementTextMode = settings?.statementText ?? 'full';
          // Fingerprints only on request in full mode: each distinct text then costs a normalization (docs/audit.md).
          const shaped =
            text === 'normalized'
              ? withNormalizedText(record)
              : settings?.fingerprint
                ? withFingerprints(record)
                : record;
          audit.statement(shaped, { captureResults, captureParams });
        },
        // Bind values are read only for a statement that needs them (review, or this).
        captureParams: params,
        settle: () => recorder.sink.flush?.(),
        close(reason) {
          inner.close(reason);
          audit.end(reason);
        },
      };
      if (inner.scrubText) session.scrubText = (text, verdict, fields) => inner.scrubText!(text, verdict, fields);
      if (inner.clientName) session.clientName = (name) => inner.clientName!(name);
      return session;
    },
  };
}

/** What the governed hooks (governance/policy-hooks.ts PolicyHooks) expose about the policy they enforce. */
export interface PolicyView {
  policy: {
    name: string;
    spec?: {
      role?: string;
      audit?: {
        failMode?: string;
        captureResults?: CaptureResults;
        maxResultBytes?: number;
        captureParams?: boolean;
        statementText?: StatementTextMode;
        fingerprint?: boolean;
      };
      guardrails?: { maxConnections?: number };
    };
  };
  hash: string;
}

/** The current policy of governed hooks (their `policy()`), or always undefined for hooks without one. */
export function policyOf(hooks: ProxyHooks): () => PolicyView | undefined {
  const h = hooks as ProxyHooks & { policy?: () => PolicyView | undefined };
  return typeof h.policy === 'function' ? () => h.policy!() : () => undefined;
}
