import type { DatabaseAccessPolicySpec, PolicyAction } from '../api/access-policy-schema.js';
import type { SqlAnalysis, StatementAnalysis } from '../sql/analysis-types.js';
import { type CompiledPolicy, type CompiledRule, compilePolicy, subjectMatches } from './compile-policy.js';
import type { Decision, DecisionReason, StatementDecision, Subject } from './decision-types.js';

const RANK: Record<PolicyAction, number> = { allow: 0, dryrun: 1, review: 2, deny: 3 };

function qualified(o: { schema: string; name: string }): string {
  return `${o.schema}.${o.name}`;
}

/** Qualified names of a statement's relations and functions, computed once per statement. */
interface Names {
  tables: string[];
  functions: string[];
  /** Functions `t.f` field references may call (the analysis had no catalog to tell): only `functions` lists see them. */
  possible: string[];
  /** How functions the text does not call by name are run (an operator, a cast, a write), keyed by qualified name. */
  via?: Map<string, string>;
}

const NONE: string[] = [];

function possibleCalls(a: StatementAnalysis): string[] {
  if (a.fieldCalls === undefined) return NONE;
  const out = new Set<string>();
  for (const c of a.fieldCalls) for (const f of c.functions) out.add(qualified(f));
  return [...out];
}

function namesOf(a: StatementAnalysis): Names {
  const names: Names = {
    tables: a.relations.map(qualified),
    functions: a.functions.map(qualified),
    possible: possibleCalls(a),
  };
  for (const f of a.functions) {
    if (f.via === undefined) continue;
    names.via ??= new Map();
    names.via.set(qualified(f), f.via);
  }
  return names;
}

/** ` (run by operator ##)` for a function the text does not call by name, else nothing. */
const reachedBy = (names: Names, q: string): string => {
  const via = names.via?.get(q);
  return via === undefined ? '' : ` (${via})`;
};

/**
 * allow/review/dryrun rules must cover the whole statement: every kind, relation and function. deny rules match
 * when the statement uses ANY listed kind, relation or function. Both fail closed. Subjects must match either way.
 */
export function ruleMatches(
  r: CompiledRule,
  a: StatementAnalysis,
  subject: Subject,
  names: Names = namesOf(a),
): boolean {
  if (r.rule.action === 'deny') return denyRuleMatches(r, a, subject, names);
  if (r.kinds) for (const k of a.kinds) if (!r.kinds.has(k)) return false;
  if (r.tables) for (const q of names.tables) if (!r.tables.some((g) => g.test(q))) return false;
  if (r.functions) {
    for (const q of names.functions) if (!r.functions.some((g) => g.test(q))) return false;
    for (const q of names.possible) if (!r.functions.some((g) => g.test(q))) return false;
  }
  return r.subjects === undefined || subjectMatches(r.subjects, subject);
}

function denyRuleMatches(r: CompiledRule, a: StatementAnalysis, subject: Subject, names: Names): boolean {
  if (r.kinds && !a.kinds.some((k) => r.kinds?.has(k))) return false;
  if (r.tables && !names.tables.some((q) => r.tables?.some((g) => g.test(q)))) return false;
  if (
    r.functions &&
    !names.functions.some((q) => r.functions?.some((g) => g.test(q))) &&
    !names.possible.some((q) => r.functions?.some((g) => g.test(q)))
  )
    return false;
  return r.subjects === undefined || subjectMatches(r.subjects, subject);
}

function by(rule: CompiledRule | undefined): string {
  return rule ? `by rule "${rule.rule.name}"` : 'by the default action (no rule matched)';
}

const covers = (globs: CompiledRule['tables'], q: string) => globs === undefined || globs.some((g) => g.test(q));

/**
 * What kept every rule from matching, for a statement the default action decides. Narrowed as rules are matched:
 * the rules that apply to the subject, those of them allowing all the statement's kinds, those of these covering all
 * its relations; the first kind, relation or function none of a step's rules covers is named. Only names the
 * statement itself uses (never literals), kinds and rule names.
 */
