/**
 * Status for a MaskingRule: Accepted (is the spec valid?) and Ready (does it select at least one policy?), plus the
 * names of the policies it applies to, so `kubectl get mr` shows a rule that silently matches nothing.
 */
import {
  type DatabaseAccessPolicy,
  type MaskingRule,
  maskingRuleSelects,
  validateMaskingRuleSpec,
} from '@pgwarden/policy';
import { describeIssues } from '../core/normalise-policy.js';
import type { K8sWrites, ObjectRef } from './k8s-writes.js';
import type { KubeObject } from './list-watch.js';
import { type Condition, type MaskingRuleStatus, mergeConditions } from './policy-status.js';

export async function reconcileMaskingRule(
  deps: { policies: () => KubeObject[]; writes: K8sWrites; now?: () => Date },
  raw: KubeObject,
): Promise<void> {
  const rule = raw as unknown as MaskingRule & { metadata: any; status?: MaskingRuleStatus };
  const ns = rule.metadata.namespace;
  const ref: ObjectRef = {
    apiVersion: 'pgwarden.dev/v1alpha1',
    kind: 'MaskingRule',
    name: rule.metadata.name,
    namespace: ns,
    uid: rule.metadata.uid,
  };
  const generation = rule.metadata.generation;
  const spec = structuredClone(rule.spec ?? {});
  const issues = validateMaskingRuleSpec(spec).filter((i) => i.severity === 'error');
  const normalised = { ...rule, spec } as MaskingRule;
  const policies = issues.length
    ? []
    : (deps.policies() as unknown as DatabaseAccessPolicy[])
        .filter((p) => maskingRuleSelects(normalised, p))
        .map((p) => p.metadata.name)
        .sort();
  const next: Omit<Condition, 'lastTransitionTime'>[] = issues.length
    ? [
        {
          type: 'Accepted',
          status: 'False',
          reason: 'InvalidSpec',
          message: `invalid spec: ${describeIssues(issues)}`,
          observedGeneration: generation,
        },
        {
          type: 'Ready',
          status: 'False',
          reason: 'InvalidSpec',
          message: 'the policies it selects are not rendered while it is invalid',
          observedGeneration: generation,
        },
      ]
    : [
        {
          type: 'Accepted',
          status: 'True',
          reason: 'Valid',
          message: 'the spec is valid',
          observedGeneration: generation,
        },
        policies.length
          ? {
              type: 'Ready',
              status: 'True',
              reason: 'Selected',
              message: `applies to ${policies.length} policy(ies)`,
              observedGeneration: generation,
            }
          : {
              type: 'Ready',
              status: 'False',
              reason: 'NoPolicies',
              message: 'selects no DatabaseAccessPolicy in this namespace',
              observedGeneration: generation,
            },
      ];
  await deps.writes.applyStatus(
    ref,
    {
      observedGeneration: generation,
      conditions: mergeConditions(rule.status?.conditions, next, deps.now?.() ?? new Date()),
      policies,
    },
    rule.metadata.resourceVersion,
  );
}
