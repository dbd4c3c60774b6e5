import type { MaskingRuleSpec } from '../api/masking-rule-schema.js';

/** One column strategy's keySecretRef: the Secret key a `hash` pseudonym is keyed with. */
export interface MaskingKeyRef {
  rule: string;
  secret: string;
  key: string;
}

/**
 * Every keySecretRef of these rules, once per (rule, secret, key), in rule order. The operator mounts these into
 * the sidecar; the sidecar checks at each policy load that it can read them.
 */
export function maskingKeyRefs(rules: readonly { name: string; spec: MaskingRuleSpec }[]): MaskingKeyRef[] {
  const seen = new Set<string>();
  const out: MaskingKeyRef[] = [];
  for (const r of rules) {
    for (const c of r.spec.columns ?? []) {
      const ref = c.strategy?.keySecretRef;
      if (typeof ref?.name !== 'string' || typeof ref.key !== 'string') continue;
      const id = JSON.stringify([r.name, ref.name, ref.key]);
      if (seen.has(id)) continue;
      seen.add(id);
      out.push({ rule: r.name, secret: ref.name, key: ref.key });
    }
  }
  return out;
}

const KEY_PATH_PART = /^[-._a-zA-Z0-9]+$/;

/**
 * Whether `<dir>/<secret>/<key>` names a file inside dir. The schema lets a Secret key be `..` or start with a dot;
 * the sidecar never reads such a path (it could leave the keys directory), so the operator does not mount it either
 * (Kubernetes would refuse a volume item path with a `..` element).
 */
export function isReadableKeyRef(ref: { secret: string; key: string }): boolean {
  return [ref.secret, ref.key].every((p) => KEY_PATH_PART.test(p) && !p.startsWith('.'));
}
