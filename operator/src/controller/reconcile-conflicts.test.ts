import { CoreV1Api, CustomObjectsApi, KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { OperatorEvents } from '../core/operator-events.js';
import { FakeApiServer } from '../testing/fake-apiserver.js';
import { ANNOTATIONS, DEFAULT_SIDECAR_CONFIG } from '../webhook/sidecar-config.js';
import { reconcileRetryingConflicts } from './conflict-retry.js';
import { K8sWrites, type ObjectRef } from './k8s-writes.js';
import type { KubeObject } from './list-watch.js';
import { reconcileMaskingRule } from './reconcile-masking-rule.js';
import { type ReconcileDeps, reconcilePolicy } from './reconcile-policy.js';

// Two writers of one policy's ConfigMap and status: this process, and "another replica" (a second operator, the
// previous leader still finishing, or a person) whose write the fake API server lands between our read and our write.
// The reconciliation is driven directly (no informers): the object handed in is what a lagging cache would hold.

let api: FakeApiServer;
let kc: KubeConfig;
const ref: ObjectRef = {
  apiVersion: 'pgwarden.dev/v1alpha1',
  kind: 'DatabaseAccessPolicy',
  name: 'analytics',
  namespace: 'agents',
};
const CM_PATH = '/api/v1/namespaces/agents/configmaps/pgwarden-analytics';
const STATUS_PATH = '/namespaces/agents/databaseaccesspolicies/analytics/status';

beforeEach(async () => {
  api = new FakeApiServer();
  await api.start();
  kc = new KubeConfig();
  kc.loadFromOptions(api.kubeconfig());
  api.seed({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'agents' } });
  api.seed({
    apiVersion: 'pgwarden.dev/v1alpha1',
    kind: 'DatabaseAccessPolicy',
    metadata: { name: 'analytics', namespace: 'agents' },
    spec: {
      podSelector: { matchLabels: { app: 'analytics' } },
      database: { host: 'db.data.svc', name: 'orders', credentialsSecretRef: { name: 'creds' } },
      rules: [{ name: 'read-v1', action: 'allow', statements: ['select'] }],
    },
  });
});
afterEach(() => api.stop());

/** One operator process: its own writes client and its own memory of what it last reported. */
function replica() {
  const writes = new K8sWrites(kc);
  const deps: ReconcileDeps = {
    policies: () => [policy()],
    maskingRules: () => [],
    pods: () => [],
    writes,
    events: new OperatorEvents(),
    sidecar: DEFAULT_SIDECAR_CONFIG,
    defaultRollout: 'None',
    lastRendered: new Map(),
  };
  return (obj: KubeObject) =>
    reconcileRetryingConflicts(
      obj,
      () => writes.readCustomObject(ref),
      (p) => reconcilePolicy(deps, p),
      { sleep: async () => {} },
    );
}

const policy = () => api.get(ref.apiVersion, ref.kind, ref.namespace, ref.name) as KubeObject;
const cm = () => api.get('v1', 'ConfigMap', 'agents', 'pgwarden-analytics');

/** `kubectl edit` of the policy: the second version's rule is called read-v2. */
async function editPolicy(): Promise<void> {
  await kc.makeApiClient(CustomObjectsApi).patchNamespacedCustomObject(
    {
      group: 'pgwarden.dev',
      version: 'v1alpha1',
      plural: 'databaseaccesspolicies',
      namespace: 'agents',
      name: 'analytics',
      body: { spec: { rules: [{ name: 'read-v2', action: 'allow', statements: ['select'] }] } },
    },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  );
}

