import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { grantDurationMs } from '../approvals/approval-messages.js';
import { decisionVerifyKey } from '../approvals/decision-signature.js';
import type { PolicyIssue } from '../errors.js';
import { type DatabaseAccessPolicySpec, databaseAccessPolicySpecSchema } from './access-policy-schema.js';
import { type MaskingRuleSpec, maskingRuleSpecSchema } from './masking-rule-schema.js';
import { objectMetaSchema } from './objects.js';
import { LABEL_KEY_PATTERN } from './schema-parts.js';

// One ajv instance; each schema compiled once, on first use: validation is pure and synchronous afterwards.
// Compiling all three at import cost ~150 ms of CPU in every process that imports this package, commands that
// never validate a policy (`pgwarden audit …`, `approvals …`) included.
// useDefaults fills `default`s in place, which is why the derived types treat defaulted fields as present.
let ajv: Ajv | undefined;
const SCHEMAS = {
  DatabaseAccessPolicy: databaseAccessPolicySpecSchema,
  MaskingRule: maskingRuleSpecSchema,
  metadata: objectMetaSchema,
};
type SchemaName = keyof typeof SCHEMAS;
const compiled: Partial<Record<SchemaName, ValidateFunction>> = {};
function validator(name: SchemaName): ValidateFunction {
  let fn = compiled[name];
  if (!fn) {
    ajv ??= new Ajv({ allErrors: true, useDefaults: true, strict: true, allowUnionTypes: false });
    fn = compiled[name] = ajv.compile(SCHEMAS[name]);
  }
  return fn;
}

function issuesFrom(fn: ValidateFunction, base: string): PolicyIssue[] {
  return (fn.errors ?? []).map((e) => toIssue(e, base));
}

function toIssue(e: ErrorObject, base: string): PolicyIssue {
  let path = base + e.instancePath;
  let message = e.message ?? 'is invalid';
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'additionalProperties':
      path += `/${String(p.additionalProperty)}`;
      message = 'unknown field';
      break;
    case 'required':
      path += `/${String(p.missingProperty)}`;
      message = 'is required';
      break;
    case 'enum':
      message = `must be one of: ${(p.allowedValues as unknown[]).map(String).join(', ')}`;
      break;
  }
  return { path, message, severity: 'error' };
}

/** Validates (and fills defaults into) a DatabaseAccessPolicy spec. `base` prefixes every issue path. */
export function validatePolicySpec(spec: unknown, base = '/spec'): PolicyIssue[] {
  const validate = validator('DatabaseAccessPolicy');
  if (!validate(spec)) {
    // ajv can report the same node twice under allErrors (e.g. type + enum); keep the first per path+message.
    return dedupe(issuesFrom(validate, base));
  }
  return semanticPolicyIssues(spec as DatabaseAccessPolicySpec, base);
}

export function validateMaskingRuleSpec(spec: unknown, base = '/spec'): PolicyIssue[] {
  const validate = validator('MaskingRule');
  if (!validate(spec)) return dedupe(issuesFrom(validate, base));
  const s = spec as MaskingRuleSpec;
  const issues: PolicyIssue[] = labelKeyIssues(s.policySelector?.matchLabels, `${base}/policySelector/matchLabels`);
  if ((s.policies === undefined) === (s.policySelector === undefined)) {
    issues.push({
      path: `${base}/policies`,
      message: 'exactly one of policies or policySelector is required',
      severity: 'error',
    });
  }
  s.columns.forEach((c, i) => {
    const st = c.strategy;
    const at = `${base}/columns/${i}/strategy`;
    if ((st.keepFirst !== undefined || st.keepLast !== undefined) && st.type !== 'partial') {
      issues.push({ path: `${at}/type`, message: 'keepFirst/keepLast apply only to type partial', severity: 'error' });
    }
    if (st.keySecretRef !== undefined && st.type !== 'hash') {
      issues.push({ path: `${at}/keySecretRef`, message: 'keySecretRef applies only to type hash', severity: 'error' });
    }
  });
  return issues;
}

export function validateMetadata(meta: unknown, base = '/metadata'): PolicyIssue[] {
  const validate = validator('metadata');
  return validate(meta) ? [] : dedupe(issuesFrom(validate, base));
}

function labelKeyIssues(labels: Record<string, string> | undefined, base: string): PolicyIssue[] {
  return Object.keys(labels ?? {})
    .filter((k) => !LABEL_KEY_PATTERN.test(k))
    .map((k) => ({
      path: `${base}/${k.replace(/~/g, '~0').replace(/\//g, '~1')}`,
      message: 'invalid label key',
      severity: 'error' as const,
    }));
}

function semanticPolicyIssues(spec: DatabaseAccessPolicySpec, base: string): PolicyIssue[] {
  const issues = labelKeyIssues(spec.podSelector.matchLabels, `${base}/podSelector/matchLabels`);
  const seen = new Map<string, number>();
  spec.rules.forEach((r, i) => {
    const prev = seen.get(r.name);
    if (prev !== undefined) {
      issues.push({
        path: `${base}/rules/${i}/name`,
        message: `duplicate rule name (also rules/${prev})`,
        severity: 'error',
      });
    } else seen.set(r.name, i);
    if (r.allowDangerous?.length && r.action === 'deny') {
      issues.push({
        path: `${base}/rules/${i}/allowDangerous`,
        message: 'has no effect on a deny rule',
        severity: 'error',
      });
    }
  });
  if (spec.authentication.mode === 'oidc' && spec.authentication.oidc === undefined) {
    issues.push({ path: `${base}/authentication/oidc`, message: 'is required when mode is oidc', severity: 'error' });
  }
  // A key that does not parse would make every decision unverifiable: refused here rather than found at 3 a.m.
  spec.approval.decisionKeys.forEach((pem, i) => {
    try {
      decisionVerifyKey(pem);
    } catch (err) {
      issues.push({
        path: `${base}/approval/decisionKeys/${i}`,
        message: `is not an Ed25519 public key in PEM: ${(err as Error).message.split('\n')[0]}`,
        severity: 'error',
      });
    }
  });
  const grantMax = spec.approval.grants?.maxDuration;
  if (grantMax !== undefined && grantDurationMs(grantMax) === undefined) {
    issues.push({
      path: `${base}/approval/grants/maxDuration`,
      message: 'must be a duration from 1s to 24h',
      severity: 'error',
    });
  }
  return issues;
}

function dedupe(issues: PolicyIssue[]): PolicyIssue[] {
  const seen = new Set<string>();
  return issues.filter((i) => {
    const k = `${i.path}\0${i.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}
