import {
  type AuditEvent,
  analyzeSql,
  createSessionState,
  type DatabaseAccessPolicy,
  decide,
  normalizeSql,
  type PolicyAction,
} from '@pgwarden/policy';

/**
 * `pgwarden policy replay`: what a candidate policy would have decided for the statements an audit trail recorded.
 * Before a policy change reaches the agents, its author sees which of last week's statements it would deny, allow
 * or hold that were decided otherwise. Pure: the events come from a collector, the policies from files.
 *
 * Each session is replayed in `seq` order through its own analysis state (search_path candidates, SQL prepared
 * statements), as the sidecar analysed it, and decided with the identity the event names. Only decisions the policy
 * made are compared: statements the sidecar refused at run time (rate limit, suspension, audit unavailable, a
 * statement too large) are counted apart, as are texts that cannot be replayed (`audit.statementText: normalized`
 * keeps no text of an unparseable statement, and a text cut to the sidecar's limit is not what ran).
 */

export type ReplayAction = PolicyAction;

export interface ReplayChange {
  before: ReplayAction;
  after: ReplayAction;
  /** The statement's shape (its text with constants replaced), which groups changes. */
  shape: string;
  /** The candidate's rule (absent: its defaultAction or a protection) and why. */
  rule?: string;
  reason: string;
  message: string;
  session: string;
  seq: number;
  who: string;
  time: string;
}

export interface ReplayReport {
  statements: number;
  sessions: number;
  /** `before → after` (e.g. `allow → deny`, `allow → allow`) and how many statements made it. */
  transitions: Record<string, number>;
  /** Statements whose decision would change, in trail order. */
  changes: ReplayChange[];
  skipped: { noPolicy: number; decidedAtRunTime: number; unreplayable: number };
}

/** The mark the sidecar puts after a statement text it cut (statement-json.ts). */
const TRUNCATED = /…\[truncated [0-9]+ chars\]$/;

/** Policy decisions as the sidecar records them; anything else was decided at run time. */
const POLICY_REASON =
  /^(rule|default|default: .+|identity-change|unsafe-setting|parse-error|unknown-prepared|guardrail:.+|dangerous:.+)$/;

/** What the policy decided for a recorded statement, or undefined when the sidecar refused it for another cause. */
export function recordedAction(decision: AuditEvent['decision']): ReplayAction | undefined {
  if (!decision) return undefined;
  const reason = decision.reason ?? '';
  // A held statement ends as allow (approved, or covered by a grant) or deny (rejected, expired, no queue).
  if (/^approved by /.test(reason) || /^review-(rejected|timeout|unavailable)$/.test(reason)) return 'review';
  if (decision.action === 'dryrun') return 'dryrun';
  return POLICY_REASON.test(reason) ? (decision.action as ReplayAction) : undefined;
}

function who(e: AuditEvent): string {
  const i = e.identity ?? { groups: [] };
  return i.user ?? (i.serviceAccount ? `${i.namespace ?? '-'}/${i.serviceAccount}` : '-');
}

function shapeOf(text: string): string {
  try {
    return normalizeSql(text);
  } catch {
    return text;
  }
}

/**
 * The candidate for an event: the only policy given, else the one with the event's policy name (and, when the
 * candidate has a namespace, the event's namespace).
 */
function candidateFor(e: AuditEvent, policies: readonly DatabaseAccessPolicy[]): DatabaseAccessPolicy | undefined {
  if (policies.length === 1) return policies[0];
  return policies.find(
    (p) =>
      p.metadata.name === e.policy?.name &&
      (p.metadata.namespace === undefined || p.metadata.namespace === e.identity?.namespace),
  );
}

