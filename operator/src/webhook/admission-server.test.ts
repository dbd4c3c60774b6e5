import { request } from 'node:https';
import { KubeConfig } from '@kubernetes/client-node';
import type { DatabaseAccessPolicy } from '@pgwarden/policy';
import { Pod } from 'kubernetes-models/v1';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyJsonPatch } from '../core/json-patch.js';
import { OperatorEvents } from '../core/operator-events.js';
import { FakeApiServer } from '../testing/fake-apiserver.js';
import { certificateValidity } from '../tls/certificates.js';
import { WebhookTlsManager } from '../tls/webhook-tls.js';
import { AdmissionServer } from './admission-server.js';
import { DEFAULT_SIDECAR_CONFIG } from './sidecar-config.js';

const SERVICE_HOST = 'pgwarden-webhook.pgwarden.svc';
let api: FakeApiServer;
let server: AdmissionServer;
let tls: WebhookTlsManager;
let port: number;
let ready = true;
const events = new OperatorEvents();
const issued: string[] = [];

const policies: DatabaseAccessPolicy[] = [
  {
    apiVersion: 'pgwarden.dev/v1alpha1',
    kind: 'DatabaseAccessPolicy',
    metadata: { name: 'analytics', namespace: 'agents' },
    spec: {
      podSelector: { matchLabels: { app: 'analytics' } },
      database: { host: 'db', name: 'orders', credentialsSecretRef: { name: 'creds' } },
    } as DatabaseAccessPolicy['spec'],
  },
];

/** The caBundle as the API server would read it from the MutatingWebhookConfiguration. */
function caBundle(): string {
  const mwc = api.get('admissionregistration.k8s.io/v1', 'MutatingWebhookConfiguration', undefined, 'pgwarden');
  return Buffer.from(mwc.webhooks[0].clientConfig.caBundle, 'base64').toString('utf8');
}

function review(pod: object, uid = crypto.randomUUID()) {
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid,
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      requestKind: { group: '', version: 'v1', kind: 'Pod' },
      requestResource: { group: '', version: 'v1', resource: 'pods' },
      namespace: 'agents',
      operation: 'CREATE',
      userInfo: {
        username: 'system:serviceaccount:kube-system:replicaset-controller',
        groups: ['system:serviceaccounts'],
      },
      object: pod,
      oldObject: null,
      dryRun: false,
      options: { apiVersion: 'meta.k8s.io/v1', kind: 'CreateOptions' },
    },
  };
}

/** A fresh TLS connection per call, verifying the server against the published caBundle and service name. */
function post(body: unknown): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path: '/mutate-pods?timeout=10s',
        method: 'POST',
        ca: caBundle(),
        servername: SERVICE_HOST,
        agent: false,
        headers: { 'content-type': 'application/json' },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString()) }),
        );
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

const agentPod = (extra: object = {}) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { generateName: 'agent-', namespace: 'agents', labels: { app: 'analytics' } },
  spec: { containers: [{ name: 'agent', image: 'python:3.12' }], ...extra },
});

beforeAll(async () => {
  api = new FakeApiServer();
  await api.start();
  api.seed({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'pgwarden' } });
  api.seed({
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'MutatingWebhookConfiguration',
    metadata: { name: 'pgwarden' },
    webhooks: [
      {
        name: 'pods.pgwarden.dev',
        clientConfig: { service: { name: 'pgwarden-webhook', namespace: 'pgwarden', path: '/mutate-pods' } },
      },
    ],
  });
  const kc = new KubeConfig();
  kc.loadFromOptions(api.kubeconfig());
  events.on('tls.issued', (e) => issued.push(e.reason));
  let onCert: (kp: { certPem: string; keyPem: string }) => void = () => {};
  tls = new WebhookTlsManager(
    kc,
    {
      namespace: 'pgwarden',
      secretName: 'pgwarden-webhook-tls',
      serviceName: 'pgwarden-webhook',
      webhookConfigName: 'pgwarden',
      caValidityMs: 7_000,
      certValidityMs: 4_000,
      renewBefore: 0.6,
      checkIntervalMs: 100,
      onCertificate: (kp) => onCert(kp),
    },
    events,
  );
  await tls.reconcile();
  server = new AdmissionServer({
    tls: { certPem: tls.current!.cert, keyPem: tls.current!.key },
    sidecar: DEFAULT_SIDECAR_CONFIG,
    events,
    policies: () => policies,
    ready: () => ready,
  });
  onCert = (kp) => server.setCertificate(kp);
  port = await server.listen(0, '127.0.0.1');
});
afterAll(async () => {
  tls.stop();
  await server.close();
  await api.stop();
});

