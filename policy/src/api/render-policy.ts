import { createHash } from 'node:crypto';
import { PolicyError, type PolicyIssue } from '../errors.js';
import type { DatabaseAccessPolicySpec } from './access-policy-schema.js';
import { canonicalJson } from './canonical-json.js';
import { matchesLabelSelector } from './label-selector.js';
import type { PolicyDocuments } from './load-documents.js';
import type { MaskingRuleSpec } from './masking-rule-schema.js';
import { API_VERSION, type DatabaseAccessPolicy, type MaskingRule } from './objects.js';
import { validateMaskingRuleSpec, validatePolicySpec } from './validate.js';

/**
 * What the operator writes into the sidecar's ConfigMap (key `policy.json`) and what the sidecar loads: one policy
 * with defaults filled in, plus the masking rules that select it, and a hash over the canonical JSON of both.
 */
export interface RenderedPolicy {
  apiVersion: typeof API_VERSION;
  kind: 'RenderedPolicy';
  policy: { name: string; namespace?: string; generation?: number; spec: DatabaseAccessPolicySpec };
  maskingRules: { name: string; namespace?: string; spec: MaskingRuleSpec }[];
  /** `sha256:` + hex of SHA-256 over canonicalJson of this object without `hash`. */
  hash: string;
}

/** Does this MaskingRule select this policy? Same namespace, and listed by name or matched by labels. */
export function maskingRuleSelects(rule: MaskingRule, policy: DatabaseAccessPolicy): boolean {
  if ((rule.metadata.namespace ?? '') !== (policy.metadata.namespace ?? '')) return false;
  if (rule.spec.policies) return rule.spec.policies.includes(policy.metadata.name);
  if (rule.spec.policySelector) return matchesLabelSelector(rule.spec.policySelector, policy.metadata.labels);
  return false;
}

/** Pure and deterministic: the same inputs (in any order) give byte-identical JSON and the same hash. */
export function renderPolicy(policy: DatabaseAccessPolicy, maskingRules: readonly MaskingRule[]): RenderedPolicy {
  const spec = structuredClone(policy.spec);
  throwOnIssues(validatePolicySpec(spec), 'policy spec is invalid');
  const rules = maskingRules
    .filter((r) => maskingRuleSelects(r, policy))
    .map((r) => {
      const s = structuredClone(r.spec);
      throwOnIssues(validateMaskingRuleSpec(s), `MaskingRule ${r.metadata.name} is invalid`);
      return { name: r.metadata.name, namespace: r.metadata.namespace, spec: s };
    })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const body = {
    apiVersion: API_VERSION,
    kind: 'RenderedPolicy' as const,
    policy: {
      name: policy.metadata.name,
      namespace: policy.metadata.namespace,
      generation: policy.metadata.generation,
      spec,
    },
    maskingRules: rules,
  };
  return { ...body, hash: hashOf(body) };
}

/** Renders every policy of a parsed YAML stream with the masking rules that select it. */
export function renderPolicyDocuments(docs: Pick<PolicyDocuments, 'policies' | 'maskingRules'>): RenderedPolicy[] {
  return docs.policies.map((p) => renderPolicy(p, docs.maskingRules));
}

/** The canonical text to write to a ConfigMap. */
export function serializeRenderedPolicy(rendered: RenderedPolicy): string {
  return canonicalJson(rendered);
}

/** Parses and fully re-validates a rendered policy; throws PolicyError (with issues) on any problem. */
export function parseRenderedPolicy(json: string): RenderedPolicy {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch (cause) {
    throw new PolicyError('PGW_POLICY_SYNTAX', 'rendered policy is not valid JSON', { cause });
  }
  const issues: PolicyIssue[] = [];
  const v = value as Partial<RenderedPolicy> | null;
  if (typeof v !== 'object' || v === null || v.apiVersion !== API_VERSION || v.kind !== 'RenderedPolicy') {
    throw new PolicyError('PGW_POLICY_INVALID', `not a ${API_VERSION} RenderedPolicy`, {
      issues: [{ path: '/kind', message: 'must be RenderedPolicy', severity: 'error' }],
    });
  }
  // The hash covers the content as written; validation below fills defaults in place, so hash first.
  const { hash, ...body } = v as RenderedPolicy;
  const actualHash = hashOf(body);
  if (typeof v.policy?.name !== 'string' || v.policy.name === '') {
    issues.push({ path: '/policy/name', message: 'is required', severity: 'error' });
  }
  issues.push(...validatePolicySpec(v.policy?.spec ?? null, '/policy/spec'));
  if (!Array.isArray(v.maskingRules)) {
    issues.push({ path: '/maskingRules', message: 'must be array', severity: 'error' });
  } else {
    v.maskingRules.forEach((r, i) => {
      issues.push(...validateMaskingRuleSpec(r?.spec ?? null, `/maskingRules/${i}/spec`));
    });
  }
  throwOnIssues(issues, 'rendered policy is invalid');
  if (hash !== actualHash) {
    throw new PolicyError('PGW_RENDERED_HASH_MISMATCH', 'rendered policy hash does not match its content', {
      issues: [{ path: '/hash', message: 'does not match content', severity: 'error' }],
    });
  }
  return v as RenderedPolicy;
}

function hashOf(body: Omit<RenderedPolicy, 'hash'>): string {
  return `sha256:${createHash('sha256').update(canonicalJson(body)).digest('hex')}`;
}

function throwOnIssues(issues: PolicyIssue[], message: string): void {
  const errors = issues.filter((i) => i.severity === 'error');
  if (errors.length > 0)
    throw new PolicyError('PGW_POLICY_INVALID', `${message}: ${errors[0].path}: ${errors[0].message}`, {
      issues: errors,
    });
}
