import {
  type DatabaseAccessPolicy,
  isReadableKeyRef,
  type MaskingRule,
  maskingKeyRefs,
  maskingRuleSelects,
} from '@pgwarden/policy';

/** A Secret the sidecar reads MaskingRule HMAC keys from, and which of its keys. */
export interface MaskingKeySecret {
  secret: string;
  keys: string[];
}

/**
 * The Secrets (and keys) named by keySecretRef in the MaskingRules that select this policy: the same selection
 * renderPolicy makes for the ConfigMap the sidecar loads. Sorted, so the sidecar's shape (and hash) is stable.
 */
export function maskingKeySecrets(policy: DatabaseAccessPolicy, rules: readonly MaskingRule[]): MaskingKeySecret[] {
  const selected = rules
    .filter((r) => r?.metadata && r.spec && maskingRuleSelects(r, policy))
    .map((r) => ({ name: r.metadata.name, spec: r.spec }));
  const bySecret = new Map<string, Set<string>>();
  for (const ref of maskingKeyRefs(selected)) {
    // The sidecar reports such a ref as unreadable at policy load; mounting it would only make the pod invalid.
    if (!isReadableKeyRef(ref)) continue;
    const keys = bySecret.get(ref.secret) ?? new Set<string>();
    bySecret.set(ref.secret, keys.add(ref.key));
  }
  return [...bySecret.keys()].sort().map((secret) => ({ secret, keys: [...bySecret.get(secret)!].sort() }));
}
