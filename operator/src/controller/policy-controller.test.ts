import { KubeConfig } from '@kubernetes/client-node';
import { type DatabaseAccessPolicy, parseRenderedPolicy } from '@pgwarden/policy';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { OperatorEvents } from '../core/operator-events.js';
import { FakeApiServer } from '../testing/fake-apiserver.js';
import { expectedSidecarHash } from '../webhook/mutate-pod.js';
import {
  ANNOTATIONS,
  AUDIT_CREDENTIALS_SECRET,
  AUDIT_NATS_CA_SECRET,
  AUDIT_SIGNING_KEY_SECRET,
  DEFAULT_SIDECAR_CONFIG,
} from '../webhook/sidecar-config.js';
import { PolicyController } from './policy-controller.js';

let api: FakeApiServer;
let kc: KubeConfig;
let events: OperatorEvents;
let ctl: PolicyController | undefined;

const V = 'pgwarden.dev/v1alpha1';
const policy = (role = 'analytics_ro') => ({
  apiVersion: V,
  kind: 'DatabaseAccessPolicy',
  metadata: { name: 'analytics', namespace: 'agents' },
  spec: {
    podSelector: { matchLabels: { app: 'analytics' } },
    database: { host: 'db.data.svc', name: 'orders', credentialsSecretRef: { name: 'creds' } },
    role,
    rules: [{ name: 'read', action: 'allow', statements: ['select'] }],
  },
});

async function until<T>(fn: () => T | undefined, ms = 8000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 20));
  }
}

beforeEach(async () => {
  api = new FakeApiServer();
  await api.start();
  kc = new KubeConfig();
  kc.loadFromOptions(api.kubeconfig());
  events = new OperatorEvents();
  api.seed({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'agents' } });
});
afterEach(async () => {
  await ctl?.stop();
  ctl = undefined;
  await api.stop();
});

async function startController(
  image = DEFAULT_SIDECAR_CONFIG.image,
  extra: {
    auditCredentials?: { namespace: string; name: string };
    auditSigningKey?: { namespace: string; name: string };
    auditNatsCa?: { namespace: string; name: string };
    auditRecheckMs?: number;
    refreshPods?: boolean;
  } = {},
) {
  ctl = new PolicyController({
    kc,
    events,
    ...extra,
    sidecar: {
      ...DEFAULT_SIDECAR_CONFIG,
      image,
      ...(extra.auditCredentials
        ? { auditUrl: 'nats://nats.pgwarden:4222', auditCredentialsSecret: AUDIT_CREDENTIALS_SECRET }
        : {}),
      ...(extra.auditSigningKey ? { auditSigningKeySecret: AUDIT_SIGNING_KEY_SECRET } : {}),
      ...(extra.auditNatsCa
        ? { auditUrl: 'tls://nats.pgwarden:4222', auditNatsCa: { kind: 'secret' as const, name: AUDIT_NATS_CA_SECRET } }
        : {}),
    },
    watch: { backoff: { initialMs: 20, maxMs: 200 } },
    retry: { initialMs: 20, maxMs: 200 },
  });
  await ctl.start();
  await ctl.activate();
  return ctl;
}

const b64 = (v: string) => Buffer.from(v).toString('base64');

/** The operator namespace with the shared NATS user the controller copies (`--audit-credentials-source`). */
function seedNatsSource(): void {
  api.seed({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'pgwarden' } });
  api.seed({
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: 'pgwarden-nats-sidecar', namespace: 'pgwarden' },
    data: { username: b64('sidecar'), password: b64('s3cret-pw') },
  });
}

const cmOf = () => api.get('v1', 'ConfigMap', 'agents', 'pgwarden-analytics');
const dapOf = () => api.get(V, 'DatabaseAccessPolicy', 'agents', 'analytics');
const eventsOf = () => api.store.list({ rt: api.typeFor('v1', 'Event'), namespace: 'agents', selector: [] }).items;

