import type { DatabaseAccessPolicySpec } from './access-policy-schema.js';
import type { MaskingRuleSpec } from './masking-rule-schema.js';

export const API_VERSION = 'pgwarden.dev/v1alpha1' as const;

/** The subset of ObjectMeta pgwarden reads. https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/object-meta/ */
export const objectMetaSchema = {
  type: 'object',
  required: ['name'],
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 253, pattern: '^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$' },
    namespace: { type: 'string', minLength: 1, maxLength: 63, pattern: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' },
    labels: { type: 'object', maxProperties: 64, additionalProperties: { type: 'string', maxLength: 63 } },
    generation: { type: 'integer', minimum: 0 },
  },
} as const;

export interface ObjectMeta {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  generation?: number;
  [key: string]: unknown;
}

export interface DatabaseAccessPolicy {
  apiVersion: typeof API_VERSION;
  kind: 'DatabaseAccessPolicy';
  metadata: ObjectMeta;
  spec: DatabaseAccessPolicySpec;
}

export interface MaskingRule {
  apiVersion: typeof API_VERSION;
  kind: 'MaskingRule';
  metadata: ObjectMeta;
  spec: MaskingRuleSpec;
}

export function objectRef(o: { kind: string; metadata: { name: string; namespace?: string } }): string {
  return `${o.kind}/${o.metadata.namespace ? `${o.metadata.namespace}/` : ''}${o.metadata.name}`;
}
