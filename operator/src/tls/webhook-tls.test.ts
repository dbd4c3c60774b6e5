import { KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OperatorEvents } from '../core/operator-events.js';
import { FakeApiServer } from '../testing/fake-apiserver.js';
import { certificateValidity, signedBy } from './certificates.js';
import { nextTlsState, WebhookTlsManager } from './webhook-tls.js';

const H = 3_600_000;
const opts = {
  caValidityMs: 365 * 24 * H,
  certValidityMs: 24 * H,
  renewBefore: 1 / 3,
  serviceName: 'pgwarden-webhook',
  namespace: 'pgwarden',
};
const certs = (bundle: string) => bundle.match(/BEGIN CERTIFICATE/g)?.length ?? 0;

describe('nextTlsState (pure rotation planning)', () => {
  it('creates a CA and a serving certificate for the Service DNS names, then leaves fresh material alone', async () => {
    const t0 = new Date('2026-01-01T00:00:00Z');
    const s = (await nextTlsState(undefined, opts, t0))!;
    expect(certs(s.caBundle)).toBe(1);
    expect(signedBy(s.cert, s.caBundle)).toBe(true);
    const { X509Certificate } = await import('node:crypto');
    expect(new X509Certificate(s.cert).subjectAltName).toContain('DNS:pgwarden-webhook.pgwarden.svc');
    expect(await nextTlsState(s, opts, new Date(t0.getTime() + 10 * H))).toBeUndefined();
  });

  it('renews the serving certificate once a third of its life remains, under the same CA', async () => {
    const t0 = new Date('2026-01-01T00:00:00Z');
    const s = (await nextTlsState(undefined, opts, t0))!;
    const later = new Date(t0.getTime() + 17 * H);
    const r = (await nextTlsState(s, opts, later))!;
    expect(r.cert).not.toBe(s.cert);
    expect(r.caBundle).toBe(s.caBundle);
    expect(certificateValidity(r.cert).notAfter.getTime()).toBe(later.getTime() + 24 * H);
  });

  it('adds a new CA next to the old one near CA expiry, and drops expired CAs', async () => {
    const t0 = new Date('2026-01-01T00:00:00Z');
    const s = (await nextTlsState(undefined, opts, t0))!;
    const nearCaExpiry = new Date(t0.getTime() + 250 * 24 * H);
    const r = (await nextTlsState(s, opts, nearCaExpiry))!;
    expect(certs(r.caBundle)).toBe(2);
    expect(r.caKey).not.toBe(s.caKey);
    const afterOldExpiry = new Date(t0.getTime() + 366 * 24 * H);
    const z = (await nextTlsState(r, opts, afterOldExpiry))!;
    expect(certs(z.caBundle)).toBe(1);
    expect(signedBy(z.cert, z.caBundle)).toBe(true);
  });

  it('replaces unparsable material instead of trusting it', async () => {
    const bad = { caBundle: 'garbage', caKey: 'x', cert: 'y', key: 'z' };
    const s = (await nextTlsState(bad, opts, new Date()))!;
    expect(signedBy(s.cert, s.caBundle)).toBe(true);
  });
});

describe('WebhookTlsManager leader/follower', () => {
  let api: FakeApiServer;
  let kc: KubeConfig;
  beforeAll(async () => {
    api = new FakeApiServer();
    await api.start();
    kc = new KubeConfig();
    kc.loadFromOptions(api.kubeconfig());
    api.seed({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'pgwarden' } });
    api.seed({
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'MutatingWebhookConfiguration',
      metadata: { name: 'pgwarden' },
      webhooks: [
        { name: 'a.pgwarden.dev', clientConfig: {} },
        { name: 'b.pgwarden.dev', clientConfig: {} },
      ],
    });
  });
  afterAll(() => api.stop());

  it('a follower never writes; it loads what the leader wrote', async () => {
    const base = {
      namespace: 'pgwarden',
      secretName: 'tls',
      serviceName: 'pgwarden-webhook',
      webhookConfigName: 'pgwarden',
    };
    const followerCerts: string[] = [];
    const follower = new WebhookTlsManager(
      kc,
      { ...base, canWrite: () => false, onCertificate: (kp) => followerCerts.push(kp.certPem) },
      new OperatorEvents(),
    );
    await follower.reconcile();
    expect(api.get('v1', 'Secret', 'pgwarden', 'tls')).toBeUndefined();
    expect(followerCerts).toEqual([]);
    const leaderCerts: string[] = [];
    const leader = new WebhookTlsManager(
      kc,
      { ...base, onCertificate: (kp) => leaderCerts.push(kp.certPem) },
      new OperatorEvents(),
    );
    await leader.reconcile();
    await follower.reconcile();
    expect(followerCerts).toEqual(leaderCerts);
    const mwc = api.get('admissionregistration.k8s.io/v1', 'MutatingWebhookConfiguration', undefined, 'pgwarden');
    const bundle = Buffer.from(leader.current!.caBundle).toString('base64');
    expect(mwc.webhooks.map((w: any) => w.clientConfig.caBundle)).toEqual([bundle, bundle]);
    const rv = mwc.metadata.resourceVersion;
    await leader.reconcile(); // nothing to do: no writes
    expect(
      api.get('admissionregistration.k8s.io/v1', 'MutatingWebhookConfiguration', undefined, 'pgwarden').metadata
        .resourceVersion,
    ).toBe(rv);
  });
});