export function replayStatements(
  events: readonly AuditEvent[],
  policies: readonly DatabaseAccessPolicy[],
): ReplayReport {
  const sessions = new Map<string, AuditEvent[]>();
  for (const e of events) {
    if (e.type !== 'statement' || !e.statement) continue;
    const list = sessions.get(e.session.id);
    if (list) list.push(e);
    else sessions.set(e.session.id, [e]);
  }
  const report: ReplayReport = {
    statements: 0,
    sessions: 0,
    transitions: {},
    changes: [],
    skipped: { noPolicy: 0, decidedAtRunTime: 0, unreplayable: 0 },
  };
  for (const [id, list] of sessions) {
    list.sort((a, b) => (a.session.seq ?? 0) - (b.session.seq ?? 0));
    let replayed = false;
    const states = new Map<DatabaseAccessPolicy, ReturnType<typeof createSessionState>>();
    for (const e of list) {
      const policy = candidateFor(e, policies);
      if (!policy) {
        report.skipped.noPolicy++;
        continue;
      }
      const text = e.statement?.text ?? '';
      // Kept without its text (normalized and unparseable), or cut to the sidecar's limit: not the statement that ran.
      if (text.startsWith('[unparseable statement,') || TRUNCATED.test(text)) {
        report.skipped.unreplayable++;
        continue;
      }
      let state = states.get(policy);
      if (!state) {
        state = createSessionState({ searchPath: ['public'], user: policy.spec.role });
        states.set(policy, state);
      }
      // Analysed whatever the recorded outcome, as the sidecar did: its state saw every statement too.
      const analysis = analyzeSql(text, state);
      const before = recordedAction(e.decision);
      if (before === undefined) {
        report.skipped.decidedAtRunTime++;
        continue;
      }
      const identity = e.identity ?? { groups: [] };
      const d = decide(policy.spec, analysis, {
        groups: identity.groups ?? [],
        namespace: identity.namespace ?? policy.metadata.namespace,
        serviceAccount: identity.serviceAccount,
        user: identity.user,
      });
      report.statements++;
      replayed = true;
      const key = `${before} → ${d.action}`;
      report.transitions[key] = (report.transitions[key] ?? 0) + 1;
      if (before !== d.action)
        report.changes.push({
          before,
          after: d.action,
          shape: shapeOf(text),
          ...(d.rule ? { rule: d.rule } : {}),
          reason: d.reason,
          message: d.message,
          session: id,
          seq: e.session.seq,
          who: who(e),
          time: e.time,
        });
    }
    if (replayed) report.sessions++;
  }
  return report;
}

/** Changes grouped by transition and shape, largest groups first: what a reviewer reads. */
export function groupChanges(changes: readonly ReplayChange[]) {
  const groups = new Map<string, { change: ReplayChange; count: number }>();
  for (const c of changes) {
    const key = `${c.before}\u0000${c.after}\u0000${c.rule ?? ''}\u0000${c.shape}`;
    const g = groups.get(key);
    if (g) g.count++;
    else groups.set(key, { change: c, count: 1 });
  }
  return [...groups.values()].sort((a, b) => b.count - a.count);
}

const oneLine = (s: string, max: number) => {
  const t = s.replace(/\s+/g, ' ').trim();
  return t.length > max ? `${t.slice(0, max - 1)}…` : t;
};

/** The report as text: the transitions, then each group of changed statements with an example. */
export function formatReplay(r: ReplayReport, maxGroups = 20): string {
  const lines = [`replayed ${r.statements} statement(s) of ${r.sessions} session(s)`];
  const skipped = [
    r.skipped.noPolicy && `${r.skipped.noPolicy} of policies not given`,
    r.skipped.decidedAtRunTime && `${r.skipped.decidedAtRunTime} refused at run time (rate limit, suspension, …)`,
    r.skipped.unreplayable && `${r.skipped.unreplayable} without replayable text`,
  ].filter(Boolean);
  if (skipped.length) lines.push(`skipped: ${skipped.join(', ')}`);
  for (const [k, n] of Object.entries(r.transitions).sort((a, b) => b[1] - a[1]))
    lines.push(
      `  ${k.padEnd(18)} ${String(n).padStart(7)}${k.split(' → ')[0] === k.split(' → ')[1] ? '' : '  changed'}`,
    );
  const groups = groupChanges(r.changes);
  if (groups.length === 0) {
    lines.push('no decision would change');
    return `${lines.join('\n')}\n`;
  }
  lines.push('', `${r.changes.length} decision(s) would change, ${groups.length} statement shape(s):`);
  for (const { change: c, count } of groups.slice(0, maxGroups)) {
    lines.push(
      `  ${count}× ${c.before} → ${c.after}${c.rule ? ` (rule "${c.rule}")` : ''} [${c.reason}]  ${oneLine(c.shape, 100)}`,
    );
    lines.push(`      e.g. ${c.who}, session ${c.session} #${c.seq} at ${c.time}: ${oneLine(c.message, 120)}`);
  }
  if (groups.length > maxGroups) lines.push(`  … and ${groups.length - maxGroups} more shape(s) (--json for all)`);
  return `${lines.join('\n')}\n`;
}

/** `--fail-on`: which changes make the command exit 1 (a CI gate on policy changes). */
export type FailOn = 'never' | 'denied' | 'changed';

/** `denied`: any statement the trail ran (allow, dryrun, approved review) that the candidate would deny. */
export function failed(r: ReplayReport, on: FailOn): boolean {
  if (on === 'never') return false;
  if (on === 'changed') return r.changes.length > 0;
  return r.changes.some((c) => c.after === 'deny');
}
