import {
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  KubernetesObjectApi,
  PatchStrategy,
  setHeaderOptions,
  Watch,
} from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeApiServer } from './fake-apiserver.js';

let api: FakeApiServer;
let kc: KubeConfig;

beforeAll(async () => {
  api = new FakeApiServer();
  await api.start();
  kc = new KubeConfig();
  kc.loadFromOptions(api.kubeconfig());
  api.seed({
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: 'agents', labels: { 'pgwarden.dev/injection': 'enabled' } },
  });
});
afterAll(() => api.stop());

/** A DatabaseAccessPolicy the shipped CRD accepts (the fake server enforces it): the required parts plus `spec`. */
const dap = (name: string, spec: object) => ({
  apiVersion: 'pgwarden.dev/v1alpha1',
  kind: 'DatabaseAccessPolicy',
  metadata: { name, namespace: 'agents' },
  spec: { podSelector: { matchLabels: { app: name } }, database: { host: 'db', name: 'app' }, ...spec },
});

describe('fake API server through @kubernetes/client-node', () => {
  it('lists with a resourceVersion and filters by label selector', async () => {
    const core = kc.makeApiClient(CoreV1Api);
    await core.createNamespacedConfigMap({
      namespace: 'agents',
      body: { metadata: { name: 'a', labels: { t: 'x' } }, data: { k: 'v' } },
    });
    await core.createNamespacedConfigMap({
      namespace: 'agents',
      body: { metadata: { name: 'b', labels: { t: 'y' } } },
    });
    const all = await core.listNamespacedConfigMap({ namespace: 'agents' });
    expect(all.items.map((c) => c.metadata?.name)).toEqual(['a', 'b']);
    expect(Number(all.metadata?.resourceVersion)).toBeGreaterThan(1000);
    const some = await core.listNamespacedConfigMap({ namespace: 'agents', labelSelector: 't in (x)' });
    expect(some.items.map((c) => c.metadata?.name)).toEqual(['a']);
    await expect(
      core.createNamespacedConfigMap({ namespace: 'agents', body: { metadata: { name: 'a' } } }),
    ).rejects.toMatchObject({ code: 409 });
    await expect(
      core.createNamespacedConfigMap({ namespace: 'nope', body: { metadata: { name: 'a' } } }),
    ).rejects.toMatchObject({ code: 404 });
  });

  it('streams watch events from a resourceVersion and answers 410 after compaction', async () => {
    const core = kc.makeApiClient(CoreV1Api);
    const start = (await core.listNamespacedConfigMap({ namespace: 'agents' })).metadata!.resourceVersion!;
    await core.patchNamespacedConfigMap(
      { namespace: 'agents', name: 'a', body: { data: { k: 'v2' } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    await core.deleteNamespacedConfigMap({ namespace: 'agents', name: 'b' });
    const seen: string[] = [];
    const done = new Promise<void>((resolve) => {
      void new Watch(kc).watch(
        '/api/v1/namespaces/agents/configmaps',
        { resourceVersion: start, timeoutSeconds: 1 },
        (type, obj) => seen.push(`${type} ${obj.metadata.name}`),
        () => resolve(),
      );
    });
    await done; // timeoutSeconds closes the stream server-side
    expect(seen).toEqual(['MODIFIED a', 'DELETED b']);

    api.compact();
    const errors: any[] = [];
    await new Promise<void>((resolve) => {
      void new Watch(kc).watch(
        '/api/v1/namespaces/agents/configmaps',
        { resourceVersion: start },
        (type, obj) => {
          if (type === 'ERROR') errors.push(obj);
        },
        () => resolve(),
      );
    });
    expect(errors[0]).toMatchObject({ kind: 'Status', code: 410, reason: 'Expired' });
  });

  it('a label-selector watch sees objects entering the selector as ADDED and leaving it as DELETED', async () => {
    const core = kc.makeApiClient(CoreV1Api);
    const start = (await core.listNamespacedConfigMap({ namespace: 'agents' })).metadata!.resourceVersion!;
    await core.createNamespacedConfigMap({
      namespace: 'agents',
      body: { metadata: { name: 'sel', labels: { tier: 'a' } } },
    });
    const relabel = (tier: string) =>
      core.patchNamespacedConfigMap(
        { namespace: 'agents', name: 'sel', body: { metadata: { labels: { tier } } } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
    await relabel('b');
    await relabel('a');
    const seen: string[] = [];
    await new Promise<void>((resolve) => {
      void new Watch(kc).watch(
        '/api/v1/namespaces/agents/configmaps',
        { resourceVersion: start, labelSelector: 'tier=a', timeoutSeconds: 1 },
        (type, obj) => seen.push(`${type} ${obj.metadata.labels.tier}`),
        () => resolve(),
      );
    });
    expect(seen).toEqual(['ADDED a', 'DELETED b', 'ADDED a']);
  });

  it('server-side apply: creates, owns fields, removes fields it stops applying, reports conflicts', async () => {
    const objects = KubernetesObjectApi.makeApiClient(kc);
    const cm = {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'ssa', namespace: 'agents' },
      data: { a: '1', b: '2' },
    };
    const created = await objects.patch(cm, undefined, undefined, 'pgwarden', true, PatchStrategy.ServerSideApply);
    expect(created.data).toEqual({ a: '1', b: '2' });
    expect(created.metadata?.managedFields?.[0]).toMatchObject({ manager: 'pgwarden', operation: 'Apply' });
    const rv = created.metadata!.resourceVersion;
    const same = await objects.patch(cm, undefined, undefined, 'pgwarden', true, PatchStrategy.ServerSideApply);
    expect(same.metadata!.resourceVersion).toBe(rv); // identical apply is a no-op
    const shrunk = await objects.patch(
      { ...cm, data: { a: '1' } },
      undefined,
      undefined,
      'pgwarden',
      true,
      PatchStrategy.ServerSideApply,
    );
    expect(shrunk.data).toEqual({ a: '1' });
    const other = { ...cm, data: { a: 'mine' } };
    await expect(
      objects.patch(other, undefined, undefined, 'someone-else', false, PatchStrategy.ServerSideApply),
    ).rejects.toMatchObject({
      code: 409,
    });
    const forced = await objects.patch(
      other,
      undefined,
      undefined,
      'someone-else',
      true,
      PatchStrategy.ServerSideApply,
    );
    expect(forced.data).toEqual({ a: 'mine' });
    await expect(
      objects.patch(cm, undefined, undefined, undefined, false, PatchStrategy.ServerSideApply),
    ).rejects.toMatchObject({ code: 400 });
  });

  it('status subresource: main writes ignore status, status writes ignore spec, generation tracks spec', async () => {
    const custom = kc.makeApiClient(CustomObjectsApi);
    const g = { group: 'pgwarden.dev', version: 'v1alpha1', namespace: 'agents', plural: 'databaseaccesspolicies' };
    const created = await custom.createNamespacedCustomObject({
      ...g,
      body: { ...dap('p', { role: 'r' }), status: { x: 1 } },
    });
    expect(created.status).toBeUndefined();
    expect(created.metadata.generation).toBe(1);
    const st = await custom.patchNamespacedCustomObjectStatus(
      {
        ...g,
        name: 'p',
        body: { ...dap('p', { role: 'ignored' }), status: { matchedWorkloads: 2 } },
        fieldManager: 'pgwarden',
        force: true,
      },
      setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply),
    );
    expect(st.status).toEqual({ matchedWorkloads: 2 });
    expect(st.spec.role).toBe('r');
    expect(st.metadata.generation).toBe(1);
    const upd = await custom.replaceNamespacedCustomObject({
      ...g,
      name: 'p',
      body: { ...st, spec: { ...st.spec, role: 'r2' }, status: { matchedWorkloads: 9 } },
    });
    expect(upd.metadata.generation).toBe(2);
    expect(upd.status).toEqual({ matchedWorkloads: 2 });
    const labelled = await custom.patchNamespacedCustomObject(
      { ...g, name: 'p', body: { metadata: { labels: { a: 'b' } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    expect(labelled.metadata.generation).toBe(2); // metadata changes do not bump generation
  });

  it('Leases: optimistic concurrency answers 409 on a stale resourceVersion', async () => {
    const coord = kc.makeApiClient(CoordinationV1Api);
    const lease = await coord.createNamespacedLease({
      namespace: 'agents',
      body: { metadata: { name: 'l' }, spec: { holderIdentity: 'a' } },
    });
    const next = await coord.replaceNamespacedLease({
      namespace: 'agents',
      name: 'l',
      body: { ...lease, spec: { holderIdentity: 'b' } },
    });
    expect(next.spec?.holderIdentity).toBe('b');
    await expect(
      coord.replaceNamespacedLease({
        namespace: 'agents',
        name: 'l',
        body: { ...lease, spec: { holderIdentity: 'c' } },
      }),
    ).rejects.toMatchObject({ code: 409 });
  });

  it('a resourceVersion in a write is a precondition (409 Conflict Status) for apply, merge patch, PUT and status', async () => {
    const objects = KubernetesObjectApi.makeApiClient(kc);
    const core = kc.makeApiClient(CoreV1Api);
    const ssa = (o: any) => objects.patch(o, undefined, undefined, 'pgwarden', true, PatchStrategy.ServerSideApply);
    const meta = { name: 'rv', namespace: 'agents' };
    const cm = { apiVersion: 'v1', kind: 'ConfigMap', metadata: meta, data: { a: '1' } };
    const rv1 = (await ssa(cm)).metadata!.resourceVersion!;
    // With the current version the write goes through, and every write moves the version on.
    const rv2 = (await ssa({ ...cm, metadata: { ...meta, resourceVersion: rv1 }, data: { a: '2' } })).metadata!
      .resourceVersion!;
    expect(rv2).not.toBe(rv1);
    const conflict = { code: 409, body: expect.stringMatching(/"kind":"Status".*"reason":"Conflict"/) };
    await expect(
      ssa({ ...cm, metadata: { ...meta, resourceVersion: rv1 }, data: { a: 'stale' } }),
    ).rejects.toMatchObject(conflict);
    await expect(
      objects.patch(
        { ...cm, metadata: { ...meta, resourceVersion: rv1 }, data: { a: 'stale' } },
        undefined,
        undefined,
        'kubectl',
        undefined,
        PatchStrategy.MergePatch,
      ),
    ).rejects.toMatchObject(conflict);
    await expect(
      core.replaceNamespacedConfigMap({
        ...meta,
        body: { metadata: { ...meta, resourceVersion: rv1 }, data: { a: 'stale' } },
      }),
    ).rejects.toMatchObject(conflict);
    expect(api.get('v1', 'ConfigMap', 'agents', 'rv')).toMatchObject({
      data: { a: '2' },
      metadata: { resourceVersion: rv2 },
    });
    // Without a resourceVersion a write is unconditional.
    const rv3 = (await ssa({ ...cm, data: { a: '3' } })).metadata!.resourceVersion!;
    expect(rv3).not.toBe(rv2);

    // The status subresource: the object's version covers spec and status alike.
    const custom = kc.makeApiClient(CustomObjectsApi);
    const g = { group: 'pgwarden.dev', version: 'v1alpha1', namespace: 'agents', plural: 'databaseaccesspolicies' };
    const p = await custom.createNamespacedCustomObject({ ...g, body: dap('rv', {}) });
    await custom.patchNamespacedCustomObject(
      { ...g, name: 'rv', body: { spec: { database: { host: 'db2', name: 'app' } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    const status = (resourceVersion: string) =>
      custom.patchNamespacedCustomObjectStatus(
        {
          ...g,
          name: 'rv',
          body: { ...dap('rv', {}), metadata: { name: 'rv', namespace: 'agents', resourceVersion }, status: {} },
          fieldManager: 'pgwarden',
          force: true,
        },
        setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply),
      );
    await expect(status(p.metadata.resourceVersion)).rejects.toMatchObject(conflict);
  });

  it('serves discovery, Events and JSON patches on MutatingWebhookConfigurations', async () => {
    const objects = KubernetesObjectApi.makeApiClient(kc);
    const ev = await objects.create({
      apiVersion: 'events.k8s.io/v1',
      kind: 'Event',
      metadata: { generateName: 'p.', namespace: 'agents' },
      reason: 'Rendered',
    } as any);
    expect(ev.metadata?.name).toMatch(/^p\./);
    api.seed({
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'MutatingWebhookConfiguration',
      metadata: { name: 'pgwarden' },
      webhooks: [{ name: 'pods.pgwarden.dev', clientConfig: {} }],
    });
    const res = await fetch(`${api.url}/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/pgwarden`, {
      method: 'PATCH',
      headers: { 'content-type': 'application/json-patch+json' },
      body: JSON.stringify([{ op: 'add', path: '/webhooks/0/clientConfig/caBundle', value: 'Q0E=' }]),
    });
    expect(res.status).toBe(200);
    expect((await res.json()).webhooks[0].clientConfig.caBundle).toBe('Q0E=');
  });
  it('refuses ConfigMaps over 1 MiB of data and updates of an immutable ConfigMap (422), as the real server does', async () => {
    const core = kc.makeApiClient(CoreV1Api);
    const objects = KubernetesObjectApi.makeApiClient(kc);
    // The limit counts key lengths plus value bytes: 1 MiB exactly is accepted, one byte more is not.
    const exact = 'x'.repeat(1024 * 1024 - 'k'.length);
    await core.createNamespacedConfigMap({
      namespace: 'agents',
      body: { metadata: { name: 'big' }, data: { k: exact } },
    });
    const over = core.createNamespacedConfigMap({
      namespace: 'agents',
      body: { metadata: { name: 'big2' }, data: { k: `${exact}y` } },
    });
    await expect(over).rejects.toMatchObject({ code: 422 });
    await expect(over).rejects.toThrow(/Too long: must have at most 1048576 bytes/);
    const apply = (name: string, data: Record<string, string>) =>
      objects.patch(
        { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace: 'agents' }, data } as any,
        undefined,
        undefined,
        'tester',
        true,
        PatchStrategy.ServerSideApply,
      );
    await expect(apply('big', { k: `${exact}y` })).rejects.toMatchObject({ code: 422 });

    await core.createNamespacedConfigMap({
      namespace: 'agents',
      body: { metadata: { name: 'frozen' }, data: { a: '1' }, immutable: true },
    });
    const frozen = apply('frozen', { a: '2' });
    await expect(frozen).rejects.toMatchObject({ code: 422 });
    await expect(frozen).rejects.toThrow(/data: Forbidden: field is immutable when `immutable` is set/);
    // Metadata stays writable; the flag itself cannot be cleared; delete and recreate is the way out.
    await objects.patch(
      {
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: { name: 'frozen', namespace: 'agents', labels: { l: 'v' } },
      } as any,
      undefined,
      undefined,
      'tester',
      undefined,
      PatchStrategy.MergePatch,
    );
    await expect(
      objects.patch(
        {
          apiVersion: 'v1',
          kind: 'ConfigMap',
          metadata: { name: 'frozen', namespace: 'agents' },
          immutable: false,
        } as any,
        undefined,
        undefined,
        'tester',
        undefined,
        PatchStrategy.MergePatch,
      ),
    ).rejects.toMatchObject({ code: 422 });
    await core.deleteNamespacedConfigMap({ namespace: 'agents', name: 'frozen' });
    await core.createNamespacedConfigMap({
      namespace: 'agents',
      body: { metadata: { name: 'frozen' }, data: { a: '2' } },
    });
  });
});
