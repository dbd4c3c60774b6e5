import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { validatePolicySpec } from '@pgwarden/policy';
import { Ajv } from 'ajv';
import { CustomResourceDefinition } from 'kubernetes-models/apiextensions.k8s.io/v1';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { shippedPolicyDocuments } from '../testing/shipped-policy-documents.js';
import { crdFiles, databaseAccessPolicyCrd, LABEL_KEY_RE, maskingRuleCrd } from './custom-resource-definitions.js';
import { CrdSchemaError, toStructural } from './openapi-schema.js';

const repo = (p: string) => fileURLToPath(new URL(`../../../${p}`, import.meta.url));

/** Walks a structural schema and reports nodes without a type, and strings/lists/maps without bounds. */
function unbounded(schema: any, path = ''): string[] {
  const out: string[] = [];
  if (!schema.type) out.push(`${path}: no type`);
  if (schema.type === 'string' && schema.maxLength === undefined && !schema.enum && schema.format !== 'date-time')
    out.push(`${path}: unbounded string`);
  if (schema.type === 'array' && schema.maxItems === undefined) out.push(`${path}: unbounded list`);
  if (schema.type === 'object' && schema.additionalProperties && schema.maxProperties === undefined)
    out.push(`${path}: unbounded map`);
  for (const [k, v] of Object.entries<any>(schema.properties ?? {})) {
    if (path === '' && ['apiVersion', 'kind', 'metadata'].includes(k)) continue; // served by the API server itself
    out.push(...unbounded(v, `${path}.${k}`));
  }
  if (schema.items) out.push(...unbounded(schema.items, `${path}[]`));
  if (typeof schema.additionalProperties === 'object') out.push(...unbounded(schema.additionalProperties, `${path}{}`));
  return out;
}

describe('CRDs generated from the policy JSON Schemas', () => {
  it('the checked-in crds/ and charts/pgwarden/crds/ equal the generated output (run `pgwarden operator crds`)', () => {
    for (const [name, text] of Object.entries(crdFiles())) {
      expect(readFileSync(repo(`crds/${name}`), 'utf8'), `crds/${name}`).toBe(text);
      expect(readFileSync(repo(`charts/pgwarden/crds/${name}`), 'utf8'), `charts/pgwarden/crds/${name}`).toBe(text);
    }
  });

  it('are valid apiextensions.k8s.io/v1 objects with short names, category, status and printer columns', () => {
    const dap = databaseAccessPolicyCrd();
    const mr = maskingRuleCrd();
    for (const c of [dap, mr]) expect(() => new CustomResourceDefinition(c as any).validate()).not.toThrow();
    expect(dap.spec.names).toMatchObject({ shortNames: ['dap'], categories: ['pgwarden'] });
    expect(mr.spec.names).toMatchObject({ shortNames: ['mr'], categories: ['pgwarden'] });
    const v = dap.spec.versions[0];
    expect(v.subresources).toEqual({ status: {} });
    expect(v.additionalPrinterColumns.map((c: any) => c.name)).toEqual([
      'Ready',
      'Workloads',
      'Suspended',
      'Database',
      'Host',
      'Age',
    ]);
    const spec = v.schema.openAPIV3Schema.properties.spec;
    expect(spec.properties.rules).toMatchObject({
      'x-kubernetes-list-type': 'map',
      'x-kubernetes-list-map-keys': ['name'],
    });
    expect(spec.properties.authentication['x-kubernetes-validations'][0].message).toMatch(/oidc/);
    expect(spec.properties.database.properties.port.default).toBe(5432);
  });

  it('bounds every string, list and map (CEL cost estimation needs them)', () => {
    for (const c of [databaseAccessPolicyCrd(), maskingRuleCrd()]) {
      expect(unbounded(c.spec.versions[0].schema.openAPIV3Schema)).toEqual([]);
    }
  });

  it('accepts the documents the policy package accepts (schema checked with ajv, Kubernetes keywords ignored)', () => {
    const ajv = new Ajv({ strict: false, allErrors: true });
    ajv
      .addKeyword('x-kubernetes-validations')
      .addKeyword('x-kubernetes-list-type')
      .addKeyword('x-kubernetes-list-map-keys');
    const validate = ajv.compile(databaseAccessPolicyCrd().spec.versions[0].schema.openAPIV3Schema);
    const doc = parse(`
apiVersion: pgwarden.dev/v1alpha1
kind: DatabaseAccessPolicy
metadata: {name: analytics-agent}
spec:
  podSelector: {matchLabels: {app: analytics-agent}}
  database: {host: orders-db.data.svc, port: 5432, name: orders, sslMode: verify-full, caSecretRef: {name: ca, key: ca.crt}, credentialsSecretRef: {name: creds}}
  role: analytics_ro
  rules:
    - {name: read-orders, action: allow, statements: [select], tables: [public.orders]}
  guardrails: {blockDDL: true, requireWhere: [update, delete], maxRowsReturned: 10000, statementTimeout: 30s}
  audit: {captureResults: summary, failMode: closed}
`);
    expect(validatePolicySpec(structuredClone(doc.spec))).toEqual([]);
    expect(validate(doc), JSON.stringify(validate.errors)).toBe(true);
    expect(validate({ ...doc, spec: { ...doc.spec, database: { host: 'x' } } })).toBe(false);
  });

  it('accepts every policy document shipped in examples/ and e2e/manifests/', () => {
    const ajv = new Ajv({ strict: false, allErrors: true });
    ajv
      .addKeyword('x-kubernetes-validations')
      .addKeyword('x-kubernetes-list-type')
      .addKeyword('x-kubernetes-list-map-keys');
    const validators: Record<string, any> = {
      DatabaseAccessPolicy: ajv.compile(databaseAccessPolicyCrd().spec.versions[0].schema.openAPIV3Schema),
      MaskingRule: ajv.compile(maskingRuleCrd().spec.versions[0].schema.openAPIV3Schema),
    };
    const docs = shippedPolicyDocuments();
    for (const { file, object: o } of docs) {
      const validate = validators[o.kind];
      expect(validate(o), `${file} ${o.kind}/${o.metadata?.name}: ${JSON.stringify(validate.errors)}`).toBe(true);
    }
    expect(docs.length).toBeGreaterThanOrEqual(3);
  });

  it('the CEL label-key rule agrees with the policy package on label keys', () => {
    const re = new RegExp(LABEL_KEY_RE);
    for (const key of [
      'app',
      'app.kubernetes.io/name',
      'a_b.c-d',
      'Bad/Key',
      '-x',
      'x-',
      'example.com/',
      `${'a'.repeat(64)}`,
    ]) {
      const spec = { database: { host: 'h', name: 'd' }, podSelector: { matchLabels: { [key]: 'v' } } };
      const policyAccepts = validatePolicySpec(spec).length === 0;
      expect(re.test(key), key).toBe(policyAccepts);
    }
  });

  it('fails loudly on JSON Schema keywords it cannot translate', () => {
    expect(() => toStructural({ type: 'object', patternProperties: { x: {} } })).toThrow(CrdSchemaError);
  });
});