export function uncovered(
  p: CompiledPolicy,
  a: StatementAnalysis,
  subject: Subject,
  names: Names = namesOf(a),
): string {
  const applying = p.rules.filter(
    (r) => r.rule.action !== 'deny' && (r.subjects === undefined || subjectMatches(r.subjects, subject)),
  );
  if (applying.length === 0) return 'no rule applies to this client';
  for (const k of a.kinds)
    if (!applying.some((r) => r.kinds === undefined || r.kinds.has(k)))
      return `statement kind "${k}" is not allowed by any rule`;
  const byKinds = applying.filter((r) => a.kinds.every((k) => r.kinds === undefined || r.kinds.has(k)));
  if (byKinds.length === 0)
    return `statement kinds ${a.kinds.map((k) => `"${k}"`).join(', ')} are not allowed together by any rule`;
  const none = (rules: CompiledRule[], list: string) =>
    rules.length === 1 ? `rule "${rules[0].rule.name}"` : `any rule allowing ${a.kinds.join(', ')}${list}`;
  for (const q of names.tables)
    if (!byKinds.some((r) => covers(r.tables, q))) return `relation "${q}" is not covered by ${none(byKinds, '')}`;
  const byTables = byKinds.filter((r) => names.tables.every((q) => covers(r.tables, q)));
  if (byTables.length === 0) {
    const r = byKinds[0];
    return `relation "${names.tables.find((q) => !covers(r.tables, q))}" is not covered by rule "${r.rule.name}"`;
  }
  // A possible call of field notation is named as such: `o.id` is most likely a column, and the message says why.
  const fns = [
    ...names.functions.map((q) => `function "${q}"${reachedBy(names, q)}`),
    ...names.possible.map((q) => `function "${q}" (field notation: t.${q.slice(q.lastIndexOf('.') + 1)} may call it)`),
  ];
  const all = [...names.functions, ...names.possible];
  for (let i = 0; i < all.length; i++)
    if (!byTables.some((r) => covers(r.functions, all[i])))
      return byTables.length === 1
        ? `${fns[i]} is not in rule "${byTables[0].rule.name}"'s functions list`
        : `${fns[i]} is not in the functions list of ${none(byTables, ' on these relations')}`;
  const r = byTables[0];
  const i = all.findIndex((q) => !covers(r.functions, q));
  if (i >= 0) return `${fns[i]} is not in rule "${r.rule.name}"'s functions list`;
  return 'no rule matched';
}

