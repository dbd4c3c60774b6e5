import { type DatabaseAccessPolicy, type MaskingRule, renderPolicy } from '@pgwarden/policy';
import { stringify } from 'yaml';
import {
  buildRenderedConfigMap,
  MAX_CONFIGMAP_BYTES,
  renderedConfigMapBytes,
} from '../controller/rendered-configmap.js';
import { PolicyFilesError } from '../errors.js';

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
  return docs.policies.map(withNs).map((p) => {
    const cm = buildRenderedConfigMap(
      { name: p.metadata.name, namespace: p.metadata.namespace! },
      renderPolicy(p, rules),
    );
    // The API server would refuse it (and the operator reports RenderedPolicyTooLarge): say so before anyone applies it.
    const size = renderedConfigMapBytes(cm);
    if (size > MAX_CONFIGMAP_BYTES)
      throw new PolicyFilesError(
        `${p.metadata.namespace}/${p.metadata.name}: the rendered policy is ${size} bytes, over the ${MAX_CONFIGMAP_BYTES} bytes (1 MiB) a ConfigMap holds`,
      );
    return cm;
  });
}

export function renderConfigMapsYaml(cms: Record<string, any>[]): string {
  return cms.map((c) => stringify(c, { lineWidth: 0 })).join('---\n');
}