describe('PolicyController through @kubernetes/client-node against the fake API server', () => {
  it('renders a policy with its masking rules into a ConfigMap (created, then applied), with status and an Event', async () => {
    api.seed(policy());
    api.seed({
      apiVersion: V,
      kind: 'MaskingRule',
      metadata: { name: 'pii', namespace: 'agents' },
      spec: {
        policies: ['analytics'],
        columns: [{ table: 'public.customers', column: 'email', strategy: { type: 'redact' } }],
      },
    });
    api.seed({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: 'agent-7d9f-x',
        namespace: 'agents',
        labels: { app: 'analytics', 'pod-template-hash': '7d9f' },
        ownerReferences: [
          { apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'agent-7d9f', uid: 'u', controller: true },
        ],
      },
      spec: { containers: [{ name: 'a', image: 'x' }] },
    });
    await startController();
    const dap = await until(() => (dapOf()?.status?.renderedHash ? dapOf() : undefined));
    const cm = cmOf();
    const rendered = parseRenderedPolicy(cm.data['policy.json']);
    expect(rendered.maskingRules.map((r) => r.name)).toEqual(['pii']);
    expect(cm.metadata.annotations[ANNOTATIONS.contentHash]).toBe(rendered.hash);
    expect(cm.metadata.ownerReferences[0]).toMatchObject({
      kind: 'DatabaseAccessPolicy',
      name: 'analytics',
      controller: true,
    });
    // Created (POST: a create cannot take over a ConfigMap someone made meanwhile, an apply would); applied after.
    expect(cm.metadata.managedFields.map((m: any) => m.manager)).toEqual(['pgwarden']);
    expect(dap.status).toMatchObject({ observedGeneration: 1, matchedWorkloads: 1, renderedHash: rendered.hash });
    expect(dap.status.conditions.map((c: any) => [c.type, c.status])).toEqual([
      ['Accepted', 'True'],
      ['Ready', 'True'],
    ]);
    expect(eventsOf().map((e: any) => e.reason)).toContain('Rendered');
    // A PATCH with apply content type went to the status subresource.
    expect(
      api.requests.some(
        (r) => r.path.endsWith('/analytics/status') && r.contentType === 'application/apply-patch+yaml',
      ),
    ).toBe(true);
  });

  it('a policy edit becomes a new ConfigMap and a status change; an invalid edit keeps the last good ConfigMap', async () => {
    api.seed(policy());
    await startController();
    const first = await until(() => dapOf()?.status?.renderedHash);
    const firstCm = cmOf().data['policy.json'];
    const firstTransition = dapOf().status.conditions[1].lastTransitionTime;

    const edited = { ...dapOf(), spec: policy('reporting_ro').spec };
    api.store.replace(api.typeFor(V, 'DatabaseAccessPolicy'), 'agents', 'analytics', edited);
    const second = await until(() => (dapOf()?.status?.renderedHash !== first ? dapOf().status : undefined));
    expect(second.observedGeneration).toBe(2);
    expect(cmOf().data['policy.json']).not.toBe(firstCm);
    expect(cmOf().metadata.managedFields).toContainEqual(
      expect.objectContaining({ manager: 'pgwarden', operation: 'Apply' }),
    );
    expect(parseRenderedPolicy(cmOf().data['policy.json']).policy.spec.role).toBe('reporting_ro');
    expect(second.conditions[1].lastTransitionTime).toBe(firstTransition); // still Ready: no transition

    // The CRD refuses this spec with a CEL rule (fake-apiserver/crd-validation.ts); an API server that does not
    // enforce CEL (Kubernetes < 1.25) stores it, and the operator must still keep the last good ConfigMap.
    const broken = { ...dapOf(), spec: { ...policy().spec, authentication: { mode: 'oidc' } } };
    const dapType = api.typeFor(V, 'DatabaseAccessPolicy');
    expect(() => api.store.replace(dapType, 'agents', 'analytics', broken)).toThrow(/authentication\.oidc is required/);
    api.store.withoutValidation(() => api.store.replace(dapType, 'agents', 'analytics', broken));
    const bad = await until(() => (dapOf()?.status?.observedGeneration === 3 ? dapOf().status : undefined));
    expect(bad.conditions[0]).toMatchObject({ type: 'Accepted', status: 'False', reason: 'InvalidSpec' });
    expect(bad.conditions[0].message).toMatch(/oidc/);
    expect(parseRenderedPolicy(cmOf().data['policy.json']).policy.spec.role).toBe('reporting_ro');
    expect(eventsOf().some((e: any) => e.type === 'Warning' && e.reason === 'InvalidSpec')).toBe(true);
  });

  it('refreshPods: a content change annotates the running pods of that policy, so kubelets deliver it at once', async () => {
    const pod = (name: string, policies: string) => ({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name,
        namespace: 'agents',
        labels: { app: 'analytics' },
        annotations: { [ANNOTATIONS.policies]: policies },
      },
      spec: { containers: [{ name: 'a', image: 'x' }] },
    });
    api.seed(policy());
    api.seed(pod('agent-1', 'other,analytics'));
    api.seed(pod('agent-2', 'other'));
    const podOf = (name: string) => api.get('v1', 'Pod', 'agents', name);
    await startController(undefined, { refreshPods: true });
    const first = await until(() => dapOf()?.status?.renderedHash);
    // The first render: no pod runs an older content of it.
    expect(podOf('agent-1').metadata.annotations[ANNOTATIONS.policyRefresh]).toBeUndefined();

    const edited = { ...dapOf(), spec: { ...policy().spec, suspend: true } };
    api.store.replace(api.typeFor(V, 'DatabaseAccessPolicy'), 'agents', 'analytics', edited);
    const second = await until(() =>
      dapOf()?.status?.renderedHash !== first ? dapOf().status.renderedHash : undefined,
    );
    const refreshed = await until(() => podOf('agent-1').metadata.annotations[ANNOTATIONS.policyRefresh]);
    expect(refreshed).toBe(second);
    expect(podOf('agent-1').metadata.annotations[ANNOTATIONS.policies]).toBe('other,analytics');
    expect(podOf('agent-2').metadata.annotations[ANNOTATIONS.policyRefresh]).toBeUndefined();
    expect(eventsOf().some((e: any) => e.reason === 'PodsRefreshed' && /1 pod/.test(e.message))).toBe(true);
    const patches = api.requests.filter((r) => r.method === 'PATCH' && r.path.includes('/pods/'));
    expect(patches.map((r) => [r.path.split('/').pop(), r.contentType])).toEqual([
      ['agent-1', 'application/merge-patch+json'],
    ]);
  });

  it('without refreshPods the operator never writes to pods', async () => {
    api.seed(policy());
    api.seed({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: 'agent-1',
        namespace: 'agents',
        labels: { app: 'analytics' },
        annotations: { [ANNOTATIONS.policies]: 'analytics' },
      },
      spec: { containers: [{ name: 'a', image: 'x' }] },
    });
    await startController();
    const first = await until(() => dapOf()?.status?.renderedHash);
    api.store.replace(api.typeFor(V, 'DatabaseAccessPolicy'), 'agents', 'analytics', {
      ...dapOf(),
      spec: policy('other_ro').spec,
    });
    await until(() => dapOf()?.status?.renderedHash !== first);
    expect(api.requests.some((r) => r.method !== 'GET' && r.path.includes('/pods'))).toBe(false);
  });

  it('restores a rendered ConfigMap someone deleted, and survives dropped watches and 410 Gone', async () => {
    api.seed(policy());
    await startController();
    await until(() => cmOf());
    api.dropWatches();
    api.compact();
    api.store.delete(api.typeFor('v1', 'ConfigMap'), 'agents', 'pgwarden-analytics');
    await until(() => cmOf());
    const restarts = await events.once('watch.synced', () => true, 100).catch(() => undefined);
    void restarts;
    expect(cmOf().metadata.annotations[ANNOTATIONS.contentHash]).toMatch(/^sha256:/);
  });

  it('rolls workloads through a pod-template annotation when the sidecar shape changes (rolloutStrategy Workload)', async () => {
    api.seed(policy());
    const deployment = (name: string) => ({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name, namespace: 'agents' },
      spec: {
        selector: { matchLabels: { instance: name } },
        template: {
          metadata: { labels: { app: 'analytics', instance: name } },
          spec: { containers: [{ name: 'a', image: 'x' }] },
        },
      },
    });
    const pod = (name: string, instance: string, annotations?: Record<string, string>) => ({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: 'agents', labels: { app: 'analytics', instance }, annotations },
      spec: { containers: [{ name: 'a', image: 'x' }] },
    });
    const config1 = { ...DEFAULT_SIDECAR_CONFIG, image: 'pgwarden:1' };
    const hash1 = expectedSidecarHash([policy() as unknown as DatabaseAccessPolicy], config1);
    // "agent" runs pods without a sidecar (created before the policy); "late" was created after it (already injected).
    api.seed(deployment('agent'));
    api.seed(pod('agent-1', 'agent'));
    api.seed(deployment('late'));
    api.seed(pod('late-1', 'late', { [ANNOTATIONS.sidecarHash]: hash1 }));
    api.seed({
      ...deployment('web'),
      spec: {
        ...deployment('web').spec,
        template: {
          metadata: { labels: { app: 'web', instance: 'web' } },
          spec: { containers: [{ name: 'a', image: 'x' }] },
        },
      },
    });
    const hashOf = (n: string) =>
      api.get('apps/v1', 'Deployment', 'agents', n)?.spec.template.metadata.annotations?.[ANNOTATIONS.sidecarHash];
    const genOf = (n: string) => api.get('apps/v1', 'Deployment', 'agents', n).metadata.generation;
    await startController('pgwarden:1');
    expect(await until(() => hashOf('agent'))).toBe(hash1);
    await ctl!.queue.idle();
    expect(hashOf('late')).toBeUndefined(); // its pods already have this sidecar: no needless restart
    expect(hashOf('web')).toBeUndefined();
    const gen = genOf('agent');
    await ctl!.stop();
    // Same shape: a restarted operator does not roll again.
    await startController('pgwarden:1');
    await until(() => dapOf()?.status?.renderedHash);
    await ctl!.queue.idle();
    expect(genOf('agent')).toBe(gen);
    await ctl!.stop();
    await startController('pgwarden:2');
    const h2 = await until(() => (hashOf('agent') !== hash1 ? hashOf('agent') : undefined));
    expect(h2).toMatch(/^sha256:/);
    expect(await until(() => hashOf('late'))).toBe(h2); // old sidecar shape on its pods: rolled now
    expect(genOf('agent')).toBe(gen + 1);
    expect(eventsOf().some((e: any) => e.reason === 'RolloutTriggered')).toBe(true);
  });

  it('converges: reconciling an unchanged policy again writes nothing new (no hot loop on its own status)', async () => {
    api.seed(policy());
    await startController();
    await until(() => dapOf()?.status?.renderedHash);
    await ctl!.queue.idle();
    await new Promise((r) => setTimeout(r, 200));
    await ctl!.queue.idle();
    const rvDap = dapOf().metadata.resourceVersion;
    const rvCm = cmOf().metadata.resourceVersion;
    // Not watched: the controller looks again on its own while the source is missing.
    await new Promise((r) => setTimeout(r, 50));
    await ctl!.queue.idle();
    expect(dapOf().metadata.resourceVersion).toBe(rvDap);
    expect(cmOf().metadata.resourceVersion).toBe(rvCm);
    expect(eventsOf().filter((e: any) => e.reason === 'Rendered')).toHaveLength(1);
  });

  it('MaskingRule status: the policies it applies to, NoPolicies when it selects none, InvalidSpec when broken', async () => {
    api.seed(policy());
    const rule = (name: string, spec: object) => ({
      apiVersion: V,
      kind: 'MaskingRule',
      metadata: { name, namespace: 'agents' },
      spec,
    });
    api.seed(rule('pii', { policies: ['analytics'], detectors: ['email'] }));
    api.seed(rule('orphan', { policies: ['nobody'] }));
    // Refused by the CRD's CEL rule where it is enforced; stored as on a cluster that does not enforce CEL.
    expect(() => api.seed(rule('broken', { policies: ['x'], policySelector: {} }))).toThrow(/exactly one of policies/);
    api.store.withoutValidation(() => api.seed(rule('broken', { policies: ['x'], policySelector: {} })));
    await startController();
    const mr = (n: string) => api.get(V, 'MaskingRule', 'agents', n)?.status;
    const pii = await until(() => mr('pii'));
    expect(pii.policies).toEqual(['analytics']);
    expect(pii.conditions.map((c: any) => [c.type, c.status, c.reason])).toEqual([
      ['Accepted', 'True', 'Valid'],
      ['Ready', 'True', 'Selected'],
    ]);
    expect((await until(() => mr('orphan'))).conditions[1]).toMatchObject({ status: 'False', reason: 'NoPolicies' });
    const broken = await until(() => mr('broken'));
    expect(broken.conditions[0]).toMatchObject({ type: 'Accepted', status: 'False', reason: 'InvalidSpec' });
    expect(broken.conditions[0].message).toMatch(/exactly one of policies or policySelector/);
    // Deleting the policy updates the rule that pointed at it.
    api.store.delete(api.typeFor(V, 'DatabaseAccessPolicy'), 'agents', 'analytics');
    await until(() => (mr('pii')?.policies.length === 0 ? true : undefined));
    expect(mr('pii').conditions[1].reason).toBe('NoPolicies');
  });

  it('rolloutStrategy None leaves workloads alone', async () => {
    const p = policy();
    (p.metadata as any).annotations = { [ANNOTATIONS.rolloutStrategy]: 'None' };
    api.seed(p);
    api.seed({
      apiVersion: 'apps/v1',
      kind: 'StatefulSet',
      metadata: { name: 'agent', namespace: 'agents' },
      spec: {
        template: { metadata: { labels: { app: 'analytics' } }, spec: { containers: [{ name: 'a', image: 'x' }] } },
      },
    });
    await startController();
    await until(() => dapOf()?.status?.renderedHash);
    await ctl!.queue.idle();
    expect(api.get('apps/v1', 'StatefulSet', 'agents', 'agent').spec.template.metadata.annotations).toBeUndefined();
  });

  it('copies the audit NATS credentials into the policy namespace, and reports Ready=False while the source is missing', async () => {
    api.seed({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'pgwarden' } });
    api.seed(policy());
    await startController(DEFAULT_SIDECAR_CONFIG.image, {
      auditCredentials: { namespace: 'pgwarden', name: 'pgwarden-nats-sidecar' },
      auditRecheckMs: 100,
    });
    const missing = await until(() => dapOf()?.status?.conditions?.find((c: any) => c.type === 'Ready'));
    expect(missing).toMatchObject({ status: 'False', reason: 'AuditCredentialsMissing' });
    expect(missing.message).toContain('pgwarden/pgwarden-nats-sidecar');
    expect(eventsOf().filter((e: any) => e.reason === 'AuditCredentialsMissing')).toHaveLength(1);
    expect(api.get('v1', 'Secret', 'agents', AUDIT_CREDENTIALS_SECRET)).toBeUndefined();

    api.seed({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'pgwarden-nats-sidecar', namespace: 'pgwarden' },
      data: { username: b64('sidecar'), password: b64('s3cret-pw'), unrelated: b64('not copied') },
    });
    // Not watched: the controller looks again on its own while the source is missing.
    const copy = await until(() => api.get('v1', 'Secret', 'agents', AUDIT_CREDENTIALS_SECRET));
    expect(copy.data).toEqual({ username: b64('sidecar'), password: b64('s3cret-pw') });
    expect(copy.metadata.labels['pgwarden.dev/role']).toBe('audit-credentials');
    expect(copy.metadata.managedFields[0]).toMatchObject({ manager: 'pgwarden' });
    await until(() =>
      dapOf()?.status?.conditions?.find((c: any) => c.type === 'Ready' && c.status === 'True') ? true : undefined,
    );
    // No secret material in the policy's status or Events.
    expect(JSON.stringify(dapOf().status)).not.toContain(b64('s3cret-pw'));
    expect(JSON.stringify(eventsOf())).not.toContain(b64('s3cret-pw'));
  });

  it('leaves a Secret of the copy’s name that pgwarden did not create alone, says so, and copies once it is gone', async () => {
    seedNatsSource();
    // Someone else's Secret of that name, e.g. an external secrets manager's.
    api.seed({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: AUDIT_CREDENTIALS_SECRET, namespace: 'agents', labels: { owner: 'external-secrets' } },
      data: { username: b64('theirs'), password: b64('their-pw') },
    });
    api.seed(policy());
    await startController(DEFAULT_SIDECAR_CONFIG.image, {
      auditCredentials: { namespace: 'pgwarden', name: 'pgwarden-nats-sidecar' },
      auditRecheckMs: 100,
    });
    const ready = await until(() => dapOf()?.status?.conditions?.find((c: any) => c.type === 'Ready'));
    expect(ready).toMatchObject({ status: 'False', reason: 'AuditSecretNotOwned' });
    expect(ready.message).toContain(`agents/${AUDIT_CREDENTIALS_SECRET} exists and pgwarden did not create it`);
    expect(eventsOf().filter((e: any) => e.reason === 'AuditSecretNotOwned')).toHaveLength(1);
    const theirs = api.get('v1', 'Secret', 'agents', AUDIT_CREDENTIALS_SECRET);
    expect(theirs.data).toEqual({ username: b64('theirs'), password: b64('their-pw') });
    expect(theirs.metadata.labels).toEqual({ owner: 'external-secrets' });
    expect(JSON.stringify(dapOf().status)).not.toContain(b64('s3cret-pw'));

    api.store.delete(api.typeFor('v1', 'Secret'), 'agents', AUDIT_CREDENTIALS_SECRET);
    const copy = await until(() => {
      const s = api.get('v1', 'Secret', 'agents', AUDIT_CREDENTIALS_SECRET);
      return s?.metadata?.labels?.['app.kubernetes.io/managed-by'] === 'pgwarden' ? s : undefined;
    });
    expect(copy.data).toEqual({ username: b64('sidecar'), password: b64('s3cret-pw') });
    await until(() =>
      dapOf()?.status?.conditions?.find((c: any) => c.type === 'Ready' && c.status === 'True') ? true : undefined,
    );
  });

  it('writes the copy only when it differs: a steady state writes nothing, an edited copy is put back', async () => {
    seedNatsSource();
    api.seed(policy());
    await startController(DEFAULT_SIDECAR_CONFIG.image, {
      auditCredentials: { namespace: 'pgwarden', name: 'pgwarden-nats-sidecar' },
      auditRecheckMs: 50,
    });
    const first = await until(() => api.get('v1', 'Secret', 'agents', AUDIT_CREDENTIALS_SECRET));
    await until(() =>
      dapOf()?.status?.conditions?.find((c: any) => c.type === 'Ready' && c.status === 'True') ? true : undefined,
    );
    // Reconciliations go on (the policy is edited); the copy is not written again.
    const dapType = api.typeFor(V, 'DatabaseAccessPolicy');
    const secretType = api.typeFor('v1', 'Secret');
    api.store.replace(dapType, 'agents', 'analytics', { ...dapOf(), spec: policy('analytics_rw').spec });
    await until(() => (JSON.stringify(cmOf()?.data ?? {}).includes('analytics_rw') ? true : undefined));
    await ctl!.queue.idle();
    const secretWrites = () =>
      api.requests.filter((r) => r.method !== 'GET' && r.path.includes(`/secrets/${AUDIT_CREDENTIALS_SECRET}`)).length +
      api.requests.filter((r) => r.method === 'POST' && r.path.endsWith('/namespaces/agents/secrets')).length;
    expect(secretWrites()).toBe(1); // the create
    expect(api.get('v1', 'Secret', 'agents', AUDIT_CREDENTIALS_SECRET).metadata.resourceVersion).toBe(
      first.metadata.resourceVersion,
    );

    const live = api.get('v1', 'Secret', 'agents', AUDIT_CREDENTIALS_SECRET);
    api.store.replace(secretType, 'agents', AUDIT_CREDENTIALS_SECRET, {
      ...live,
      data: { ...live.data, password: b64('tampered') },
    });
    api.store.replace(dapType, 'agents', 'analytics', { ...dapOf(), spec: policy('analytics_ro').spec });
    const restored = await until(() => {
      const s = api.get('v1', 'Secret', 'agents', AUDIT_CREDENTIALS_SECRET);
      return s?.data?.password === b64('s3cret-pw') ? s : undefined;
    });
    expect(restored.metadata.managedFields.some((f: any) => f.manager === 'pgwarden' && f.operation === 'Apply')).toBe(
      true,
    );
    expect(secretWrites()).toBe(2); // the create and the one apply that put it back
  });

  it('copies a namespace’s own NATS user (<source>-<namespace>) instead of the shared one when it exists', async () => {
    api.seed({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'pgwarden' } });
    for (const [name, user] of [
      ['pgwarden-nats-sidecar', 'sidecar'],
      ['pgwarden-nats-sidecar-agents', 'sidecar-agents'],
      ['pgwarden-nats-sidecar-other', 'sidecar-other'],
    ])
      api.seed({
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name, namespace: 'pgwarden' },
        data: { username: b64(user), password: b64(`${user}-pw`) },
      });
    api.seed(policy());
    await startController(DEFAULT_SIDECAR_CONFIG.image, {
      auditCredentials: { namespace: 'pgwarden', name: 'pgwarden-nats-sidecar' },
    });
    const copy = await until(() => api.get('v1', 'Secret', 'agents', AUDIT_CREDENTIALS_SECRET));
    expect(copy.data).toEqual({ username: b64('sidecar-agents'), password: b64('sidecar-agents-pw') });
  });

  it('copies the audit signing key (a namespace’s own first), and reports Ready=False while it is missing', async () => {
    const pem = (who: string) => `-----BEGIN PRIVATE KEY-----\n${b64(`key of ${who}`)}\n-----END PRIVATE KEY-----\n`;
    api.seed({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'pgwarden' } });
    api.seed({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'billing' } });
    api.seed(policy());
    api.seed({ ...policy(), metadata: { name: 'analytics', namespace: 'billing' } });
    // Another namespace's own key, which must never be copied to `agents`.
    api.seed({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'pgwarden-audit-signing-billing', namespace: 'pgwarden' },
      data: { 'signing.key': b64(pem('billing')) },
    });
    await startController(DEFAULT_SIDECAR_CONFIG.image, {
      auditSigningKey: { namespace: 'pgwarden', name: 'pgwarden-audit-signing' },
      auditRecheckMs: 100,
    });
    const missing = await until(() => dapOf()?.status?.conditions?.find((c: any) => c.type === 'Ready'));
    expect(missing).toMatchObject({ status: 'False', reason: 'AuditSigningKeyMissing' });
    expect(missing.message).toBe(
      'audit signing key Secret pgwarden/pgwarden-audit-signing is missing or lacks signing.key: injected sidecars cannot start',
    );
    expect(eventsOf().filter((e: any) => e.reason === 'AuditSigningKeyMissing')).toHaveLength(1);
    expect(api.get('v1', 'Secret', 'agents', AUDIT_SIGNING_KEY_SECRET)).toBeUndefined();
    const billing = await until(() => api.get('v1', 'Secret', 'billing', AUDIT_SIGNING_KEY_SECRET));
    expect(billing.data).toEqual({ 'signing.key': b64(pem('billing')) });

    api.seed({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'pgwarden-audit-signing', namespace: 'pgwarden' },
      data: { 'signing.key': b64(pem('everyone')), 'public.pem': b64('not copied') },
    });
    // Not watched: the controller looks again on its own while the source is missing.
    const copy = await until(() => api.get('v1', 'Secret', 'agents', AUDIT_SIGNING_KEY_SECRET));
    expect(copy.data).toEqual({ 'signing.key': b64(pem('everyone')) });
    expect(copy.metadata.labels['pgwarden.dev/role']).toBe('audit-signing-key');
    await until(() =>
      dapOf()?.status?.conditions?.find((c: any) => c.type === 'Ready' && c.status === 'True') ? true : undefined,
    );
    for (const who of ['everyone', 'billing']) {
      expect(JSON.stringify(dapOf().status)).not.toContain(b64(pem(who)));
      expect(JSON.stringify(eventsOf())).not.toContain(b64(pem(who)));
    }
  });

  it('copies the NATS CA bundle into the policy namespace, and reports Ready=False while it is missing', async () => {
    api.seed({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'pgwarden' } });
    api.seed(policy());
    await startController(DEFAULT_SIDECAR_CONFIG.image, {
      auditNatsCa: { namespace: 'pgwarden', name: 'nats-ca' },
      auditRecheckMs: 100,
    });
    const missing = await until(() => dapOf()?.status?.conditions?.find((c: any) => c.type === 'Ready'));
    expect(missing).toMatchObject({ status: 'False', reason: 'AuditNatsCaMissing' });
    expect(missing.message).toBe(
      'NATS CA Secret pgwarden/nats-ca is missing or lacks ca.crt: injected sidecars cannot start',
    );
    api.seed({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'nats-ca', namespace: 'pgwarden' },
      data: { 'ca.crt': b64('-----BEGIN CERTIFICATE-----'), 'tls.key': b64('not copied') },
    });
    const copy = await until(() => api.get('v1', 'Secret', 'agents', AUDIT_NATS_CA_SECRET));
    expect(copy.data).toEqual({ 'ca.crt': b64('-----BEGIN CERTIFICATE-----') });
    expect(copy.metadata.labels['pgwarden.dev/role']).toBe('audit-nats-ca');
    await until(() =>
      dapOf()?.status?.conditions?.find((c: any) => c.type === 'Ready' && c.status === 'True') ? true : undefined,
    );
  });
});