describe('a write by someone else between the operator’s read and its write', () => {
  it('a newer render landing after our ConfigMap read is not overwritten with our stale one: we re-read and re-render', async () => {
    const ours = replica();
    await ours(policy());
    const stale = policy(); // what our cache holds: spec v1
    expect(cm().data['policy.json']).toContain('read-v1');

    // Right after our read of the ConfigMap, the policy is edited and the other replica renders it.
    api.interleave({ method: 'GET', pathIncludes: CM_PATH }, async () => {
      await editPolicy();
      await replica()(policy());
    });
    await ours(stale);

    const fresh = policy();
    expect(fresh.metadata.generation).toBe(2);
    expect(cm().data['policy.json']).toContain('read-v2');
    expect(cm().data['policy.json']).not.toContain('read-v1');
    expect(fresh.status).toMatchObject({
      observedGeneration: 2,
      renderedHash: cm().metadata.annotations[ANNOTATIONS.contentHash],
    });
  });

  it('a status computed from an old version of the policy does not replace the status of a newer one', async () => {
    const stale = policy();
    // Just before our status write (our ConfigMap write is done), the policy is edited and the other replica
    // renders it and writes its status; a status change alone does not trigger a reconciliation, so a stale status
    // written now would stay.
    api.interleave({ method: 'PATCH', pathIncludes: STATUS_PATH, when: 'before' }, async () => {
      await editPolicy();
      await replica()(policy());
    });
    await replica()(stale);

    expect(cm().data['policy.json']).toContain('read-v2');
    expect(policy().status).toMatchObject({
      observedGeneration: 2,
      renderedHash: cm().metadata.annotations[ANNOTATIONS.contentHash],
    });
  });

  it('a ConfigMap someone else creates after we found none is not taken over (create races create)', async () => {
    api.interleave({ method: 'GET', pathIncludes: CM_PATH }, async () => {
      await kc.makeApiClient(CoreV1Api).createNamespacedConfigMap({
        namespace: 'agents',
        body: { metadata: { name: 'pgwarden-analytics' }, data: { 'policy.json': '{"theirs":true}' } },
      });
    });
    await replica()(policy());

    expect(cm().data).toEqual({ 'policy.json': '{"theirs":true}' });
    expect(cm().metadata.ownerReferences).toBeUndefined();
    const ready = policy().status.conditions.find((c: any) => c.type === 'Ready');
    expect(ready).toMatchObject({ status: 'False', reason: 'ConfigMapNotOwned' });
  });

  it('a key added after our read is still removed: the apply conflicts and the retry sees it', async () => {
    const ours = replica();
    await ours(policy());
    let added = false;
    api.interleave({ method: 'GET', pathIncludes: CM_PATH }, async () => {
      await kc
        .makeApiClient(CoreV1Api)
        .patchNamespacedConfigMap(
          { namespace: 'agents', name: 'pgwarden-analytics', body: { data: { 'loose.yaml': 'kind: x' } } },
          setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
        );
      added = true;
    });
    await ours(policy());
    expect(added).toBe(true);
    expect(Object.keys(cm().data)).toEqual(['policy.json']);
  });

  it('a MaskingRule status computed from an old version of the rule does not replace a newer one', async () => {
    const mrRef: ObjectRef = { ...ref, kind: 'MaskingRule', name: 'pii' };
    api.seed({
      apiVersion: mrRef.apiVersion,
      kind: 'MaskingRule',
      metadata: { name: 'pii', namespace: 'agents' },
      spec: { policies: ['nobody'], detectors: ['email'] },
    });
    const rule = () => api.get(mrRef.apiVersion, 'MaskingRule', 'agents', 'pii') as KubeObject;
    const writes = new K8sWrites(kc);
    const run = (obj: KubeObject) =>
      reconcileRetryingConflicts(
        obj,
        () => writes.readCustomObject(mrRef),
        (r) => reconcileMaskingRule({ policies: () => [policy()], writes }, r),
        { sleep: async () => {} },
      );
    const stale = rule();
    // Before our status write lands, the rule is pointed at the policy and the other replica reports that.
    api.interleave({ method: 'PATCH', pathIncludes: '/maskingrules/pii/status', when: 'before' }, async () => {
      await kc.makeApiClient(CustomObjectsApi).patchNamespacedCustomObject(
        {
          group: 'pgwarden.dev',
          version: 'v1alpha1',
          plural: 'maskingrules',
          namespace: 'agents',
          name: 'pii',
          body: { spec: { policies: ['analytics'] } },
        },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
      await run(rule());
    });
    await run(stale);
    expect(rule().status).toMatchObject({ observedGeneration: 2, policies: ['analytics'] });
  });

  it('gives up after a bounded number of attempts and leaves the 409 to the work queue', async () => {
    const writes = new K8sWrites(kc);
    let attempts = 0;
    const alwaysConflict = Object.assign(new Error('conflict'), { code: 409 });
    await expect(
      reconcileRetryingConflicts(
        policy(),
        () => writes.readCustomObject(ref),
        async () => {
          attempts++;
          throw alwaysConflict;
        },
        { attempts: 3, sleep: async () => {} },
      ),
    ).rejects.toBe(alwaysConflict);
    expect(attempts).toBe(3);
  });
});
