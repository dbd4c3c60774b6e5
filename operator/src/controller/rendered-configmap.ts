import { type RenderedPolicy, serializeRenderedPolicy } from '@pgwarden/policy';
import { ANNOTATIONS } from '../webhook/sidecar-config.js';
import { configMapName } from '../webhook/sidecar-container.js';

/** The key the sidecar reads inside the mounted ConfigMap directory. */
export const RENDERED_KEY = 'policy.json';

/**
 * The API server refuses a ConfigMap whose data (key lengths plus value bytes) exceeds this (core.MaxSecretSize,
 * https://kubernetes.io/docs/concepts/configuration/configmap/#motivation).
 */
export const MAX_CONFIGMAP_BYTES = 1024 * 1024;

/** What the API server counts against MAX_CONFIGMAP_BYTES. */
export function renderedConfigMapBytes(cm: { data?: Record<string, string> }): number {
  let n = 0;
  for (const [k, v] of Object.entries(cm.data ?? {})) n += k.length + Buffer.byteLength(v);
  return n;
}

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
