/**
 * What an SRE expects of the chart's workloads before production, rendered by the real `helm template`: restricted
 * pods, resources, probes on ports the containers declare, no API token where nothing calls the API, a disruption
 * budget and spread for the replicated webhook, and placement knobs that reach every pod.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { helm, renderChart, validateKubernetesObject } from '../testing/helm-chart.js';

const WORKLOADS = new Set(['Deployment', 'StatefulSet', 'DaemonSet', 'Job']);
const workloads = (objects: any[]) => objects.filter((o) => WORKLOADS.has(o.kind));
const byName = (objects: any[], kind: string, suffix: string) =>
  objects.find((o) => o.kind === kind && o.metadata.name.endsWith(suffix));

const placement = {
  priorityClassName: 'pgwarden-critical',
  nodeSelector: { pool: 'infra' },
  tolerations: [{ key: 'dedicated', operator: 'Equal', value: 'infra', effect: 'NoSchedule' }],
  affinity: {
    nodeAffinity: {
      requiredDuringSchedulingIgnoredDuringExecution: {
        nodeSelectorTerms: [{ matchExpressions: [{ key: 'zone', operator: 'Exists' }] }],
      },
    },
  },
};
const production = {
  imagePullSecrets: [{ name: 'registry' }],
  operator: placement,
  collector: { ...placement, storageClassName: 'fast-ssd' },
  nats: { ...placement, storageClassName: 'fast-ssd' },
};

beforeAll(async () => {
  await helm();
}, 150_000);

describe('charts/pgwarden workloads, production checklist', () => {
  it.each([
    ['defaults', {}],
    ['production placement', production],
    [
      'external NATS, certManager',
      { audit: { natsUrl: 'nats://nats.infra:4222' }, webhook: { tls: { mode: 'certManager' } } },
    ],
  ])('%s: every pod restricted, sized and probed on a port it declares', async (_, values) => {
    const objects = await renderChart(values);
    const pods = workloads(objects);
    expect(pods.map((w) => w.metadata.name).sort()).toEqual(
      (values as any).audit
        ? ['pgw-pgwarden-collector', 'pgw-pgwarden-operator']
        : ['pgw-pgwarden-collector', 'pgw-pgwarden-nats', 'pgw-pgwarden-operator'],
    );
    for (const w of pods) {
      const spec = w.spec.template.spec;
      expect(spec.securityContext, w.metadata.name).toMatchObject({
        runAsNonRoot: true,
        seccompProfile: { type: 'RuntimeDefault' },
      });
      for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
        const where = `${w.metadata.name}/${c.name}`;
        expect(c.securityContext, where).toMatchObject({
          runAsNonRoot: true,
          readOnlyRootFilesystem: true,
          allowPrivilegeEscalation: false,
          capabilities: { drop: ['ALL'] },
          seccompProfile: { type: 'RuntimeDefault' },
        });
        expect(c.resources?.requests, where).toMatchObject({ cpu: expect.anything(), memory: expect.anything() });
        expect(c.resources?.limits?.memory, where).toBeDefined();
        const ports = new Set(c.ports.map((p: any) => p.name));
        for (const probe of ['readinessProbe', 'livenessProbe']) {
          expect(c[probe]?.httpGet, `${where} ${probe}`).toBeDefined();
          expect(ports, `${where} ${probe} port`).toContain(c[probe].httpGet.port);
        }
      }
      // Only the operator talks to the Kubernetes API; a token elsewhere is a credential for whoever gets in.
      const sa = objects.find((o) => o.kind === 'ServiceAccount' && o.metadata.name === spec.serviceAccountName);
      const automount = spec.automountServiceAccountToken ?? sa?.automountServiceAccountToken ?? true;
      expect(automount, w.metadata.name).toBe(w.metadata.name.endsWith('-operator'));
    }
    for (const o of objects) await validateKubernetesObject(o);
  });

  it('gives every pod the pull secrets, and each component its priority, node selector, tolerations and affinity', async () => {
    const objects = await renderChart(production);
    for (const w of workloads(objects)) {
      expect(w.spec.template.spec, w.metadata.name).toMatchObject({
        imagePullSecrets: [{ name: 'registry' }],
        ...placement,
      });
    }
    for (const name of ['-collector', '-nats']) {
      const claim = byName(objects, 'StatefulSet', name).spec.volumeClaimTemplates[0];
      expect(claim.spec.storageClassName, name).toBe('fast-ssd');
    }
    for (const w of workloads(await renderChart())) {
      const spec = w.spec.template.spec;
      for (const key of ['imagePullSecrets', 'priorityClassName', 'nodeSelector', 'tolerations', 'affinity'])
        expect(spec[key], `${w.metadata.name} ${key}`).toBeUndefined();
      for (const claim of w.spec.volumeClaimTemplates ?? []) expect(claim.spec.storageClassName).toBeUndefined();
    }
  });

  it('spreads the webhook replicas over nodes and keeps one through a drain; one replica has no budget to block it', async () => {
    const objects = await renderChart();
    const operator = byName(objects, 'Deployment', '-operator');
    expect(operator.spec.replicas).toBe(2);
    const labels = operator.spec.template.metadata.labels;
    expect(operator.spec.template.spec.topologySpreadConstraints).toEqual([
      {
        maxSkew: 1,
        topologyKey: 'kubernetes.io/hostname',
        whenUnsatisfiable: 'ScheduleAnyway',
        labelSelector: { matchLabels: labels },
      },
    ]);
    const pdb = byName(objects, 'PodDisruptionBudget', '-operator');
    expect(pdb.spec).toEqual({ minAvailable: 1, selector: { matchLabels: labels } });
    // A PDB of minAvailable 1 over one replica would block every node drain.
    expect((await renderChart({ operator: { replicas: 1 } })).some((o) => o.kind === 'PodDisruptionBudget')).toBe(
      false,
    );
    // A constraint given with its own selector keeps it; zones instead of nodes, hard.
    const zoned = await renderChart({
      operator: {
        topologySpreadConstraints: [
          {
            maxSkew: 1,
            topologyKey: 'topology.kubernetes.io/zone',
            whenUnsatisfiable: 'DoNotSchedule',
            labelSelector: { matchLabels: { team: 'x' } },
          },
        ],
      },
    });
    expect(byName(zoned, 'Deployment', '-operator').spec.template.spec.topologySpreadConstraints[0]).toMatchObject({
      topologyKey: 'topology.kubernetes.io/zone',
      labelSelector: { matchLabels: { team: 'x' } },
    });
    expect(
      byName(await renderChart({ operator: { topologySpreadConstraints: [] } }), 'Deployment', '-operator').spec
        .template.spec.topologySpreadConstraints,
    ).toBeUndefined();
  });

  it('collector.replicas above 1 with a PostgreSQL store; refused with the embedded store, which each replica has alone', async () => {
    const collector = byName(
      await renderChart({ collector: { replicas: 3, storeSecret: 'collector-store' } }),
      'StatefulSet',
      '-collector',
    );
    expect(collector.spec.replicas).toBe(3);
    const c = collector.spec.template.spec.containers[0];
    expect(c.env).toContainEqual({
      name: 'PGWARDEN_COLLECTOR_STORE',
      valueFrom: { secretKeyRef: { name: 'collector-store', key: 'url' } },
    });
    // Every replica consumes through the same durable (the default name): JetStream hands each event to one of them.
    expect(c.args.some((a: string) => a.startsWith('--durable'))).toBe(false);
    await expect(renderChart({ collector: { replicas: 2 } })).rejects.toThrow(
      /collector.replicas=2 needs collector.storeSecret \(a PostgreSQL store\): the embedded store lives on each replica's own volume/,
    );
    expect(byName(await renderChart({ collector: { replicas: 0 } }), 'StatefulSet', '-collector').spec.replicas).toBe(
      0,
    );
  });

  it('pins every image by digest when given one (image.digest, nats.image.digest); a tag-only image stays as it was', async () => {
    const d1 = `sha256:${'1'.repeat(64)}`;
    const d2 = `sha256:${'2'.repeat(64)}`;
    const objects = await renderChart({ image: { digest: d1 }, nats: { image: { digest: d2 } } });
    const images = workloads(objects).flatMap((w) => w.spec.template.spec.containers.map((c: any) => c.image));
    expect(images.sort()).toEqual([
      `ghcr.io/pgwarden/pgwarden:0.1.0@${d1}`,
      `ghcr.io/pgwarden/pgwarden:0.1.0@${d1}`,
      `nats:2.10-alpine@${d2}`,
    ]);
    // The sidecars the operator injects: the same pinned image.
    expect(byName(objects, 'Deployment', '-operator').spec.template.spec.containers[0].args).toContain(
      `--sidecar-image=ghcr.io/pgwarden/pgwarden:0.1.0@${d1}`,
    );
    expect(byName(await renderChart(), 'StatefulSet', '-nats').spec.template.spec.containers[0].image).toBe(
      'nats:2.10-alpine',
    );
    // nats.image as a reference string, as before it took an object.
    const legacy = await renderChart({ nats: { image: `registry.local/nats:2.10@${d2}` } });
    expect(byName(legacy, 'StatefulSet', '-nats').spec.template.spec.containers[0].image).toBe(
      `registry.local/nats:2.10@${d2}`,
    );
    await expect(renderChart({ image: { digest: 'latest' } })).rejects.toThrow(/image\/digest/);
  });

  it('gives the bundled NATS resources, a liveness probe that spares a recovering JetStream, and no API token', async () => {
    const nats = byName(await renderChart(), 'StatefulSet', '-nats');
    const spec = nats.spec.template.spec;
    expect(spec.automountServiceAccountToken).toBe(false);
    expect(spec.containers[0].livenessProbe.httpGet).toEqual({
      path: '/healthz?js-enabled-only=true',
      port: 'monitor',
    });
    expect(spec.containers[0].readinessProbe.httpGet).toEqual({ path: '/healthz', port: 'monitor' });
    expect(spec.containers[0].resources).toEqual({
      requests: { cpu: '50m', memory: '128Mi' },
      limits: { memory: '512Mi' },
    });
  });
  it('webhook: fails closed for opted-in namespaces only, never for kube-system or its own namespace, whatever their labels', async () => {
    const objects = await renderChart({}, 'platform');
    const [hook] = byName(objects, 'MutatingWebhookConfiguration', 'pgwarden').webhooks;
    expect(hook).toMatchObject({
      failurePolicy: 'Fail',
      sideEffects: 'None',
      timeoutSeconds: 10,
      reinvocationPolicy: 'IfNeeded',
      objectSelector: {
        matchExpressions: [{ key: 'app.kubernetes.io/component', operator: 'NotIn', values: ['operator'] }],
      },
    });
    // The operator writes caBundle (tls.mode self): a rendered one would be put back on every upgrade.
    expect(hook.clientConfig.caBundle).toBeUndefined();
    const never = {
      key: 'kubernetes.io/metadata.name',
      operator: 'NotIn',
      values: ['kube-system', 'kube-public', 'kube-node-lease', 'platform'],
    };
    expect(hook.namespaceSelector).toEqual({
      matchLabels: { 'pgwarden.dev/injection': 'enabled' },
      matchExpressions: [never],
    });

    // A selector of one's own keeps its expressions (Helm merges it with the default's matchLabels); the exclusion is
    // added to them.
    const own = { matchExpressions: [{ key: 'team', operator: 'In', values: ['agents'] }] };
    const custom = await renderChart(
      { webhook: { namespaceSelector: own, excludeNamespaces: ['kube-system', 'platform'] } },
      'platform',
    );
    expect(byName(custom, 'MutatingWebhookConfiguration', 'pgwarden').webhooks[0].namespaceSelector).toEqual({
      matchLabels: { 'pgwarden.dev/injection': 'enabled' },
      matchExpressions: [...own.matchExpressions, { ...never, values: ['kube-system', 'platform'] }],
    });
    await expect(renderChart({ webhook: { excludeNamespaces: ['Kube_System'] } })).rejects.toThrow(/excludeNamespaces/);
  });

  it('webhook TLS: cert-manager injects the CA and renews before expiry; the self-managed operator may patch only its own configuration', async () => {
    const cm = await renderChart({ webhook: { tls: { mode: 'certManager' } } });
    const mwc = byName(cm, 'MutatingWebhookConfiguration', 'pgwarden');
    expect(mwc.metadata.annotations['cert-manager.io/inject-ca-from']).toBe('pgwarden/pgw-pgwarden-webhook');
    const cert = cm.find((o) => o.kind === 'Certificate' && o.metadata.name === 'pgw-pgwarden-webhook');
    expect(cert.spec).toMatchObject({ secretName: 'pgw-pgwarden-webhook-tls', duration: '720h', renewBefore: '240h' });
    expect(cert.spec.dnsNames).toContain('pgw-pgwarden-webhook.pgwarden.svc');
    const cmRole = byName(cm, 'ClusterRole', '-operator');
    expect(cmRole.rules.some((r: any) => r.resources.includes('mutatingwebhookconfigurations'))).toBe(false);

    const self = await renderChart();
    expect(byName(self, 'ClusterRole', '-operator').rules).toContainEqual({
      apiGroups: ['admissionregistration.k8s.io'],
      resources: ['mutatingwebhookconfigurations'],
      resourceNames: ['pgw-pgwarden'],
      verbs: ['get', 'patch'],
    });
    expect(self.some((o) => o.apiVersion.startsWith('cert-manager.io'))).toBe(false);
  });
  it('networkPolicy.enabled: the webhook port, metrics from the release namespace, the collector API from it, NATS from the collector and opted-in namespaces', async () => {
    expect((await renderChart()).some((o) => o.kind === 'NetworkPolicy')).toBe(false);
    const prometheus = { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } };
    const ingress = { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'ingress-nginx' } } };
    const apiServer = { ipBlock: { cidr: '10.0.0.0/24' } };
    const objects = await renderChart({
      networkPolicy: { enabled: true, metricsFrom: [prometheus], collectorFrom: [ingress] },
    });
    const policies = objects.filter((o) => o.kind === 'NetworkPolicy');
    for (const p of policies) expect(await validateKubernetesObject(p)).toBe(true);
    const of = (component: string) => policies.find((p) => p.metadata.name === `pgw-pgwarden-${component}`).spec;
    const podsOf = (component: string) =>
      workloads(objects).find((w) => w.metadata.name === `pgw-pgwarden-${component}`).spec.template.metadata.labels;
    const release = { podSelector: {} };
    for (const component of ['operator', 'collector', 'nats']) {
      expect(of(component).podSelector, component).toEqual({ matchLabels: podsOf(component) });
      expect(of(component).policyTypes, component).toEqual(['Ingress']);
    }
    expect(of('operator').ingress).toEqual([
      { ports: [{ port: 'webhook', protocol: 'TCP' }] },
      { ports: [{ port: 'metrics', protocol: 'TCP' }], from: [release, prometheus] },
    ]);
    expect(of('collector').ingress).toEqual([
      { ports: [{ port: 'http', protocol: 'TCP' }], from: [release, ingress, prometheus] },
    ]);
    expect(of('nats').ingress).toEqual([
      {
        ports: [{ port: 'client', protocol: 'TCP' }],
        from: [
          { podSelector: { matchLabels: podsOf('collector') } },
          { namespaceSelector: { matchLabels: { 'pgwarden.dev/injection': 'enabled' } } },
        ],
      },
    ]);
    // Every port a rule names is a port the selected pods declare.
    for (const component of ['operator', 'collector', 'nats']) {
      const declared = workloads(objects)
        .find((w) => w.metadata.name === `pgw-pgwarden-${component}`)
        .spec.template.spec.containers.flatMap((c: any) => c.ports.map((p: any) => p.name));
      for (const rule of of(component).ingress)
        for (const p of rule.ports) expect(declared, component).toContain(p.port);
    }

    const pinned = await renderChart({
      networkPolicy: { enabled: true, webhookFrom: [apiServer] },
      audit: { natsUrl: 'nats://nats.infra:4222' },
    });
    const nps = pinned.filter((o) => o.kind === 'NetworkPolicy');
    expect(nps.map((p) => p.metadata.name).sort()).toEqual(['pgw-pgwarden-collector', 'pgw-pgwarden-operator']);
    expect(nps.find((p) => p.metadata.name.endsWith('-operator')).spec.ingress[0]).toEqual({
      ports: [{ port: 'webhook', protocol: 'TCP' }],
      from: [apiServer],
    });
    await expect(renderChart({ networkPolicy: { enabled: true, natsFrom: [{ pods: {} }] } })).rejects.toThrow(
      /natsFrom/,
    );
    await expect(renderChart({ networkPolicy: { enable: true } })).rejects.toThrow(/enable/);
  });
});
