import type { DatabaseAccessPolicySpec, PolicyRule, StatementKind, Subjects } from '../api/access-policy-schema.js';
import type { SqlAnalysis } from '../sql/analysis-types.js';
import type { Decision, Subject } from './decision-types.js';
import { parseDuration } from './duration.js';
import { compileGlob, compileObjectGlob, type Glob } from './glob.js';
import { identitySpellings } from './identity-fold.js';

interface SubjectGlobs {
  groups: Glob[];
  serviceAccounts: Glob[];
  users: Glob[];
}

export interface CompiledSubjects extends SubjectGlobs {
  /** Deny rules only: the lists in each of identitySpellings' spellings, tried against the subject in the same one. */
  spelled?: SubjectGlobs[];
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

function subjectGlobs(s: Subjects, spell: (name: string) => string): SubjectGlobs {
  const globs = (list: readonly string[] | undefined) => (list ?? []).map((p) => compileGlob(spell(p)));
  return { groups: globs(s.groups), serviceAccounts: globs(s.serviceAccounts), users: globs(s.users) };
}

const SPELLINGS = [0, 1, 2] as const;

/**
 * `loose` (deny rules): the subject matches when its names match exactly or when both sides, in one of the spellings
 * of identitySpellings, do: a user who may edit the claim a deny rule names cannot step around it as
 * `Boss@Example.com`, `boss+x@example.com`, `b0ss@example.com` or with a Cyrillic `о`. Only deny rules: matching
 * more names there denies more, while an allow or review rule (it may come before a deny rule) matched loosely would
 * let in names nobody listed.
 */
export function compileSubjects(s: Subjects, loose = false): CompiledSubjects {
  if (!loose) return subjectGlobs(s, (p) => p);
  const spellings = new Map<string, readonly string[]>();
  const spelling = (name: string, i: number) => {
    const all = spellings.get(name) ?? identitySpellings(name);
    spellings.set(name, all);
    return all[i] as string;
  };
  return { ...subjectGlobs(s, (p) => p), spelled: SPELLINGS.map((i) => subjectGlobs(s, (p) => spelling(p, i))) };
}

const spelledSubjects = new WeakMap<Subject, Subject[]>();

/** The subject in each spelling, once per subject object (a session's, for the life of the session). */
function spelledSubject(subject: Subject): Subject[] {
  let f = spelledSubjects.get(subject);
  if (!f) {
    const groups = subject.groups.map(identitySpellings);
    const [namespace, serviceAccount, user] = [subject.namespace, subject.serviceAccount, subject.user].map((n) =>
      n === undefined ? undefined : identitySpellings(n),
    );
    f = SPELLINGS.map((i) => ({
      groups: groups.map((g) => g[i]),
      ...(namespace ? { namespace: namespace[i] } : {}),
      ...(serviceAccount ? { serviceAccount: serviceAccount[i] } : {}),
      ...(user ? { user: user[i] } : {}),
    }));
    spelledSubjects.set(subject, f);
  }
  return f;
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
      subjects: rule.subjects ? compileSubjects(rule.subjects, rule.action === 'deny') : undefined,
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

/** Any listed group, service account (`name` or `namespace/name`) or user matches (or, when loose, a spelling of it). */
export function subjectMatches(s: CompiledSubjects, subject: Subject): boolean {
  if (globsMatch(s, subject)) return true;
  if (s.spelled === undefined) return false;
  const spelled = spelledSubject(subject);
  return s.spelled.some((globs, i) => globsMatch(globs, spelled[i] as Subject));
}

function globsMatch(s: SubjectGlobs, subject: Subject): boolean {
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
