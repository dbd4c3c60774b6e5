import type { DatabaseAccessPolicySpec, PolicyRule, StatementKind, Subjects } from '../api/access-policy-schema.js';
import type { SqlAnalysis } from '../sql/analysis-types.js';
import type { Decision, Subject } from './decision-types.js';
import { parseDuration } from './duration.js';
import { compileGlob, compileObjectGlob, type Glob } from './glob.js';

export interface CompiledSubjects {
  groups: Glob[];
  serviceAccounts: Glob[];
  users: Glob[];
}

export interface CompiledRule {
  index: number;
  rule: PolicyRule;
  kinds: ReadonlySet<StatementKind> | undefined;
  tables: Glob[] | undefined;
  functions: Glob[] | undefined;
  subjects: CompiledSubjects | undefined;
  allowDangerous: ReadonlySet<string>;
}

export interface CompiledPolicy {
  spec: DatabaseAccessPolicySpec;
  rules: CompiledRule[];
  blockedFunctions: Glob[];
  requireWhere: ReadonlySet<string>;
  maxRows: number | undefined;
  timeoutMs: number | undefined;
  /** guardrails.maxRowsAffected. */
  maxAffected: number | undefined;
  /** Decisions by analysis (cached analyses are shared objects) and subject object. */
  decisions: WeakMap<SqlAnalysis, WeakMap<Subject, Decision>>;
}

const compiled = new WeakMap<DatabaseAccessPolicySpec, CompiledPolicy>();

export function compileSubjects(s: Subjects): CompiledSubjects {
  return {
    groups: (s.groups ?? []).map(compileGlob),
    serviceAccounts: (s.serviceAccounts ?? []).map(compileGlob),
    users: (s.users ?? []).map(compileGlob),
  };
}

/** Compiles (once per spec object) the globs and limits of a validated policy spec. */
export function compilePolicy(spec: DatabaseAccessPolicySpec): CompiledPolicy {
  const hit = compiled.get(spec);
  if (hit) return hit;
  const g = spec.guardrails;
  const c: CompiledPolicy = {
    spec,
    rules: spec.rules.map((rule, index) => ({
      index,
      rule,
      kinds: rule.statements ? new Set(rule.statements) : undefined,
      tables: rule.tables?.map(compileObjectGlob),
      functions: rule.functions?.map(compileObjectGlob),
      subjects: rule.subjects ? compileSubjects(rule.subjects) : undefined,
      allowDangerous: new Set(rule.allowDangerous ?? []),
    })),
    blockedFunctions: g.blockedFunctions.map(compileObjectGlob),
    requireWhere: new Set(g.requireWhere),
    maxRows: g.maxRowsReturned > 0 ? g.maxRowsReturned : undefined,
    timeoutMs: g.statementTimeout ? parseDuration(g.statementTimeout) : undefined,
    maxAffected: g.maxRowsAffected,
    decisions: new WeakMap(),
  };
  compiled.set(spec, c);
  return c;
}

/** Any listed group, service account (`name` or `namespace/name`) or user matches. */
export function subjectMatches(s: CompiledSubjects, subject: Subject): boolean {
  for (const g of s.groups) for (const have of subject.groups) if (g.test(have)) return true;
  if (subject.serviceAccount !== undefined) {
    const full = `${subject.namespace ?? ''}/${subject.serviceAccount}`;
    for (const sa of s.serviceAccounts) {
      if (sa.test(sa.source.includes('/') ? full : subject.serviceAccount)) return true;
    }
  }
  if (subject.user !== undefined) for (const u of s.users) if (u.test(subject.user)) return true;
  return false;
}
