import { CustomObjectsApi, KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { validateMaskingRuleSpec, validatePolicySpec } from '@pgwarden/policy';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { databaseAccessPolicyCrd, maskingRuleCrd } from '../../crd/custom-resource-definitions.js';
import { FakeApiServer } from '../fake-apiserver.js';
import { shippedPolicyDocuments } from '../shipped-policy-documents.js';
import { CrdSchema } from './crd-validation.js';

// The shipped CRDs' schemas, enforced by the fake API server the way a real one enforces them: every write below
// goes over HTTP through @kubernetes/client-node, and every CEL rule is evaluated by a real CEL implementation.

const V = { group: 'pgwarden.dev', version: 'v1alpha1', namespace: 'agents' };
const DAP = { ...V, plural: 'databaseaccesspolicies' };
const MR = { ...V, plural: 'maskingrules' };

let api: FakeApiServer;
let custom: CustomObjectsApi;
/** Every CEL rule message a refusal in this file carried: each shipped rule must be seen failing at least once. */
const ruleMessagesSeen = new Set<string>();

beforeAll(async () => {
  api = new FakeApiServer();
  await api.start();
  const kc = new KubeConfig();
  kc.loadFromOptions(api.kubeconfig());
  custom = kc.makeApiClient(CustomObjectsApi);
  api.seed({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'agents' } });
});
afterAll(() => api.stop());

const dap = (name: string, spec: object) => ({
  apiVersion: 'pgwarden.dev/v1alpha1',
  kind: 'DatabaseAccessPolicy',
  metadata: { name },
  spec: { database: { host: 'db.data.svc', name: 'orders' }, ...spec },
});
const mr = (name: string, spec: object) => ({
  apiVersion: 'pgwarden.dev/v1alpha1',
  kind: 'MaskingRule',
  metadata: { name },
  spec: { columns: [{ table: 'public.customers', column: 'email', strategy: { type: 'email' } }], ...spec },
});

interface Cause {
  reason: string;
  message: string;
  field: string;
}

/** The 422 Status a refused write answers with (fails the test if the write was accepted). */
async function refused(write: Promise<unknown>): Promise<{ message: string; causes: Cause[] }> {
  let status: any;
  try {
    await write;
  } catch (err) {
    const e = err as { code?: number; body?: string };
    expect(e.code, String(err)).toBe(422);
    status = JSON.parse(e.body ?? '{}');
  }
  expect(status, 'the write was accepted').toBeDefined();
  expect(status).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'Invalid', code: 422 });
  for (const c of status.details.causes as Cause[]) {
    const m = /^Invalid value: "\w+": (.*)$/.exec(c.message);
    if (c.reason === 'FieldValueInvalid' && m) ruleMessagesSeen.add(m[1]);
  }
  return { message: status.message, causes: status.details.causes };
}

const createDap = (body: object) => custom.createNamespacedCustomObject({ ...DAP, body });
const createMr = (body: object) => custom.createNamespacedCustomObject({ ...MR, body });