describe('admission webhook over HTTPS', () => {
  it('stores its TLS material in a Secret and publishes the CA as caBundle', () => {
    const secret = api.get('v1', 'Secret', 'pgwarden', 'pgwarden-webhook-tls');
    expect(secret.type).toBe('kubernetes.io/tls');
    expect(Object.keys(secret.data).sort()).toEqual(['ca.crt', 'ca.key', 'tls.crt', 'tls.key']);
    expect(caBundle()).toContain('BEGIN CERTIFICATE');
  });

  it('injects into a selected pod: the JSONPatch yields a valid pod with the sidecar', async () => {
    const pod = agentPod();
    const req = review(pod, 'uid-1');
    const { status, json } = await post(req);
    expect(status).toBe(200);
    expect(json).toMatchObject({
      apiVersion: 'admission.k8s.io/v1',
      kind: 'AdmissionReview',
      response: { uid: 'uid-1', allowed: true, patchType: 'JSONPatch' },
    });
    const patch = JSON.parse(Buffer.from(json.response.patch, 'base64').toString());
    const out = applyJsonPatch(pod, patch) as any;
    expect(out.spec.initContainers[0]).toMatchObject({ name: 'pgwarden-analytics', restartPolicy: 'Always' });
    expect(() => new Pod(out).validate()).not.toThrow();
  });

  it('refuses unsafe pods with a message, allows unselected pods unchanged, and fails closed before sync', async () => {
    const denied = await post(review(agentPod({ hostPID: true })));
    expect(denied.json.response).toMatchObject({ allowed: false, status: { code: 403 } });
    expect(denied.json.response.status.message).toMatch(/hostPID/);
    const other = agentPod();
    other.metadata.labels = { app: 'web' };
    const allowed = await post(review(other));
    expect(allowed.json.response).toEqual({ uid: expect.any(String), allowed: true });
    ready = false;
    const early = await post(review(agentPod()));
    ready = true;
    expect(early.json.response).toMatchObject({ allowed: false, status: { code: 503 } });
    const bad = await post({ kind: 'Nonsense' });
    expect(bad.status).toBe(400);
  });

  it('refuses over HTTPS an ephemeral container (kubectl debug) that targets the sidecar; allows one that does not', async () => {
    const pod = agentPod();
    const first = await post(review(pod));
    const injected = applyJsonPatch(
      pod,
      JSON.parse(Buffer.from(first.json.response.patch, 'base64').toString()),
    ) as any;
    const debug = (target: string) => {
      const r = review({
        ...injected,
        spec: {
          ...injected.spec,
          ephemeralContainers: [{ name: 'dbg', image: 'busybox', targetContainerName: target }],
        },
      });
      r.request.operation = 'UPDATE';
      (r.request as Record<string, unknown>).subResource = 'ephemeralcontainers';
      return r;
    };
    const refused = await post(debug('pgwarden-analytics'));
    expect(refused.json.response).toMatchObject({ allowed: false, status: { code: 403 } });
    expect(refused.json.response.status.message).toMatch(/targets the pgwarden sidecar "pgwarden-analytics"/);
    const allowed = await post(debug('agent'));
    expect(allowed.json.response).toEqual({ uid: expect.any(String), allowed: true });
  });

  it('rotates serving certificates (and the CA, with overlap) under continuous admissions without a failure', async () => {
    tls.start();
    const firstCert = tls.current!.cert;
    let ok = 0;
    const failures: string[] = [];
    const deadline = Date.now() + 4500;
    const worker = async () => {
      while (Date.now() < deadline) {
        try {
          const { json } = await post(review(agentPod()));
          if (json.response.allowed && json.response.patch) ok++;
          else failures.push(JSON.stringify(json.response));
        } catch (err) {
          failures.push(String(err));
        }
      }
    };
    await Promise.all([worker(), worker(), worker()]);
    expect(failures).toEqual([]);
    expect(ok).toBeGreaterThan(50);
    expect(issued.filter((r) => r === 'rotation').length).toBeGreaterThanOrEqual(2);
    expect(tls.current!.cert).not.toBe(firstCert);
    // The CA was renewed too (renewBefore 0.6 of 7 s): old and new CA both in the bundle during the overlap.
    expect(caBundle().match(/BEGIN CERTIFICATE/g)!.length).toBeGreaterThanOrEqual(2);
    expect(certificateValidity(tls.current!.cert).notAfter.getTime() - Date.now()).toBeLessThan(4_100);
  });
});
