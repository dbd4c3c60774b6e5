/**
 * Pure helpers for the DatabaseAccessPolicy status: conditions that follow the metav1.Condition conventions
 * (https://github.com/kubernetes/community/blob/master/contributors/devel/sig-architecture/api-conventions.md#typical-status-properties)
 * and the matched-workload count.
 */
import { type DatabaseAccessPolicy, matchesLabelSelector } from '@pgwarden/policy';

export interface Condition {
  type: 'Accepted' | 'Ready' | 'PodsCurrent';
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  observedGeneration?: number;
  lastTransitionTime: string;
}

export interface PolicyStatus {
  observedGeneration?: number;
  conditions: Condition[];
  matchedWorkloads: number;
  renderedHash?: string;
  configMap?: string;
}

/**
 * Ready=False reasons of a valid policy whose rendering cannot reach its ConfigMap. The webhook refuses new pods such
 * a policy selects: they would start on the last good content, or on a ConfigMap someone else wrote.
 */
export const UNDELIVERABLE_REASONS = ['RenderedPolicyTooLarge', 'ConfigMapNotOwned'] as const;
export type UndeliverableReason = (typeof UNDELIVERABLE_REASONS)[number];

/** The Ready condition that makes a policy undeliverable, from the status the leader wrote (any replica reads it). */
export function undeliverablePolicy(p: { status?: { conditions?: Condition[] } }): Condition | undefined {
  const ready = p.status?.conditions?.find((c) => c.type === 'Ready');
  return ready?.status === 'False' && (UNDELIVERABLE_REASONS as readonly string[]).includes(ready.reason)
    ? ready
    : undefined;
}

/** RFC 3339 at second precision, as metav1.Time serialises. */
export function k8sTime(d: Date): string {
  return d.toISOString().replace(/\.\d+Z$/, 'Z');
}

/** lastTransitionTime moves only when the status value flips; reason/message updates keep it. */
export function mergeConditions(
  previous: Condition[] | undefined,
  next: Omit<Condition, 'lastTransitionTime'>[],
  now: Date,
): Condition[] {
  return next.map((c) => {
    const prev = previous?.find((p) => p.type === c.type);
    const lastTransitionTime =
      prev && prev.status === c.status && prev.lastTransitionTime ? prev.lastTransitionTime : k8sTime(now);
    return { ...c, lastTransitionTime };
  });
}

export interface MaskingRuleStatus {
  observedGeneration?: number;
  conditions: Condition[];
  /** Names of the DatabaseAccessPolicies this rule currently applies to. */
  policies: string[];
}

interface PodMeta {
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    ownerReferences?: any[];
    deletionTimestamp?: string;
  };
}

/**
 * Distinct workloads among the pods a policy selects: a pod's controller owner, with a ReplicaSet mapped back to its
 * Deployment via the pod-template-hash suffix (https://kubernetes.io/docs/concepts/workloads/controllers/deployment/#pod-template-hash-label);
 * a bare pod counts as itself. Terminating pods do not count.
 */
export function countWorkloads(policy: DatabaseAccessPolicy, pods: Iterable<PodMeta>): number {
  const seen = new Set<string>();
  for (const pod of pods) {
    if (pod.metadata.namespace !== policy.metadata.namespace || pod.metadata.deletionTimestamp) continue;
    if (!matchesLabelSelector(policy.spec.podSelector ?? {}, pod.metadata.labels ?? {})) continue;
    const owner = (pod.metadata.ownerReferences ?? []).find((o) => o.controller);
    if (!owner) {
      seen.add(`Pod/${pod.metadata.name}`);
      continue;
    }
    const hash = pod.metadata.labels?.['pod-template-hash'];
    if (owner.kind === 'ReplicaSet' && hash && owner.name.endsWith(`-${hash}`)) {
      seen.add(`Deployment/${owner.name.slice(0, -(hash.length + 1))}`);
    } else seen.add(`${owner.kind}/${owner.name}`);
  }
  return seen.size;
}
