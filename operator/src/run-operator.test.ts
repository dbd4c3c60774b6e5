import { mkdtempSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningOperator, runOperator } from './run-operator.js';
import { FakeApiServer } from './testing/fake-apiserver.js';
import { createCA, issueServingCertificate } from './tls/certificates.js';
import { DEFAULT_SIDECAR_CONFIG } from './webhook/sidecar-config.js';

let api: FakeApiServer;
let op: RunningOperator;

async function until<T>(fn: () => T | undefined, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 25));
  }
}

beforeAll(async () => {
  api = new FakeApiServer();
  await api.start();
  for (const ns of ['pgwarden', 'agents']) api.seed({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
  api.seed({
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'MutatingWebhookConfiguration',
    metadata: { name: 'pgwarden' },
    webhooks: [
      { name: 'pods.pgwarden.dev', clientConfig: { service: { name: 'pgwarden-webhook', namespace: 'pgwarden' } } },
    ],
  });
  const kc = new KubeConfig();
  kc.loadFromOptions(api.kubeconfig());
  op = await runOperator(
    {
      namespace: 'pgwarden',
      leaderElection: true,
      leaseName: 'pgwarden-operator',
      webhook: {
        enabled: true,
        port: 0,
        tls: 'self',
        secretName: 'pgwarden-webhook-tls',
        serviceName: 'pgwarden-webhook',
        configName: 'pgwarden',
      },
      metricsPort: 0,
      sidecar: DEFAULT_SIDECAR_CONFIG,
      rollout: 'Workload',
      resyncMs: 60_000,
      kubeconfig: kc,
    },
    pino({ level: 'silent' }),
  );
});
afterAll(async () => {
  await op?.stop();
  await api?.stop();
});

describe('runOperator (the `pgwarden operator run` process) against the fake API server', () => {
  it('takes the Lease, renders policies, serves the webhook with its own CA, and exports metrics', async () => {
    await until(
      () => api.get('coordination.k8s.io/v1', 'Lease', 'pgwarden', 'pgwarden-operator')?.spec?.holderIdentity,
    );
    api.seed({
      apiVersion: 'pgwarden.dev/v1alpha1',
      kind: 'DatabaseAccessPolicy',
      metadata: { name: 'analytics', namespace: 'agents' },
      spec: { podSelector: { matchLabels: { app: 'analytics' } }, database: { host: 'db', name: 'orders' } },
    });
    await until(() => api.get('v1', 'ConfigMap', 'agents', 'pgwarden-analytics'));
    await until(
      () => api.get('pgwarden.dev/v1alpha1', 'DatabaseAccessPolicy', 'agents', 'analytics')?.status?.renderedHash,
    );

    const mwc = api.get('admissionregistration.k8s.io/v1', 'MutatingWebhookConfiguration', undefined, 'pgwarden');
    const ca = Buffer.from(mwc.webhooks[0].clientConfig.caBundle, 'base64').toString();
    const review = {
      apiVersion: 'admission.k8s.io/v1',
      kind: 'AdmissionReview',
      request: {
        uid: 'u-1',
        resource: { group: '', version: 'v1', resource: 'pods' },
        operation: 'CREATE',
        namespace: 'agents',
        object: {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { generateName: 'a-', labels: { app: 'analytics' } },
          spec: { containers: [{ name: 'a', image: 'x' }] },
        },
      },
    };
    const answer: any = await new Promise((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port: op.webhookPort,
          path: '/mutate-pods',
          method: 'POST',
          ca,
          servername: 'pgwarden-webhook.pgwarden.svc',
        },
        (res) => {
          let text = '';
          res.on('data', (c) => (text += c));
          res.on('end', () => resolve(JSON.parse(text)));
        },
      );
      req.on('error', reject);
      req.end(JSON.stringify(review));
    });
    expect(answer.response).toMatchObject({ uid: 'u-1', allowed: true, patchType: 'JSONPatch' });

    const metrics = await (await fetch(`http://127.0.0.1:${op.metricsPort}/metrics`)).text();
    expect(metrics).toMatch(/pgwarden_operator_reconcile_total\{result="ok"\} [1-9]/);
    expect(metrics).toMatch(/pgwarden_operator_admissions_total\{result="injected"\} 1/);
    expect(metrics).toMatch(/pgwarden_operator_leader 1/);
    expect((await fetch(`http://127.0.0.1:${op.metricsPort}/readyz`)).status).toBe(200);
  });

  it('mounts the HMAC key Secrets of a MaskingRule into the sidecar, and rolls workloads when a rule adds one', async () => {
    await until(
      () => api.get('coordination.k8s.io/v1', 'Lease', 'pgwarden', 'pgwarden-operator')?.spec?.holderIdentity,
    );
    const annotation = () =>
      api.get('apps/v1', 'Deployment', 'agents', 'keyed-agent')?.spec.template.metadata.annotations?.[
        'pgwarden.dev/sidecar-hash'
      ];
    api.seed({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'keyed-agent', namespace: 'agents' },
      spec: {
        selector: { matchLabels: { app: 'keyed' } },
        template: {
          metadata: { labels: { app: 'keyed' }, annotations: { 'pgwarden.dev/sidecar-hash': 'sha256:old' } },
          spec: { containers: [{ name: 'a', image: 'x' }] },
        },
      },
    });
    api.seed({
      apiVersion: 'pgwarden.dev/v1alpha1',
      kind: 'DatabaseAccessPolicy',
      metadata: { name: 'keyed', namespace: 'agents' },
      spec: { podSelector: { matchLabels: { app: 'keyed' } }, database: { host: 'db', name: 'orders' } },
    });
    const before = await until(() => (annotation() !== 'sha256:old' ? annotation() : undefined));
    api.seed({
      apiVersion: 'pgwarden.dev/v1alpha1',
      kind: 'MaskingRule',
      metadata: { name: 'pii', namespace: 'agents' },
      spec: {
        policies: ['keyed'],
        columns: [
          {
            table: 'customers',
            column: 'name',
            strategy: { type: 'hash', keySecretRef: { name: 'pii-key', key: 'hmac' } },
          },
        ],
      },
    });
    // The rule reached the ConfigMap (sidecars hot-reload it) and, since their pods lack the key, the workload rolls.
    await until(() => api.get('v1', 'ConfigMap', 'agents', 'pgwarden-keyed')?.data['policy.json'].includes('pii-key'));
    const after = await until(() => (annotation() !== before ? annotation() : undefined));

    const answer = await admit(op.webhookPort, {
      metadata: { generateName: 'k-', labels: { app: 'keyed' } },
      spec: { containers: [{ name: 'a', image: 'x' }] },
    });
    expect(answer.response).toMatchObject({ allowed: true, patchType: 'JSONPatch' });
    const patch = JSON.parse(Buffer.from(answer.response.patch, 'base64').toString());
    const sidecar = patch.find((o: any) => o.path === '/spec/initContainers').value[0];
    expect(sidecar.env).toContainEqual({ name: 'PGWARDEN_MASKING_KEYS_DIR', value: '/etc/pgwarden/masking-keys' });
    expect(sidecar.volumeMounts).toContainEqual({
      name: 'pgw-mkeys-keyed',
      mountPath: '/etc/pgwarden/masking-keys',
      readOnly: true,
    });
    expect(patch.find((o: any) => o.path === '/spec/volumes').value).toContainEqual({
      name: 'pgw-mkeys-keyed',
      projected: {
        defaultMode: 0o444,
        sources: [{ secret: { name: 'pii-key', items: [{ key: 'hmac', path: 'pii-key/hmac' }] } }],
      },
    });
    const marks = patch.find((o: any) => o.path === '/metadata/annotations').value;
    expect(marks['pgwarden.dev/sidecar-hash']).toBe(after);
  });
});

