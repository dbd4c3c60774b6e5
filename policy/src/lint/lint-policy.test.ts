import { describe, expect, it } from 'vitest';
import { parsePolicyDocuments } from '../api/load-documents.js';
import { lintPolicySpec } from './lint-policy.js';

const spec = (rules: string) =>
  parsePolicyDocuments(
    `apiVersion: pgwarden.dev/v1alpha1\nkind: DatabaseAccessPolicy\nmetadata: {name: p}\nspec:\n  database: {host: h, name: d}\n  role: r\n  rules:\n${rules}`,
  ).policies[0].spec;

describe('lintPolicySpec', () => {
  it('finds shadowed rules, never-matching rules and suspicious globs', () => {
    const s = spec(
      [
        '    - {name: all-public, action: allow, statements: [select, insert], tables: ["public.*"]}',
        '    - {name: orders, action: review, statements: [insert], tables: [public.orders]}',
        '    - {name: nobody, action: allow, subjects: {groups: []}}',
        '    - {name: empty, action: allow, tables: []}',
        '    - {name: ddl-only, action: allow, statements: [ddl]}',
        '    - {name: upper, action: allow, tables: [Public.Orders, "orders"]}',
        '',
      ].join('\n'),
    );
    const issues = lintPolicySpec(s).map((i) => `${i.severity} ${i.path} ${i.message}`);
    expect(issues).toEqual([
      'error /spec/rules/1 rule "orders" is shadowed by rule "all-public" (rules/0), which matches everything it matches',
      'error /spec/rules/2/subjects no groups, serviceAccounts or users: rule "nobody" can never match',
      'error /spec/rules/3/tables empty list: rule "empty" can never match (omit the field to match any)',
      'error /spec/rules/4/statements rule "ddl-only" only covers ddl, which guardrail blockDDL always denies',
      'warning /spec/rules/5/tables/0 "Public.Orders" contains upper case: unquoted identifiers are folded to lower case, so this only matches quoted names',
      'warning /spec/rules/5/tables/1 "orders" has no schema: it matches the name in every schema',
    ]);
  });

  it('a rule restricted to a subject does not shadow a later general rule', () => {
    const s = spec(
      '    - {name: oncall, action: allow, statements: [delete], subjects: {groups: [oncall]}}\n    - {name: all, action: review, statements: [delete]}\n',
    );
    expect(lintPolicySpec(s).filter((i) => i.severity === 'error')).toEqual([]);
  });

  it('warns about a deny rule on user names taken from a claim other than sub', () => {
    const doc = (claim: string) =>
      parsePolicyDocuments(
        `apiVersion: pgwarden.dev/v1alpha1\nkind: DatabaseAccessPolicy\nmetadata: {name: p}\nspec:\n  database: {host: h, name: d}\n  role: r\n  authentication: {mode: oidc, oidc: {issuer: "https://idp", audience: a, usernameClaim: ${claim}}}\n  rules:\n    - {name: no-boss, action: deny, subjects: {users: [boss@example.com]}}\n    - {name: alice, action: allow, subjects: {users: [alice@example.com]}}\n`,
      ).policies[0].spec;
    const about = (claim: string) => lintPolicySpec(doc(claim)).filter((i) => i.path.includes('/subjects/users'));
    expect(about('email').map((i) => `${i.severity} ${i.path}`)).toEqual(['warning /spec/rules/0/subjects/users']);
    expect(about('email')[0].message).toMatch(/claim "email", which the user may be able to edit/);
    expect(about('sub')).toEqual([]);
  });
});
