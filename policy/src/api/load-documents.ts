import { parseAllDocuments } from 'yaml';
import type { PolicyIssue } from '../errors.js';
import { API_VERSION, type DatabaseAccessPolicy, type MaskingRule, objectRef } from './objects.js';
import { validateMaskingRuleSpec, validateMetadata, validatePolicySpec } from './validate.js';

export interface PolicyDocuments {
  policies: DatabaseAccessPolicy[];
  maskingRules: MaskingRule[];
  /** Every problem found; documents with errors are left out of policies/maskingRules. */
  errors: PolicyIssue[];
}

/** Cap on input size: policies are small; a huge file is a mistake or an attack on the loader. */
export const MAX_POLICY_TEXT_BYTES = 4 * 1024 * 1024;

/**
 * Reads multi-document YAML (or JSON) holding pgwarden.dev/v1alpha1 DatabaseAccessPolicy and MaskingRule
 * objects, exactly what one would `kubectl apply`. A `kind: List` wrapper is unwrapped. Never throws on bad input.
 */
export function parsePolicyDocuments(text: string): PolicyDocuments {
  const out: PolicyDocuments = { policies: [], maskingRules: [], errors: [] };
  if (Buffer.byteLength(text, 'utf8') > MAX_POLICY_TEXT_BYTES) {
    out.errors.push({ path: '', message: `input larger than ${MAX_POLICY_TEXT_BYTES} bytes`, severity: 'error' });
    return out;
  }
  const docs = parseAllDocuments(text, { prettyErrors: false, uniqueKeys: true });
  if (!Array.isArray(docs)) {
    out.errors.push({ path: '', message: 'not a YAML stream', severity: 'error' });
    return out;
  }
  docs.forEach((doc, index) => {
    if (doc.errors.length > 0) {
      for (const e of doc.errors) {
        const pos = e.linePos?.[0];
        const at = pos ? ` (line ${pos.line}, column ${pos.col})` : '';
        out.errors.push({
          path: '',
          message: `YAML: ${e.message.split('\n')[0]}${at}`,
          document: index,
          severity: 'error',
        });
      }
      return;
    }
    const value: unknown = doc.toJS({ maxAliasCount: 100 });
    if (value === null || value === undefined) return; // empty document, e.g. a trailing `---`
    const items = isList(value) ? value.items : [value];
    items.forEach((item, i) => {
      const base = isList(value) ? `/items/${i}` : '';
      addObject(item, index, base, out);
    });
  });
  return out;
}

function isList(v: unknown): v is { items: unknown[] } {
  return (
    typeof v === 'object' &&
    v !== null &&
    (v as { kind?: unknown }).kind === 'List' &&
    Array.isArray((v as { items?: unknown }).items)
  );
}

function addObject(value: unknown, document: number, base: string, out: PolicyDocuments): void {
  const fail = (path: string, message: string, object?: string): void => {
    out.errors.push({ path: base + path, message, document, object, severity: 'error' });
  };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    fail('', 'must be an object');
    return;
  }
  const o = value as Record<string, unknown>;
  if (o.apiVersion !== API_VERSION) {
    fail('/apiVersion', `must be ${API_VERSION}`);
    return;
  }
  if (o.kind !== 'DatabaseAccessPolicy' && o.kind !== 'MaskingRule') {
    fail('/kind', 'must be one of: DatabaseAccessPolicy, MaskingRule');
    return;
  }
  const metaIssues = validateMetadata(o.metadata, `${base}/metadata`);
  const name = (o.metadata as { name?: unknown } | undefined)?.name;
  const ref =
    typeof name === 'string' ? objectRef({ kind: o.kind, metadata: o.metadata as { name: string } }) : undefined;
  const specIssues =
    o.kind === 'DatabaseAccessPolicy'
      ? validatePolicySpec(o.spec ?? null, `${base}/spec`)
      : validateMaskingRuleSpec(o.spec ?? null, `${base}/spec`);
  const issues = [...metaIssues, ...specIssues].map((i) => ({ ...i, document, object: ref }));
  if (issues.some((i) => i.severity === 'error')) {
    out.errors.push(...issues);
    return;
  }
  const object = { apiVersion: API_VERSION, kind: o.kind, metadata: o.metadata, spec: o.spec };
  if (o.kind === 'DatabaseAccessPolicy') out.policies.push(object as DatabaseAccessPolicy);
  else out.maskingRules.push(object as MaskingRule);
}