function judge(p: CompiledPolicy, a: StatementAnalysis, subject: Subject): StatementDecision {
  const names = namesOf(a);
  // Decisions are built as literals of one shape: an object spread here cost more than the rule matching.
  const result = (
    action: PolicyAction,
    reason: DecisionReason,
    message: string,
    rule: CompiledRule | undefined,
    detail?: string,
  ): StatementDecision => ({
    text: a.text,
    kind: a.kind,
    tables: names.tables,
    functions: names.functions,
    action,
    rule: rule?.rule.name,
    reason,
    message,
    detail,
  });
  const deny = (reason: DecisionReason, message: string, rule?: CompiledRule, detail?: string): StatementDecision =>
    result('deny', reason, `pgwarden: statement denied${message}`, rule, detail);
  if (a.identityChange) {
    return deny('identity-change', `: ${a.identityChange} is never allowed (the session role is fixed by the policy)`);
  }
  if (a.unsafeSetting) {
    return deny('unsafe-setting', `: ${a.unsafeSetting} is never allowed`);
  }
  if (a.unknownPrepared !== undefined) {
    return deny('unknown-prepared', `: prepared statement "${a.unknownPrepared}" is unknown to pgwarden`);
  }
  let rule: CompiledRule | undefined;
  for (const r of p.rules) {
    if (ruleMatches(r, a, subject, names)) {
      rule = r;
      break;
    }
  }
  const action = rule ? rule.rule.action : p.spec.defaultAction;
  // Under the default action, what no rule covered: the client's way to a fix (the same text reaches the audit).
  const miss = rule === undefined && action !== 'allow' ? uncovered(p, a, subject, names) : undefined;
  if (action === 'deny') {
    if (miss !== undefined) return deny('default', ` by the default action: ${miss}`, undefined, miss);
    const touched = names.tables.length > 0 ? ` (relations: ${names.tables.slice(0, 5).join(', ')})` : '';
    return deny('rule', ` ${by(rule)}${touched}`, rule);
  }
  for (const d of a.dangerous) {
    const allowed =
      rule !== undefined &&
      (rule.allowDangerous.has(d.category) ||
        (d.category === 'dynamic-sql' && a.kind === 'do' && rule.kinds?.has('do') === true));
    if (!allowed) {
      return deny(
        `dangerous:${d.category}`,
        `: ${d.detail} is a dangerous operation (${d.category}) ${rule ? `not allowed by rule "${rule.rule.name}"` : 'that no rule allows'}`,
        rule,
      );
    }
  }
  const g = p.spec.guardrails;
  if (g.blockDDL && a.kinds.includes('ddl'))
    return deny('guardrail:blockDDL', ' by guardrail blockDDL: DDL is not allowed', rule);
  for (const m of a.missingWhere) {
    if (p.requireWhere.has(m)) {
      return deny(
        'guardrail:requireWhere',
        ` by guardrail requireWhere: ${m.toUpperCase()} without a WHERE clause`,
        rule,
      );
    }
  }
  for (const q of names.functions) {
    if (p.blockedFunctions.some((b) => b.test(q))) {
      return deny(
        'guardrail:blockedFunctions',
        ` by guardrail blockedFunctions: function ${q}${reachedBy(names, q)}`,
        rule,
      );
    }
  }
  const verb =
    action === 'allow' ? 'allowed' : action === 'review' ? 'held for review' : 'allowed in dry-run (would be denied)';
  const how = miss === undefined ? by(rule) : `by the default action: ${miss}`;
  return result(action, rule ? 'rule' : 'default', `pgwarden: statement ${verb} ${how}`, rule, miss);
}

/**
 * Decides a whole Query: every statement is judged (first matching rule wins), and the most restrictive outcome
 * applies to all of them — one denial denies the Query. Pure; results for cached analyses are cached per
 * (policy spec, analysis, subject object), so pass the same Subject object for a session. Treat the result as
 * immutable.
 */
export function decide(spec: DatabaseAccessPolicySpec, analysis: SqlAnalysis, subject: Subject): Decision {
  const p = compilePolicy(spec);
  let perSubject = p.decisions.get(analysis);
  const hit = perSubject?.get(subject);
  if (hit) return hit;
  const d = decideUncached(p, analysis, subject);
  if (perSubject === undefined) {
    perSubject = new WeakMap();
    p.decisions.set(analysis, perSubject);
  }
  perSubject.set(subject, d);
  return d;
}

