/**
 * Keeps the webhook's TLS material in a Secret and the MutatingWebhookConfiguration's caBundle in step with it.
 *
 * Rotation without failed admissions: the CA outlives serving certificates by far; when the CA nears expiry a new
 * one is added to the bundle next to the old one (both trusted), and only the following serving-certificate renewal
 * is signed by it. Serving certificates are renewed once `renewBefore` of their lifetime remains, and the HTTPS
 * server swaps its SecureContext in place (new handshakes get the new certificate, open connections keep theirs).
 */
import {
  AdmissionregistrationV1Api,
  CoreV1Api,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1Secret,
} from '@kubernetes/client-node';
import type { OperatorEvents } from '../core/operator-events.js';
import {
  certificateValidity,
  createCA,
  type IssuedCertificate,
  issueServingCertificate,
  type KeyPairPem,
  serviceDnsNames,
  signedBy,
} from './certificates.js';

export interface WebhookTlsOptions {
  namespace: string;
  secretName: string;
  serviceName: string;
  webhookConfigName: string;
  caValidityMs?: number;
  certValidityMs?: number;
  /** Renew when this fraction of the lifetime remains. */
  renewBefore?: number;
  checkIntervalMs?: number;
  /** Only the leader writes the Secret and caBundle; others load what it wrote. */
  canWrite?: () => boolean;
  onCertificate: (kp: KeyPairPem) => void;
  now?: () => Date;
}

export interface TlsState {
  caBundle: string; // PEM, newest CA first
  caKey: string; // newest CA's key
  cert: string;
  key: string;
}

const DAY = 86_400_000;

