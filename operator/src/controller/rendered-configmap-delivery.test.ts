import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { KubeConfig, KubernetesObjectApi, PatchStrategy } from '@kubernetes/client-node';
import { parseRenderedPolicy } from '@pgwarden/policy';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { OperatorEvents } from '../core/operator-events.js';
import { FakeApiServer } from '../testing/fake-apiserver.js';
import { reviewPod } from '../webhook/admission-server.js';
import { DEFAULT_SIDECAR_CONFIG } from '../webhook/sidecar-config.js';
import { PolicyController } from './policy-controller.js';

const run = promisify(execFile);

// What happens when the rendered policy cannot simply be applied: over the API server's 1 MiB ConfigMap limit, a
// ConfigMap someone made immutable, a ConfigMap of the same name the policy does not own. The fake API server
// refuses the first two with 422 as the real one does (fake-apiserver/core-validation.ts).

const V = 'pgwarden.dev/v1alpha1';
let api: FakeApiServer;
let kc: KubeConfig;
let ctl: PolicyController | undefined;
const events = new OperatorEvents();

const spec = (rules: object[] = [{ name: 'read', action: 'allow', statements: ['select'] }]) => ({
  podSelector: { matchLabels: { app: 'analytics' } },
  database: { host: 'db.data.svc', name: 'orders', credentialsSecretRef: { name: 'creds' } },
  rules,
});
const policy = () => ({
  apiVersion: V,
  kind: 'DatabaseAccessPolicy',
  metadata: { name: 'analytics', namespace: 'agents' },
  spec: spec(),
});

/** 40 rules of 128 table globs of 250 characters: ~1.3 MB rendered, each field within the CRD's limits. */
const hugeRules = () =>
  Array.from({ length: 40 }, (_, i) => ({
    name: `r${i}`,
    action: 'allow',
    statements: ['select'],
    tables: Array.from({ length: 128 }, (_, j) => `s${i}.t${j}_${'x'.repeat(240)}`),
  }));

beforeEach(async () => {
  api = new FakeApiServer();
  await api.start();
  kc = new KubeConfig();
  kc.loadFromOptions(api.kubeconfig());
  api.seed({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'agents' } });
});
afterEach(async () => {
  await ctl?.stop();
  ctl = undefined;
  await api.stop();
});

async function startController() {
  ctl = new PolicyController({
    kc,
    events,
    sidecar: DEFAULT_SIDECAR_CONFIG,
    watch: { backoff: { initialMs: 20, maxMs: 200 } },
    retry: { initialMs: 20, maxMs: 200 },
    auditRecheckMs: 100,
  });
  await ctl.start();
  await ctl.activate();
}

const cm = () => api.get('v1', 'ConfigMap', 'agents', 'pgwarden-analytics');
const dap = () => api.get(V, 'DatabaseAccessPolicy', 'agents', 'analytics');
const ready = () => dap()?.status?.conditions?.find((c: any) => c.type === 'Ready');
const warnings = (reason: string) =>
  api.store
    .list({ rt: api.typeFor('v1', 'Event'), namespace: 'agents', selector: [] })
    .items.filter((e: any) => e.type === 'Warning' && e.reason === reason);
const editSpec = (s: object) =>
  api.store.replace(api.typeFor(V, 'DatabaseAccessPolicy'), 'agents', 'analytics', { ...dap(), spec: s });

