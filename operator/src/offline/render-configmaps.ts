import { type DatabaseAccessPolicy, type MaskingRule, renderPolicy } from '@pgwarden/policy';
import { stringify } from 'yaml';
import { buildRenderedConfigMap } from '../controller/rendered-configmap.js';

/** `pgwarden render`: the ConfigMaps the controller would apply for these policies (same builder, same bytes). */
export function renderConfigMaps(
  docs: { policies: DatabaseAccessPolicy[]; maskingRules: MaskingRule[] },
  defaultNamespace = 'default',
): Record<string, any>[] {
  const withNs = <T extends { metadata: { namespace?: string } }>(o: T): T => ({
    ...o,
    metadata: { ...o.metadata, namespace: o.metadata.namespace ?? defaultNamespace },
  });
  const rules = docs.maskingRules.map(withNs);
  return docs.policies
    .map(withNs)
    .map((p) =>
      buildRenderedConfigMap({ name: p.metadata.name, namespace: p.metadata.namespace! }, renderPolicy(p, rules)),
    );
}

export function renderConfigMapsYaml(cms: Record<string, any>[]): string {
  return cms.map((c) => stringify(c, { lineWidth: 0 })).join('---\n');
}
