import { KubeConfig, KubernetesObjectApi, PatchStrategy } from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { OperatorEvents } from '../core/operator-events.js';
import { FakeApiServer } from '../testing/fake-apiserver.js';
import { DEFAULT_SIDECAR_CONFIG } from '../webhook/sidecar-config.js';
import { PolicyController } from './policy-controller.js';

// A namespace user (or an agent with ConfigMap write, against docs/security.md's advice) adds a loose policy beside
// policy.json: the sidecar loads every *.yaml/*.json file of the mounted directory.
const LOOSE = 'apiVersion: pgwarden.dev/v1alpha1\nkind: DatabaseAccessPolicy\nmetadata: {name: analytics}\n';

let api: FakeApiServer;
let kc: KubeConfig;
let ctl: PolicyController | undefined;
const events = new OperatorEvents();

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
      rules: [{ name: 'read', action: 'allow', statements: ['select'] }],
    },
  });
  ctl = new PolicyController({
    kc,
    events,
    sidecar: DEFAULT_SIDECAR_CONFIG,
    watch: { backoff: { initialMs: 20, maxMs: 200 } },
    retry: { initialMs: 20, maxMs: 200 },
  });
  await ctl.start();
  await ctl.activate();
});
afterEach(async () => {
  await ctl?.stop();
  await api.stop();
});

const cm = () => api.get('v1', 'ConfigMap', 'agents', 'pgwarden-analytics');

async function until(fn: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** `kubectl patch configmap pgwarden-analytics --type merge -p …` */
async function kubectlPatch(patch: Record<string, any>): Promise<void> {
  await KubernetesObjectApi.makeApiClient(kc).patch(
    {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      ...patch,
      metadata: { name: 'pgwarden-analytics', namespace: 'agents', ...(patch.metadata ?? {}) },
    },
    undefined,
    undefined,
    'kubectl-patch',
    undefined,
    PatchStrategy.MergePatch,
  );
}

describe('a rendered ConfigMap edited by someone else', () => {
  it('loses the keys they added beside policy.json (data and binaryData), with a Warning Event', async () => {
    await until(() => Boolean(cm()));
    const rendered = cm()?.data['policy.json'];
    await kubectlPatch({
      data: { 'zz-loose.yaml': LOOSE },
      binaryData: { 'zz.json': Buffer.from('{}').toString('base64') },
    });
    await until(() => Object.keys(cm()?.data ?? {}).length === 1 && !Object.keys(cm()?.binaryData ?? {}).length).catch(
      (err) => {
        throw new Error(`${err.message}: ${JSON.stringify(cm())}`);
      },
    );
    expect(cm()?.data).toEqual({ 'policy.json': rendered });
    const warnings = () =>
      api.store
        .list({ rt: api.typeFor('v1', 'Event'), namespace: 'agents', selector: [] })
        .items.filter((e: any) => e.reason === 'ConfigMapRestored');
    // The Event is written after the keys are gone.
    await until(() => warnings().length > 0);
    expect(warnings()[0]?.message).toContain('zz-loose.yaml, zz.json');
  });

  it('is put back even when the edit also dropped the labels the watch selects on', async () => {
    await until(() => Boolean(cm()));
    const rendered = cm()?.data['policy.json'];
    await kubectlPatch({
      metadata: { labels: { 'app.kubernetes.io/managed-by': null, 'pgwarden.dev/policy': null } },
      data: { 'policy.json': null, 'a.yaml': LOOSE },
    });
    await until(() => cm()?.data['policy.json'] === rendered && !cm()?.data['a.yaml']);
    expect(cm()?.metadata.labels['pgwarden.dev/policy']).toBe('analytics');
  });
});