function splitPem(bundle: string): string[] {
  return bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

function needsRenewal(pem: string, now: Date, fraction: number): boolean {
  const { notBefore, notAfter } = certificateValidity(pem);
  const life = notAfter.getTime() - notBefore.getTime();
  return notAfter.getTime() - now.getTime() < life * fraction;
}

/** Pure planning: what the next TLS state must be, or undefined when the current one is fine. */
export async function nextTlsState(
  current: TlsState | undefined,
  opts: Required<
    Pick<WebhookTlsOptions, 'caValidityMs' | 'certValidityMs' | 'renewBefore' | 'serviceName' | 'namespace'>
  >,
  now: Date,
): Promise<TlsState | undefined> {
  let cas = current ? splitPem(current.caBundle).filter((c) => stillValid(c, now)) : [];
  let caKey = current?.caKey;
  let changed = false;
  if (!current || cas.length === 0 || !caKey || needsRenewal(cas[0], now, opts.renewBefore)) {
    const ca = await createCA('pgwarden-webhook-ca', opts.caValidityMs, now);
    cas = [ca.certPem, ...cas];
    caKey = ca.keyPem;
    changed = true;
  }
  const newest = cas[0];
  let cert = current?.cert;
  let key = current?.key;
  const trusted = cert ? cas.some((ca) => safeSignedBy(cert!, ca)) : false;
  if (!cert || !key || !trusted || needsRenewal(cert, now, opts.renewBefore)) {
    const issued: IssuedCertificate = await issueServingCertificate(
      { certPem: newest, keyPem: caKey },
      serviceDnsNames(opts.serviceName, opts.namespace),
      opts.certValidityMs,
      now,
    );
    cert = issued.certPem;
    key = issued.keyPem;
    changed = true;
  }
  const caBundle = cas.join('\n');
  if (!changed && caBundle === current?.caBundle) return undefined;
  return { caBundle, caKey, cert, key };
}

function stillValid(pem: string, now: Date): boolean {
  try {
    return certificateValidity(pem).notAfter > now;
  } catch {
    return false; // unparsable material is replaced, never trusted
  }
}

function safeSignedBy(cert: string, ca: string): boolean {
  try {
    return signedBy(cert, ca);
  } catch {
    return false;
  }
}

export class WebhookTlsManager {
  private readonly core: CoreV1Api;
  private readonly admission: AdmissionregistrationV1Api;
  private timer?: NodeJS.Timeout;
  private loaded?: string;
  current?: TlsState;

  constructor(
    kc: KubeConfig,
    private readonly opts: WebhookTlsOptions,
    private readonly events: OperatorEvents,
  ) {
    this.core = kc.makeApiClient(CoreV1Api);
    this.admission = kc.makeApiClient(AdmissionregistrationV1Api);
  }

  start(): void {
    const tick = () => {
      this.reconcile()
        .catch((err) => this.events.emit('tls.error', { error: err instanceof Error ? err.message : String(err) }))
        .finally(() => {
          this.timer = setTimeout(tick, this.opts.checkIntervalMs ?? 60_000);
        });
    };
    tick();
  }

  stop(): void {
    clearTimeout(this.timer);
  }

  /** One pass: read the Secret, rotate if due (when allowed to write), load it, publish the caBundle. */
  async reconcile(): Promise<void> {
    const now = this.opts.now?.() ?? new Date();
    const { namespace, secretName } = this.opts;
    let secret: V1Secret | undefined;
    try {
      secret = await this.core.readNamespacedSecret({ namespace, name: secretName });
    } catch (err: any) {
      if (err?.code !== 404) throw err;
    }
    const state = secret ? fromSecret(secret) : undefined;
    const canWrite = this.opts.canWrite?.() ?? true;
    let next = state;
    if (canWrite) {
      const planned = await nextTlsState(
        state,
        {
          caValidityMs: this.opts.caValidityMs ?? 365 * DAY,
          certValidityMs: this.opts.certValidityMs ?? DAY,
          renewBefore: this.opts.renewBefore ?? 1 / 3,
          serviceName: this.opts.serviceName,
          namespace,
        },
        now,
      );
      if (planned) {
        await this.writeSecret(secret, planned);
        next = planned;
        this.events.emit('tls.issued', {
          notAfter: certificateValidity(planned.cert).notAfter.toISOString(),
          reason: state ? 'rotation' : 'initial',
        });
      }
    }
    if (!next) return; // a follower waits for the leader to create the Secret
    // Publish the bundle before serving a certificate that may need it.
    if (canWrite) await this.publishCaBundle(next.caBundle);
    if (this.loaded !== next.cert) {
      this.opts.onCertificate({ certPem: next.cert, keyPem: next.key });
      this.loaded = next.cert;
      if (next === state)
        this.events.emit('tls.issued', {
          notAfter: certificateValidity(next.cert).notAfter.toISOString(),
          reason: 'loaded',
        });
    }
    this.current = next;
  }

  private async writeSecret(existing: V1Secret | undefined, s: TlsState): Promise<void> {
    const b64 = (t: string) => Buffer.from(t).toString('base64');
    const body: V1Secret = {
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'kubernetes.io/tls',
      metadata: {
        name: this.opts.secretName,
        namespace: this.opts.namespace,
        labels: { 'app.kubernetes.io/managed-by': 'pgwarden' },
      },
      data: { 'tls.crt': b64(s.cert), 'tls.key': b64(s.key), 'ca.crt': b64(s.caBundle), 'ca.key': b64(s.caKey) },
    };
    if (!existing) {
      await this.core.createNamespacedSecret({ namespace: this.opts.namespace, body });
      return;
    }
    // Conditional on the version read: two writers cannot silently overwrite each other (409 → retried next tick).
    body.metadata!.resourceVersion = existing.metadata?.resourceVersion;
    await this.core.replaceNamespacedSecret({ namespace: this.opts.namespace, name: this.opts.secretName, body });
  }

  private async publishCaBundle(bundle: string): Promise<void> {
    const want = Buffer.from(bundle).toString('base64');
    const mwc = await this.admission.readMutatingWebhookConfiguration({ name: this.opts.webhookConfigName });
    const ops = (mwc.webhooks ?? []).flatMap((w, i) =>
      w.clientConfig?.caBundle === want
        ? []
        : [{ op: 'add', path: `/webhooks/${i}/clientConfig/caBundle`, value: want }],
    );
    if (ops.length === 0) return;
    await this.admission.patchMutatingWebhookConfiguration(
      { name: this.opts.webhookConfigName, body: ops },
      setHeaderOptions('Content-Type', PatchStrategy.JsonPatch),
    );
  }
}

function fromSecret(s: V1Secret): TlsState | undefined {
  const d = s.data ?? {};
  const get = (k: string) => (d[k] ? Buffer.from(d[k], 'base64').toString('utf8') : '');
  const state = { caBundle: get('ca.crt'), caKey: get('ca.key'), cert: get('tls.crt'), key: get('tls.key') };
  return state.caBundle && state.caKey && state.cert && state.key ? state : undefined;
}
