/**
 * The pgwarden.dev/v1alpha1 CustomResourceDefinitions, generated from the policy package's JSON Schemas (the one
 * source of truth) plus the Kubernetes-only parts: status, printer columns, CEL rules, list semantics.
 * `pgwarden operator crds` writes them to crds/ and charts/pgwarden/crds/; a test fails when those drift.
 */
import { databaseAccessPolicySpecSchema, maskingRuleSpecSchema } from '@pgwarden/policy';
import { stringify } from 'yaml';
import { type Schema, toStructural } from './openapi-schema.js';

const GROUP = 'pgwarden.dev';
const VERSION = 'v1alpha1';

/** metav1.Condition (https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/condition/ shape). */
const condition: Schema = {
  type: 'object',
  required: ['type', 'status', 'lastTransitionTime', 'reason', 'message'],
  properties: {
    type: {
      type: 'string',
      maxLength: 316,
      pattern:
        '^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$',
    },
    status: { type: 'string', enum: ['True', 'False', 'Unknown'] },
    observedGeneration: { type: 'integer', format: 'int64', minimum: 0 },
    lastTransitionTime: { type: 'string', format: 'date-time' },
    reason: { type: 'string', minLength: 1, maxLength: 1024, pattern: '^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$' },
    message: { type: 'string', maxLength: 32768 },
  },
};

const policyStatus: Schema = {
  type: 'object',
  description: 'Written by the operator only.',
  properties: {
    observedGeneration: { type: 'integer', format: 'int64', minimum: 0 },
    conditions: {
      type: 'array',
      maxItems: 8,
      items: condition,
      'x-kubernetes-list-type': 'map',
      'x-kubernetes-list-map-keys': ['type'],
    },
    matchedWorkloads: {
      type: 'integer',
      minimum: 0,
      description: 'Distinct workloads (Deployment, StatefulSet, Job, bare Pod...) whose pods this policy selects.',
    },
    renderedHash: { type: 'string', maxLength: 71, description: 'sha256 of the rendered policy the sidecars load.' },
    configMap: { type: 'string', maxLength: 253, description: 'The ConfigMap holding the rendered policy.' },
  },
};

const maskingRuleStatus: Schema = {
  type: 'object',
  description: 'Written by the operator only.',
  properties: {
    observedGeneration: { type: 'integer', format: 'int64', minimum: 0 },
    conditions: {
      type: 'array',
      maxItems: 8,
      items: condition,
      'x-kubernetes-list-type': 'map',
      'x-kubernetes-list-map-keys': ['type'],
    },
    policies: {
      type: 'array',
      maxItems: 1024,
      items: { type: 'string', maxLength: 253 },
      description: 'The DatabaseAccessPolicies this rule currently applies to.',
    },
  },
};

function crd(opts: {
  kind: string;
  plural: string;
  singular: string;
  shortNames: string[];
  spec: Schema;
  status?: Schema;
  rootRules?: { rule: string; message: string }[];
  columns: Schema[];
  description: string;
}): Schema {
  const schema: Schema = {
    type: 'object',
    description: opts.description,
    required: ['spec'],
    properties: {
      apiVersion: { type: 'string' },
      kind: { type: 'string' },
      metadata: { type: 'object' },
      spec: opts.spec,
      ...(opts.status ? { status: opts.status } : {}),
    },
    ...(opts.rootRules ? { 'x-kubernetes-validations': opts.rootRules } : {}),
  };
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: {
      name: `${opts.plural}.${GROUP}`,
      labels: { 'app.kubernetes.io/name': 'pgwarden', 'app.kubernetes.io/part-of': 'pgwarden' },
    },
    spec: {
      group: GROUP,
      scope: 'Namespaced',
      names: {
        kind: opts.kind,
        listKind: `${opts.kind}List`,
        plural: opts.plural,
        singular: opts.singular,
        shortNames: opts.shortNames,
        categories: ['pgwarden'],
      },
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          ...(opts.status ? { subresources: { status: {} } } : {}),
          additionalPrinterColumns: opts.columns,
          schema: { openAPIV3Schema: schema },
        },
      ],
    },
  };
}