/** One AdmissionReview for a pod in namespace agents, over HTTPS verified against the published caBundle. */
async function admit(port: number, pod: Record<string, any>): Promise<any> {
  const mwc = api.get('admissionregistration.k8s.io/v1', 'MutatingWebhookConfiguration', undefined, 'pgwarden');
  const ca = Buffer.from(mwc.webhooks[0].clientConfig.caBundle, 'base64').toString();
  const review = {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: crypto.randomUUID(),
      resource: { group: '', version: 'v1', resource: 'pods' },
      operation: 'CREATE',
      namespace: 'agents',
      object: { apiVersion: 'v1', kind: 'Pod', ...pod },
    },
  };
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path: '/mutate-pods',
        method: 'POST',
        ca,
        servername: 'pgwarden-webhook.pgwarden.svc',
      },
      (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve(JSON.parse(text)));
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(review));
  });
}

describe('webhook TLS from files (cert-manager mode)', () => {
  it('serves the mounted certificate and picks up a renewed one without restarting', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgw-webhook-tls-'));
    const ca = await createCA('test-ca', 3_600_000);
    const write = async () => {
      const c = await issueServingCertificate(ca, ['pgwarden-webhook.pgwarden.svc'], 3_600_000);
      writeFileSync(join(dir, 'tls.key'), c.keyPem);
      writeFileSync(join(dir, 'tls.crt'), c.certPem);
      return c.certPem;
    };
    const first = await write();
    const kc = new KubeConfig();
    kc.loadFromOptions(api.kubeconfig());
    const files = await runOperator(
      {
        namespace: 'pgwarden',
        leaderElection: false,
        leaseName: 'unused',
        webhook: {
          enabled: true,
          port: 0,
          tls: 'files',
          certDir: dir,
          certReloadMs: 50,
          secretName: 'x',
          serviceName: 'x',
          configName: 'x',
        },
        metricsPort: 0,
        sidecar: DEFAULT_SIDECAR_CONFIG,
        rollout: 'None',
        resyncMs: 60_000,
        kubeconfig: kc,
      },
      pino({ level: 'silent' }),
    );
    const served = () =>
      new Promise<string>((resolve, reject) => {
        const s = connect(
          { host: '127.0.0.1', port: files.webhookPort!, ca: ca.certPem, servername: 'pgwarden-webhook.pgwarden.svc' },
          () => {
            resolve(s.getPeerX509Certificate()!.toString());
            s.end();
          },
        );
        s.on('error', reject);
      });
    try {
      const { X509Certificate } = await import('node:crypto');
      expect(await served()).toBe(new X509Certificate(first).toString());
      await new Promise((r) => setTimeout(r, 20)); // a distinct mtime
      const second = await write();
      const want = new X509Certificate(second).toString();
      const end = Date.now() + 5000;
      let got = await served();
      while (Date.now() < end && got !== want) {
        await new Promise((r) => setTimeout(r, 50));
        got = await served();
      }
      expect(got).toBe(want);
    } finally {
      await files.stop();
    }
  });
});
