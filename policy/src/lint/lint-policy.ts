import type { DatabaseAccessPolicySpec, PolicyRule } from '../api/access-policy-schema.js';
import { compileObjectGlob, globProblems } from '../engine/glob.js';
import type { PolicyIssue } from '../errors.js';

/**
 * Semantic checks beyond the schema, for `pgwarden policy lint`: rules that can never match, rules shadowed by
 * an earlier rule (first match wins), patterns that cannot mean what they say, risky defaults.
 */
export function lintPolicySpec(spec: DatabaseAccessPolicySpec, base = '/spec'): PolicyIssue[] {
  const out: PolicyIssue[] = [];
  const err = (path: string, message: string) => out.push({ path: base + path, message, severity: 'error' });
  const warn = (path: string, message: string) => out.push({ path: base + path, message, severity: 'warning' });

  spec.rules.forEach((r, i) => {
    const at = `/rules/${i}`;
    for (const f of ['statements', 'tables', 'functions'] as const) {
      if (r[f]?.length === 0)
        err(`${at}/${f}`, `empty list: rule "${r.name}" can never match (omit the field to match any)`);
    }
    const s = r.subjects;
    if (s && !s.groups?.length && !s.serviceAccounts?.length && !s.users?.length) {
      err(`${at}/subjects`, `no groups, serviceAccounts or users: rule "${r.name}" can never match`);
    }
    if (
      r.action !== 'deny' &&
      spec.guardrails.blockDDL &&
      r.statements?.length &&
      r.statements.every((k) => k === 'ddl')
    ) {
      err(`${at}/statements`, `rule "${r.name}" only covers ddl, which guardrail blockDDL always denies`);
    }
    const claim = spec.authentication.mode === 'oidc' ? (spec.authentication.oidc?.usernameClaim ?? 'sub') : 'sub';
    if (r.action === 'deny' && s?.users?.length && claim !== 'sub') {
      warn(
        `${at}/subjects/users`,
        `deny rule "${r.name}" names users from claim "${claim}", which the user may be able to edit at the identity provider: other spellings are folded, but name groups (or use usernameClaim sub) for a rule that has to hold`,
      );
    }
    r.tables?.forEach((t, j) => {
      for (const p of globProblems(t, 'object')) warn(`${at}/tables/${j}`, `"${t}" ${p}`);
      if (!t.includes('.')) warn(`${at}/tables/${j}`, `"${t}" has no schema: it matches the name in every schema`);
    });
    r.functions?.forEach((f, j) => {
      for (const p of globProblems(f, 'object')) warn(`${at}/functions/${j}`, `"${f}" ${p}`);
    });
    for (let k = 0; k < i; k++) {
      const earlier = spec.rules[k];
      if (shadows(earlier, r)) {
        err(
          at,
          `rule "${r.name}" is shadowed by rule "${earlier.name}" (rules/${k}), which matches everything it matches`,
        );
        break;
      }
    }
  });
  spec.guardrails.blockedFunctions.forEach((f, j) => {
    for (const p of globProblems(f, 'object')) warn(`/guardrails/blockedFunctions/${j}`, `"${f}" ${p}`);
  });
  if (spec.defaultAction === 'allow') warn('/defaultAction', 'allow: every statement no rule matches is allowed');
  if (spec.role === undefined) warn('/role', 'no role: the session keeps the login role of the credentials');
  return out;
}

/** Every pattern of `later` is matched by some pattern of `earlier` (conservative: only literal coverage). */
function globsCover(earlier: string[] | undefined, later: string[] | undefined): boolean {
  if (earlier === undefined) return true;
  if (later === undefined) return false;
  const compiled = earlier.map(compileObjectGlob);
  return later.every((p) => compiled.some((g) => g.test(p.includes('.') ? p : `*.${p}`)));
}

function sameSubjects(a: PolicyRule['subjects'], b: PolicyRule['subjects']): boolean {
  if (a === undefined) return true;
  if (b === undefined) return false;
  const cover = (x?: string[], y?: string[]) => (y ?? []).every((v) => (x ?? []).includes(v));
  return cover(a.groups, b.groups) && cover(a.serviceAccounts, b.serviceAccounts) && cover(a.users, b.users);
}

/** A non-deny rule shadows a later one when it matches every statement the later one can match. */
function shadows(earlier: PolicyRule, later: PolicyRule): boolean {
  if (earlier.action === 'deny') return false; // deny rules match on overlap, not coverage: not comparable this way
  const kindsCover =
    earlier.statements === undefined || later.statements?.every((k) => earlier.statements?.includes(k)) === true;
  return (
    kindsCover &&
    globsCover(earlier.tables, later.tables) &&
    globsCover(earlier.functions, later.functions) &&
    sameSubjects(earlier.subjects, later.subjects)
  );
}
