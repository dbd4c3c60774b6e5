import {
  DETECTORS,
  k8sName,
  labelSelector,
  MASKING_STRATEGIES,
  objectGlob,
  secretKeyRef,
  subjects,
} from './schema-parts.js';
import type { FromSchema } from './schema-types.js';

const strategy = {
  type: 'object',
  additionalProperties: false,
  required: ['type'],
  properties: {
    type: { type: 'string', enum: MASKING_STRATEGIES },
    keepFirst: { type: 'integer', minimum: 0, maximum: 64, description: 'partial: characters kept at the start' },
    keepLast: { type: 'integer', minimum: 0, maximum: 64, description: 'partial: characters kept at the end' },
    keySecretRef: { ...secretKeyRef, description: 'hash: HMAC key, so hashes cannot be reversed by dictionary' },
  },
} as const;

export const maskingRuleSpecSchema = {
  type: 'object',
  additionalProperties: false,
  description: 'Exactly one of policies or policySelector selects the DatabaseAccessPolicies this rule applies to.',
  properties: {
    policies: { type: 'array', maxItems: 64, items: k8sName },
    policySelector: labelSelector,
    columns: {
      type: 'array',
      maxItems: 512,
      default: [],
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['table', 'column', 'strategy'],
        properties: {
          table: { ...objectGlob, description: 'Glob over schema.table' },
          column: { type: 'string', minLength: 1, maxLength: 63 },
          strategy,
        },
      },
    },
    detectors: { type: 'array', maxItems: DETECTORS.length, items: { type: 'string', enum: DETECTORS }, default: [] },
    unmaskedFor: {
      ...subjects,
      description:
        'Sessions that see clear values: ANY listed group, service account or user, matched exactly (case-sensitive globs).',
    },
  },
} as const;

export type MaskingRuleSpec = FromSchema<typeof maskingRuleSpecSchema>;
export type MaskingColumn = MaskingRuleSpec['columns'][number];
export type MaskingStrategy = MaskingColumn['strategy'];
export type MaskingStrategyType = (typeof MASKING_STRATEGIES)[number];
export type Detector = (typeof DETECTORS)[number];