describe('custom resources are pruned, defaulted and validated against the shipped CRDs', () => {
  it('stores a valid policy with its defaults applied and undeclared fields pruned', async () => {
    const created: any = await createDap({ ...dap('ok', { role: 'ro', bogus: 1 }), status: { x: 1 } });
    expect(created.spec.database.port).toBe(5432);
    expect(created.spec.authentication).toEqual({ mode: 'workload' });
    expect(created.spec.bogus).toBeUndefined();
    expect(created.status).toBeUndefined();
    const read: any = await custom.getNamespacedCustomObject({ ...DAP, name: 'ok' });
    expect(read.spec).toEqual(created.spec);
  });

  it('refuses what a CEL rule of the policy CRD forbids, with the rule message on the offending field', async () => {
    const oidc = await refused(createDap(dap('oidc', { authentication: { mode: 'oidc' } })));
    expect(oidc.causes).toEqual([
      {
        reason: 'FieldValueInvalid',
        field: 'spec.authentication',
        message: 'Invalid value: "object": authentication.oidc is required when mode is oidc',
      },
    ]);
    expect(oidc.message).toBe(
      'DatabaseAccessPolicy.pgwarden.dev "oidc" is invalid: spec.authentication: Invalid value: "object": authentication.oidc is required when mode is oidc',
    );
    await createDap(
      dap('oidc-ok', { authentication: { mode: 'oidc', oidc: { issuer: 'https://idp', audience: 'pgwarden' } } }),
    );

    const deny = await refused(
      createDap(dap('deny', { rules: [{ name: 'no', action: 'deny', allowDangerous: ['dblink'] }] })),
    );
    expect(deny.causes.map((c) => [c.field, c.message])).toEqual([
      ['spec.rules[0]', 'Invalid value: "object": allowDangerous has no effect on a deny rule'],
    ]);

    const labels = await refused(createDap(dap('labels', { podSelector: { matchLabels: { 'Bad/Key': 'x' } } })));
    expect(labels.causes[0].field).toBe('spec.podSelector.matchLabels');

    const long = await refused(createDap(dap('x'.repeat(245), {})));
    expect(long.causes[0].message).toMatch(/metadata\.name must be at most 244 characters/);
    expect(long.causes[0].field).toBe('');
  });

  it('refuses what a CEL rule of the masking CRD forbids', async () => {
    const both = await refused(createMr(mr('both', { policies: ['a'], policySelector: { matchLabels: { a: 'b' } } })));
    expect(both.causes.map((c) => c.field)).toEqual(['spec']);
    expect(both.causes[0].message).toMatch(/exactly one of policies or policySelector is required/);
    await refused(createMr(mr('neither', {})));
    await createMr(mr('one', { policies: ['ok'] }));

    const column = (strategy: object) => ({ policies: ['ok'], columns: [{ table: 't', column: 'c', strategy }] });
    const keep = await refused(createMr(mr('keep', column({ type: 'hash', keepFirst: 2 }))));
    expect(keep.causes.map((c) => [c.field, c.message])).toEqual([
      ['spec.columns[0].strategy', 'Invalid value: "object": keepFirst/keepLast apply only to type partial'],
    ]);
    const key = await refused(
      createMr(mr('key', column({ type: 'partial', keepLast: 4, keySecretRef: { name: 's', key: 'k' } }))),
    );
    expect(key.causes[0].message).toMatch(/keySecretRef applies only to type hash/);
    const labels = await refused(createMr(mr('labels', { policySelector: { matchLabels: { '-x': 'y' } } })));
    expect(labels.causes[0].field).toBe('spec.policySelector.matchLabels');
  });

  it('refuses schema violations the way the API server words them', async () => {
    const r = await refused(
      createDap({
        ...dap('schema', {
          defaultAction: 'sometimes',
          rules: [
            { name: 'a', action: 'allow' },
            { name: 'a', action: 'deny' },
          ],
        }),
        spec: { database: { host: 'h', name: 'd', port: 'five' }, defaultAction: 'sometimes' },
      }),
    );
    const byField = Object.fromEntries(r.causes.map((c) => [c.field, c]));
    expect(byField['spec.database.port']).toMatchObject({ reason: 'FieldValueTypeInvalid' });
    expect(byField['spec.database.port'].message).toMatch(/must be of type integer/);
    expect(byField['spec.defaultAction']).toMatchObject({ reason: 'FieldValueNotSupported' });
    expect(byField['spec.defaultAction'].message).toMatch(/^Unsupported value: "sometimes": supported values: "allow"/);
    expect(r.message).toMatch(/^DatabaseAccessPolicy\.pgwarden\.dev "schema" is invalid: \[/);

    const missing = await refused(createDap({ ...dap('missing', {}), spec: { role: 'x' } }));
    expect(missing.causes).toContainEqual({
      reason: 'FieldValueRequired',
      message: 'Required value',
      field: 'spec.database',
    });

    const dup = await refused(
      createDap(
        dap('dup', {
          rules: [
            { name: 'a', action: 'allow' },
            { name: 'a', action: 'deny' },
          ],
        }),
      ),
    );
    expect(dup.causes).toEqual([
      { reason: 'FieldValueDuplicate', message: 'Duplicate value: {"name":"a"}', field: 'spec.rules[1]' },
    ]);
  });

  it('an update that breaks a rule is refused and leaves the stored object as it was (PUT, merge patch, apply)', async () => {
    const before: any = await createDap(dap('upd', { role: 'a' }));
    const rv = before.metadata.resourceVersion;
    await refused(
      custom.replaceNamespacedCustomObject({
        ...DAP,
        name: 'upd',
        body: { ...before, spec: { ...before.spec, authentication: { mode: 'oidc' } } },
      }),
    );
    await refused(
      custom.patchNamespacedCustomObject(
        {
          ...DAP,
          name: 'upd',
          body: { spec: { rules: [{ name: 'r', action: 'deny', allowDangerous: ['copy-file'] }] } },
        },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      ),
    );
    await refused(
      custom.patchNamespacedCustomObject(
        {
          ...DAP,
          name: 'upd',
          body: { ...dap('upd', { authentication: { mode: 'oidc' } }), metadata: { name: 'upd', namespace: 'agents' } },
          fieldManager: 'test',
          force: true,
        },
        setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply),
      ),
    );
    const after: any = await custom.getNamespacedCustomObject({ ...DAP, name: 'upd' });
    expect(after.metadata.resourceVersion).toBe(rv);
    expect(after.spec).toEqual(before.spec);
  });

  it('accepts every policy document shipped in examples/ and e2e/manifests/', async () => {
    let created = 0;
    for (const { object: o } of shippedPolicyDocuments()) {
      const body = { ...o, metadata: { ...o.metadata, name: `ex-${created}`, namespace: undefined } };
      await (o.kind === 'MaskingRule' ? createMr(body) : createDap(body));
      created++;
    }
    expect(created).toBeGreaterThanOrEqual(3);
  });

  it('every CEL rule in the shipped CRDs was seen refusing something above', () => {
    const messages: string[] = [];
    const walk = (s: any) => {
      for (const r of s['x-kubernetes-validations'] ?? []) messages.push(r.message);
      for (const p of Object.values<any>(s.properties ?? {})) walk(p);
      if (s.items) walk(s.items);
      if (typeof s.additionalProperties === 'object') walk(s.additionalProperties);
    };
    for (const crd of [databaseAccessPolicyCrd(), maskingRuleCrd()]) walk(crd.spec.versions[0].schema.openAPIV3Schema);
    expect(messages.length).toBeGreaterThanOrEqual(7);
    expect([...new Set(messages)].filter((m) => !ruleMessagesSeen.has(m))).toEqual([]);
  });
});

