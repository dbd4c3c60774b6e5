import { type RenderedPolicy, serializeRenderedPolicy } from '@pgwarden/policy';
import { ANNOTATIONS } from '../webhook/sidecar-config.js';
import { configMapName } from '../webhook/sidecar-container.js';

/** The key the sidecar reads inside the mounted ConfigMap directory. */
export const RENDERED_KEY = 'policy.json';

/**
 * The ConfigMap the controller applies (and `pgwarden render` prints) for one rendered policy: deterministic bytes
 * (canonical JSON) and the content hash as an annotation. Owned by the policy when its uid is known, so deleting
 * the policy garbage-collects it.
 */
export function buildRenderedConfigMap(
  policy: { name: string; namespace: string; uid?: string },
  rendered: RenderedPolicy,
): Record<string, any> {
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: {
      name: configMapName(policy.name),
      namespace: policy.namespace,
      labels: { 'app.kubernetes.io/managed-by': 'pgwarden', 'pgwarden.dev/policy': policy.name },
      annotations: { [ANNOTATIONS.contentHash]: rendered.hash },
      ...(policy.uid
        ? {
            ownerReferences: [
              {
                apiVersion: 'pgwarden.dev/v1alpha1',
                kind: 'DatabaseAccessPolicy',
                name: policy.name,
                uid: policy.uid,
                controller: true,
                blockOwnerDeletion: true,
              },
            ],
          }
        : {}),
    },
    data: { [RENDERED_KEY]: serializeRenderedPolicy(rendered) },
  };
}
