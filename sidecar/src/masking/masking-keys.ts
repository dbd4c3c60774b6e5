import { type KeyResolver, type MaskingKeyRef, maskingKeyRefs, type RenderedPolicy } from '@pgwarden/policy';
import { Gauge, type Registry } from 'prom-client';
import { registerOnce } from '../governance/governance-metrics.js';

export interface UnreadableMaskingKey extends MaskingKeyRef {
  /** Why it could not be read; never the key's bytes. */
  reason: string;
}

/**
 * keySecretRefs of the policy's MaskingRules that `resolveKey` cannot read. compileMasking silently falls back to
 * the per-process key for them (masking still happens), so pseudonyms would stop being stable across pods and
 * restarts without anyone knowing: the sidecar reports these at every policy load.
 */
export function unreadableMaskingKeys(
  policy: Pick<RenderedPolicy, 'maskingRules'>,
  resolveKey: KeyResolver | undefined,
): UnreadableMaskingKey[] {
  return maskingKeyRefs(policy.maskingRules).flatMap((ref) => {
    if (!resolveKey) return [{ ...ref, reason: 'PGWARDEN_MASKING_KEYS_DIR is not set' }];
    if (resolveKey({ name: ref.secret, key: ref.key })) return [];
    return [{ ...ref, reason: 'no such file (or empty, or not a plain name) under PGWARDEN_MASKING_KEYS_DIR' }];
  });
}

export class MaskingKeyMetrics {
  private readonly unreadable = new Gauge({
    name: 'pgwarden_masking_keys_unreadable',
    help: 'keySecretRefs of the loaded policy whose key this sidecar cannot read (hashed with a per-process key instead)',
    labelNames: ['policy'],
    registers: [],
  });

  set(policy: string, n: number): void {
    this.unreadable.set({ policy }, n);
  }

  register(registry: Registry): void {
    registerOnce(registry, [['pgwarden_masking_keys_unreadable', this.unreadable]]);
  }
}