/**
 * Label keys (prefix/name): CRD schemas have no `propertyNames`, so the policy package checks keys in code
 * (LABEL_KEY_PATTERN in policy/src/api/schema-parts.ts) and the CRD checks them with CEL. Kept equal by a test.
 */
export const LABEL_KEY_RE = '^([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$';
const labelKeysRule = {
  rule: `self.all(k, size(k) <= 317 && k.matches('${LABEL_KEY_RE}'))`,
  message: 'label keys must be an optional DNS-subdomain prefix and a name of at most 63 characters',
};

const NAME_RULE = {
  rule: 'size(self.metadata.name) <= 244',
  message: 'metadata.name must be at most 244 characters: the rendered ConfigMap is named pgwarden-<name>',
};

export function databaseAccessPolicyCrd(): Schema {
  const spec = toStructural(databaseAccessPolicySpecSchema as Schema, {
    listMapKeys: { '/rules': ['name'] },
    rules: {
      '/podSelector/matchLabels': [labelKeysRule],
      '/authentication': [
        { rule: "self.mode != 'oidc' || has(self.oidc)", message: 'authentication.oidc is required when mode is oidc' },
      ],
      '/rules/*': [
        {
          rule: "!(self.action == 'deny' && has(self.allowDangerous) && size(self.allowDangerous) > 0)",
          message: 'allowDangerous has no effect on a deny rule',
        },
      ],
    },
  });
  return crd({
    kind: 'DatabaseAccessPolicy',
    plural: 'databaseaccesspolicies',
    singular: 'databaseaccesspolicy',
    shortNames: ['dap'],
    description:
      'Which pods get a pgwarden sidecar, the database it fronts, and the statements, guardrails and audit it enforces.',
    spec,
    status: policyStatus,
    rootRules: [NAME_RULE],
    columns: [
      { name: 'Ready', type: 'string', jsonPath: '.status.conditions[?(@.type=="Ready")].status' },
      { name: 'Workloads', type: 'integer', jsonPath: '.status.matchedWorkloads' },
      { name: 'Suspended', type: 'boolean', jsonPath: '.spec.suspend' },
      { name: 'Database', type: 'string', jsonPath: '.spec.database.name' },
      { name: 'Host', type: 'string', jsonPath: '.spec.database.host', priority: 1 },
      { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
    ],
  });
}

export function maskingRuleCrd(): Schema {
  const spec = toStructural(maskingRuleSpecSchema as Schema, {
    rules: {
      '': [
        {
          rule: 'has(self.policies) != has(self.policySelector)',
          message: 'exactly one of policies or policySelector is required',
        },
      ],
      '/policySelector/matchLabels': [labelKeysRule],
      '/columns/*/strategy': [
        {
          rule: "!(has(self.keepFirst) || has(self.keepLast)) || self.type == 'partial'",
          message: 'keepFirst/keepLast apply only to type partial',
        },
        { rule: "!has(self.keySecretRef) || self.type == 'hash'", message: 'keySecretRef applies only to type hash' },
      ],
    },
  });
  return crd({
    kind: 'MaskingRule',
    plural: 'maskingrules',
    singular: 'maskingrule',
    shortNames: ['mr'],
    description:
      'Column masking and content detectors applied to the results of the DatabaseAccessPolicies it selects.',
    spec,
    status: maskingRuleStatus,
    columns: [
      { name: 'Ready', type: 'string', jsonPath: '.status.conditions[?(@.type=="Ready")].status' },
      { name: 'Policies', type: 'string', jsonPath: '.status.policies' },
      { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
    ],
  });
}

const HEADER =
  '# Generated by `pgwarden operator crds` from the JSON Schemas in policy/src/api. Do not edit by hand.\n';

/** File name → YAML text, deterministic. */
export function crdFiles(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const c of [databaseAccessPolicyCrd(), maskingRuleCrd()]) {
    out[`${c.metadata.name.split('.')[0]}.yaml`] =
      HEADER + stringify(c, { lineWidth: 0, aliasDuplicateObjects: false });
  }
  return out;
}