async function until<T>(fn: () => T | undefined, ms = 8000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`condition not reached; Ready: ${JSON.stringify(ready())}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** What the webhook answers for a new pod of the policy, from the controller's caches as every replica has them. */
function admit() {
  const review = {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: 'u1',
      operation: 'CREATE',
      resource: { group: '', version: 'v1', resource: 'pods' },
      namespace: 'agents',
      object: {
        metadata: { name: 'agent', namespace: 'agents', labels: { app: 'analytics' } },
        spec: { containers: [{ name: 'app', image: 'agent:1' }] },
      },
    },
  };
  return reviewPod(review, {
    sidecar: DEFAULT_SIDECAR_CONFIG,
    policies: (ns) => ctl!.policiesIn(ns),
    maskingRules: (ns) => ctl!.maskingRulesIn(ns),
    ready: () => true,
  }).body.response;
}

async function kubectlPatch(patch: Record<string, any>) {
  await KubernetesObjectApi.makeApiClient(kc).patch(
    { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'pgwarden-analytics', namespace: 'agents' }, ...patch },
    undefined,
    undefined,
    'kubectl-patch',
    undefined,
    PatchStrategy.MergePatch,
  );
}

describe('delivering the rendered policy to its ConfigMap', () => {
  it('a render over 1 MiB keeps the last good ConfigMap, says why in status and an Event, and new pods are refused', async () => {
    api.seed(policy());
    await startController();
    const good = await until(() => dap()?.status?.renderedHash);
    const goodCm = cm().data['policy.json'];
    expect(admit().allowed).toBe(true);

    editSpec(spec(hugeRules()));
    const cond = await until(() => (ready()?.reason === 'RenderedPolicyTooLarge' ? ready() : undefined));
    expect(cond).toMatchObject({ status: 'False', observedGeneration: 2 });
    expect(cond.message).toMatch(/the rendered policy is \d+ bytes, over the 1048576 bytes \(1 MiB\)/);
    expect(dap().status.conditions.find((c: any) => c.type === 'Accepted').status).toBe('True');
    expect(dap().status.renderedHash).toBe(good); // what the sidecars still enforce
    expect(cm().data['policy.json']).toBe(goodCm);
    expect(warnings('RenderedPolicyTooLarge')).toHaveLength(1);
    // The webhook reads the status from its watch cache, a moment after the write.
    const refused = await until(() => (admit().allowed ? undefined : admit()));
    expect(refused.status?.message).toMatch(
      /"analytics" selects this pod but cannot be delivered: the rendered policy/,
    );

    // No hot loop of Events while it stays too large; fixed, it renders and pods are admitted again.
    await ctl!.queue.idle();
    expect(warnings('RenderedPolicyTooLarge')).toHaveLength(1);
    editSpec(spec([{ name: 'read', action: 'allow', statements: ['select'], tables: ['public.*'] }]));
    await until(() => (ready()?.status === 'True' ? ready() : undefined));
    expect(parseRenderedPolicy(cm().data['policy.json']).policy.spec.rules[0].tables).toEqual(['public.*']);
    await until(() => admit().allowed);
  });

  it('pods that mounted the frozen ConfigMap are named in PodsCurrent and their Deployment is rolled off it', async () => {
    const podsCurrent = () => dap()?.status?.conditions?.find((c: any) => c.type === 'PodsCurrent');
    const pod = (
      name: string,
      labels: Record<string, string>,
      annotations: Record<string, string> = {},
      phase = 'Running',
    ) =>
      api.seed({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: {
          name,
          namespace: 'agents',
          labels,
          annotations: { 'pgwarden.dev/policies': 'analytics', ...annotations },
        },
        spec: { containers: [{ name: 'app', image: 'agent:1' }] },
        status: { phase },
      });
    const web = { app: 'analytics', tier: 'web' };
    api.seed(policy());
    api.seed({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'web', namespace: 'agents' },
      spec: {
        selector: { matchLabels: web },
        template: { metadata: { labels: web }, spec: { containers: [{ name: 'app', image: 'agent:1' }] } },
      },
    });
    pod('web-1', web);
    pod('adhoc', { app: 'analytics' }); // a bare pod: nothing rolls it
    pod('done', { app: 'analytics' }, {}, 'Succeeded'); // finished: it enforces nothing any more
    pod('other', { app: 'analytics' }, { 'pgwarden.dev/policies': 'someone-else' });
    await startController();
    await until(() => dap()?.status?.renderedHash);
    // Before any ConfigMap was frozen the condition is not there: nothing to tell.
    expect(podsCurrent()).toBeUndefined();
    const frozenUid = cm().metadata.uid;
    await kubectlPatch({ immutable: true });
    const replacement = await until(() => (cm() && cm().metadata.uid !== frozenUid ? cm() : undefined));
    expect(replacement.metadata.annotations['pgwarden.dev/replaced-immutable']).toBe(frozenUid);

    const stale = await until(() => (podsCurrent()?.status === 'False' ? podsCurrent() : undefined));
    expect(stale.reason).toBe('FrozenConfigMap');
    expect(stale.message).toContain('2 pod(s) (adhoc, web-1)');
    expect(stale.message).toContain(frozenUid);
    const deployment = () => api.get('apps/v1', 'Deployment', 'agents', 'web');
    await until(() => deployment().spec.template.metadata.annotations?.['pgwarden.dev/configmap-uid']);
    expect(deployment().spec.template.metadata.annotations['pgwarden.dev/configmap-uid']).toBe(
      replacement.metadata.uid,
    );
    expect(
      api.store
        .list({ rt: api.typeFor('v1', 'Event'), namespace: 'agents', selector: [] })
        .items.some(
          (e: any) => e.reason === 'RolloutTriggered' && /Deployment web: .*frozen ConfigMap/.test(e.message),
        ),
    ).toBe(true);

    // The Deployment's controller replaces web-1 with a pod of the new template (its annotation comes along).
    api.store.delete(api.typeFor('v1', 'Pod'), 'agents', 'web-1');
    pod('web-2', web, { 'pgwarden.dev/configmap-uid': replacement.metadata.uid });
    const onlyAdhoc = await until(() =>
      podsCurrent()?.message.includes('1 pod(s) (adhoc)') ? podsCurrent() : undefined,
    );
    expect(onlyAdhoc.status).toBe('False');
    // A later edit of the policy (a new apply of the ConfigMap) keeps the record of what was replaced.
    editSpec(spec([{ name: 'read', action: 'allow', statements: ['select'], tables: ['public.*'] }]));
    await until(() => (dap().status.observedGeneration === 2 ? dap() : undefined));
    expect(cm().metadata.annotations['pgwarden.dev/replaced-immutable']).toBe(frozenUid);
    expect(podsCurrent().status).toBe('False');

    // Someone deletes the bare pod and starts it again, a second later than the ConfigMap: nothing frozen is left.
    api.store.delete(api.typeFor('v1', 'Pod'), 'agents', 'adhoc');
    await new Promise((r) => setTimeout(r, 1100));
    pod('adhoc-2', { app: 'analytics' });
    const current = await until(() => (podsCurrent()?.status === 'True' ? podsCurrent() : undefined));
    expect(current.reason).toBe('AllPodsCurrent');
  });

  it('a rendered ConfigMap someone made immutable is deleted and created again with the new content', async () => {
    api.seed(policy());
    await startController();
    await until(() => dap()?.status?.renderedHash);
    const before = cm().metadata.uid;
    await kubectlPatch({ immutable: true });
    // The patch itself is seen through the ConfigMap watch: the operator does not wait for the next edit.
    await until(() => (cm() && cm().metadata.uid !== before ? cm() : undefined));
    expect(cm().immutable).toBeUndefined();
    expect(warnings('ConfigMapRecreated')[0]?.message).toMatch(/made immutable.*until restarted/);

    await kubectlPatch({ immutable: true });
    editSpec(spec([{ name: 'read', action: 'allow', statements: ['select'], tables: ['public.*'] }]));
    await until(() => (ready()?.status === 'True' && dap().status.observedGeneration === 2 ? ready() : undefined));
    expect(cm().immutable).toBeUndefined();
    expect(parseRenderedPolicy(cm().data['policy.json']).policy.spec.rules[0].tables).toEqual(['public.*']);
    expect(cm().metadata.ownerReferences[0]).toMatchObject({ kind: 'DatabaseAccessPolicy', uid: dap().metadata.uid });

    // Every verb the operator used on ConfigMaps here (the recreate deletes one) is one the chart's ClusterRole grants:
    // the fake API server checks no permissions, a real one answers 403.
    const used = new Set(
      api.requests
        .filter((r) => /\/configmaps(\/|$)/.test(r.path))
        .map((r) =>
          r.method === 'GET'
            ? r.query.watch === 'true' || r.query.watch === '1'
              ? 'watch'
              : /\/configmaps$/.test(r.path)
                ? 'list'
                : 'get'
            : ({ POST: 'create', PUT: 'update', PATCH: 'patch', DELETE: 'delete' } as Record<string, string>)[r.method],
        ),
    );
    expect(used).toContain('delete');
    const { stdout: helm } = await run('bash', [fileURLToPath(new URL('../../../scripts/helm.sh', import.meta.url))], {
      timeout: 120_000,
    });
    const { stdout } = await run(
      helm.trim(),
      ['template', 'pgw', fileURLToPath(new URL('../../../charts/pgwarden', import.meta.url))],
      {
        maxBuffer: 16 * 1024 * 1024,
      },
    );
    const role = parseAllDocuments(stdout)
      .map((d) => d.toJS())
      .find((o) => o?.kind === 'ClusterRole');
    const granted = role.rules
      .filter((r: { resources: string[] }) => r.resources.includes('configmaps'))
      .flatMap((r: { verbs: string[] }) => r.verbs);
    expect(granted).toEqual(expect.arrayContaining([...used]));
  }, 150_000);

  it('never takes over a ConfigMap of that name the policy does not own; renders once it is gone', async () => {
    const loose = '{"not":"pgwarden"}';
    api.seed({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'pgwarden-analytics', namespace: 'agents' },
      data: { 'policy.json': loose },
    });
    api.seed(policy());
    await startController();
    const cond = await until(() => (ready()?.reason === 'ConfigMapNotOwned' ? ready() : undefined));
    expect(cond.message).toMatch(/exists but this policy does not own it \(no controller ownerReference\)/);
    expect(cm().data['policy.json']).toBe(loose);
    expect(cm().metadata.ownerReferences).toBeUndefined();
    expect(warnings('ConfigMapNotOwned')).toHaveLength(1);
    expect((await until(() => admit().status?.message)) ?? '').toMatch(
      /cannot be delivered: ConfigMap pgwarden-analytics exists/,
    );

    api.store.delete(api.typeFor('v1', 'ConfigMap'), 'agents', 'pgwarden-analytics');
    await until(() => (ready()?.status === 'True' ? ready() : undefined));
    expect(cm().metadata.ownerReferences[0]).toMatchObject({ kind: 'DatabaseAccessPolicy', uid: dap().metadata.uid });
    expect(parseRenderedPolicy(cm().data['policy.json']).hash).toBe(dap().status.renderedHash);
    await until(() => admit().allowed);
  });
});
