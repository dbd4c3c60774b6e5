import { type DatabaseAccessPolicy, formatIssue, type PolicyIssue, validatePolicySpec } from '@pgwarden/policy';

/**
 * A deep copy of a policy with its schema defaults filled in (what a real API server does through the CRD's
 * `default`s, and what the fake API server and offline files do not), plus the validation errors.
 */
export function normalisePolicy(p: DatabaseAccessPolicy): { policy: DatabaseAccessPolicy; errors: PolicyIssue[] } {
  const policy = structuredClone(p);
  policy.spec ??= {} as DatabaseAccessPolicy['spec'];
  const errors = validatePolicySpec(policy.spec).filter((i) => i.severity === 'error');
  return { policy, errors };
}

export function describeIssues(issues: PolicyIssue[]): string {
  return issues
    .slice(0, 3)
    .map((i) => formatIssue(i).replace(/^error: /, ''))
    .join('; ');
}