describe('the CRDs refuse exactly what the policy package refuses (the sidecar and operator validate the same way)', () => {
  const dapSchema = new CrdSchema(databaseAccessPolicyCrd());
  const mrSchema = new CrdSchema(maskingRuleCrd());
  const admitted = (schema: CrdSchema, kind: string, spec: object) =>
    schema.admit({ apiVersion: 'pgwarden.dev/v1alpha1', kind, metadata: { name: 'p' }, spec: structuredClone(spec) })
      .length === 0;

  it('DatabaseAccessPolicy: authentication, rules and label keys in every combination', () => {
    let cases = 0;
    for (const mode of ['workload', 'oidc'])
      for (const withOidc of [false, true])
        for (const action of ['allow', 'deny', 'review', 'dryrun'])
          for (const dangerous of [undefined, [], ['dblink'], ['dblink', 'copy-file']])
            for (const labelKey of ['app', 'example.com/team', 'Bad/Key', 'x-'])
              for (const duplicate of [false, true]) {
                const rule = { name: 'r', action, ...(dangerous ? { allowDangerous: dangerous } : {}) };
                const spec = {
                  database: { host: 'h', name: 'd' },
                  podSelector: { matchLabels: { [labelKey]: 'v' } },
                  authentication: {
                    mode,
                    ...(withOidc ? { oidc: { issuer: 'https://idp.example', audience: 'pgwarden' } } : {}),
                  },
                  rules: duplicate ? [rule, { name: 'r', action: 'allow' }] : [rule],
                };
                const label = JSON.stringify(spec);
                expect(admitted(dapSchema, 'DatabaseAccessPolicy', spec), label).toBe(
                  validatePolicySpec(structuredClone(spec)).length === 0,
                );
                cases++;
              }
    expect(cases).toBe(2 * 2 * 4 * 4 * 4 * 2);
  });

  it('MaskingRule: targets and strategy options in every combination', () => {
    let cases = 0;
    for (const policies of [undefined, ['a']])
      for (const selector of [undefined, { matchLabels: { team: 'x' } }, { matchLabels: { 'Bad/Key': 'x' } }])
        for (const type of ['redact', 'partial', 'hash', 'null', 'email', 'digits'])
          for (const keep of [{}, { keepFirst: 1 }, { keepLast: 2 }])
            for (const key of [{}, { keySecretRef: { name: 'k', key: 'hmac' } }]) {
              const spec = {
                ...(policies ? { policies } : {}),
                ...(selector ? { policySelector: selector } : {}),
                columns: [{ table: 'public.t', column: 'c', strategy: { type, ...keep, ...key } }],
              };
              expect(admitted(mrSchema, 'MaskingRule', spec), JSON.stringify(spec)).toBe(
                validateMaskingRuleSpec(structuredClone(spec)).length === 0,
              );
              cases++;
            }
    expect(cases).toBe(2 * 3 * 6 * 3 * 2);
  });
});