function decideUncached(p: CompiledPolicy, analysis: SqlAnalysis, subject: Subject): Decision {
  const limits = { maxRows: p.maxRows, timeoutMs: p.timeoutMs };
  if (!analysis.ok) {
    if (analysis.error.code === '42601') {
      // The parser is PostgreSQL's own: answer as PostgreSQL would (message and position, which psql turns into a
      // caret under the error), and say in the hint who refused it.
      return {
        action: 'deny',
        reason: 'parse-error',
        code: '42601',
        message: analysis.error.message,
        position: analysis.error.position,
        hint: 'pgwarden refused the statement before it reached PostgreSQL: SQL that does not parse cannot be checked against the policy.',
        statements: [],
      };
    }
    return {
      action: 'deny',
      reason: 'parse-error',
      code: analysis.error.code,
      message: `pgwarden: statement denied: ${analysis.error.message}`,
      statements: [],
    };
  }
  const statements = analysis.statements.map((a) => judge(p, a, subject));
  let worst: StatementDecision | undefined;
  for (const s of statements) if (worst === undefined || RANK[s.action] > RANK[worst.action]) worst = s;
  if (worst === undefined)
    return { action: 'allow', reason: 'rule', message: 'pgwarden: empty query', statements, ...limits };
  const d: Decision = {
    action: worst.action,
    rule: worst.rule,
    reason: worst.reason,
    message: worst.message,
    statements,
  };
  if (worst.detail !== undefined) d.detail = worst.detail;
  if (worst.action === 'deny') d.code = '42501';
  else {
    Object.assign(d, limits);
    if (p.maxAffected !== undefined) return guardWrites(d, analysis.statements, p.maxAffected);
  }
  return d;
}

const COUNTED_WRITES: ReadonlySet<string> = new Set(['insert', 'update', 'delete', 'merge']);

/**
 * guardrails.maxRowsAffected: a Query that writes, or may (it calls a user-defined function or procedure, or is a DO
 * block), gets the cap. The proxy counts the rows in each CommandComplete tag and, from PostgreSQL's per-transaction
 * statistics, the rows the whole statement changed (its triggers, cascades and functions, a write inside a SELECT,
 * EXPLAIN ANALYZE or DO body included), and undoes a statement over the cap. Denied: COPY FROM, whose rows arrive while the proxy would be holding the client's messages; TRUNCATE (also in a DO block), whose
 * rows neither its tag (`TRUNCATE TABLE`) nor the per-table counters count; and
 * transaction control in the same Query as a write, which would end the transaction the proxy needs to undo it.
 */
function guardWrites(d: Decision, statements: readonly StatementAnalysis[], max: number): Decision {
  let writes = false;
  let control = false;
  for (const s of statements) {
    if (s.kind === 'transaction') control = true;
    const counted = s.kinds.some((k) => COUNTED_WRITES.has(k));
    // What the analysis cannot see may write too: a user-defined function's body (called from any statement but a
    // COPY TO), a procedure, a DO block's dynamic SQL. The proxy's count sees what they change.
    if (!counted && s.kind !== 'do' && s.kind !== 'call' && (s.kind === 'copy' || !callsUserFunction(s))) continue;
    writes = true;
    if (s.truncates) {
      return guardDenial(
        d,
        "pgwarden: statement denied by guardrail maxRowsAffected: TRUNCATE removes rows that neither its command tag nor PostgreSQL's statistics count, so the cap cannot hold; use DELETE with a WHERE clause",
      );
    }
    if (counted && s.kind === 'copy') {
      return guardDenial(
        d,
        'pgwarden: statement denied by guardrail maxRowsAffected: the rows a COPY FROM statement changes cannot be counted before they are committed; use INSERT',
      );
    }
  }
  if (!writes) return d;
  if (control && statements.length > 1) {
    return guardDenial(
      d,
      'pgwarden: statement denied by guardrail maxRowsAffected: send transaction control (BEGIN, COMMIT, …) as its own statement, not in one Query with a write',
    );
  }
  return { ...d, maxAffected: max };
}

/** Calls a function PostgreSQL does not define itself (the analysis resolves its own to pg_catalog). */
function callsUserFunction(s: StatementAnalysis): boolean {
  for (const f of s.functions) if (f.schema !== 'pg_catalog' && f.schema !== 'information_schema') return true;
  return false;
}

function guardDenial(d: Decision, message: string): Decision {
  const { maxRows: _r, timeoutMs: _t, ...rest } = d;
  return { ...rest, action: 'deny', reason: 'guardrail:maxRowsAffected', code: '42501', message };
}
