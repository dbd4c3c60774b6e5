/**
 * The mutating admission webhook over HTTPS: POST /mutate-pods takes an AdmissionReview v1 and answers with a
 * JSONPatch built by mutatePod, or a denial. https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/#request
 * The server's certificate can be replaced at runtime (setCertificate) without dropping requests.
 */
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { DatabaseAccessPolicy, MaskingRule } from '@pgwarden/policy';
import type { OperatorEvents } from '../core/operator-events.js';
import type { KeyPairPem } from '../tls/certificates.js';
import { mutatePod, reviewEphemeralContainers } from './mutate-pod.js';
import type { SidecarConfig } from './sidecar-config.js';

/** Requests above this are refused (413); a Pod AdmissionReview is a few KiB, the API server caps objects at ~1.5 MiB. */
export const MAX_REVIEW_BYTES = 4 * 1024 * 1024;

export interface AdmissionServerOptions {
  tls: KeyPairPem;
  sidecar: SidecarConfig;
  events: OperatorEvents;
  /** The policies of a namespace, from the operator's watch cache. */
  policies: (namespace: string) => DatabaseAccessPolicy[];
  /** The MaskingRules of a namespace, from the same cache: their keySecretRefs are mounted into the sidecar. */
  maskingRules?: (namespace: string) => MaskingRule[];
  /** False until the policy cache has synced: until then pods are refused (fail closed). */
  ready: () => boolean;
}

export interface AdmissionReviewResponse {
  apiVersion: 'admission.k8s.io/v1';
  kind: 'AdmissionReview';
  response: {
    uid: string;
    allowed: boolean;
    patchType?: 'JSONPatch';
    patch?: string;
    status?: { code: number; reason?: string; message: string };
    warnings?: string[];
  };
}

/** Pure: one AdmissionReview request in, the AdmissionReview response out. */
export function reviewPod(
  review: any,
  opts: Pick<AdmissionServerOptions, 'sidecar' | 'policies' | 'maskingRules' | 'ready'>,
): {
  body: AdmissionReviewResponse;
  result: 'injected' | 'skipped' | 'denied' | 'error';
  reason?: string;
} {
  const uid = typeof review?.request?.uid === 'string' ? review.request.uid : '';
  const respond = (r: Omit<AdmissionReviewResponse['response'], 'uid'>) => ({
    apiVersion: 'admission.k8s.io/v1' as const,
    kind: 'AdmissionReview' as const,
    response: { uid, ...r },
  });
  if (review?.apiVersion !== 'admission.k8s.io/v1' || review?.kind !== 'AdmissionReview' || !uid) {
    const message = 'expected an admission.k8s.io/v1 AdmissionReview with request.uid';
    return {
      body: respond({ allowed: false, status: { code: 400, reason: 'BadRequest', message } }),
      result: 'error',
      reason: message,
    };
  }
  const req = review.request;
  if (req.resource?.resource === 'pods' && req.subResource === 'ephemeralcontainers' && req.operation === 'UPDATE') {
    const refused = reviewEphemeralContainers(req.object ?? {});
    if (refused === undefined)
      return { body: respond({ allowed: true }), result: 'skipped', reason: 'ephemeral containers' };
    return {
      body: respond({ allowed: false, status: { code: 403, reason: 'Forbidden', message: refused } }),
      result: 'denied',
      reason: refused,
    };
  }
  if (req.resource?.resource !== 'pods' || req.subResource || req.operation !== 'CREATE') {
    return { body: respond({ allowed: true }), result: 'skipped', reason: 'not a pod creation' };
  }
  if (!opts.ready()) {
    const message = 'pgwarden: the operator has not loaded DatabaseAccessPolicies yet; retry shortly';
    return {
      body: respond({ allowed: false, status: { code: 503, reason: 'ServiceUnavailable', message } }),
      result: 'denied',
      reason: message,
    };
  }
  const namespace: string = req.namespace ?? req.object?.metadata?.namespace ?? '';
  const res = mutatePod(
    req.object ?? {},
    opts.policies(namespace),
    opts.sidecar,
    namespace,
    opts.maskingRules?.(namespace) ?? [],
  );
  if ('denied' in res) {
    return {
      body: respond({ allowed: false, status: { code: 403, reason: 'Forbidden', message: res.denied } }),
      result: 'denied',
      reason: res.denied,
    };
  }
  if (res.patch.length === 0) return { body: respond({ allowed: true }), result: 'skipped', reason: res.skipped };
  return {
    body: respond({
      allowed: true,
      patchType: 'JSONPatch',
      patch: Buffer.from(JSON.stringify(res.patch)).toString('base64'),
    }),
    result: 'injected',
  };
}

export class AdmissionServer {
  readonly server: Server;

  constructor(opts: AdmissionServerOptions) {
    this.server = createServer({ cert: opts.tls.certPem, key: opts.tls.keyPem, minVersion: 'TLSv1.2' }, (req, res) => {
      const started = performance.now();
      const url = new URL(req.url ?? '/', 'https://webhook');
      if (req.method === 'GET' && url.pathname === '/healthz') return void res.end('ok');
      if (req.method === 'GET' && url.pathname === '/readyz') {
        res.statusCode = opts.ready() ? 200 : 503;
        return void res.end(opts.ready() ? 'ok' : 'policies not synced');
      }
      if (req.method !== 'POST' || url.pathname !== '/mutate-pods') {
        res.statusCode = 404;
        return void res.end();
      }
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_REVIEW_BYTES) {
          res.statusCode = 413;
          res.end();
          req.destroy();
        } else chunks.push(c);
      });
      req.on('end', () => {
        if (res.writableEnded) return;
        let review: unknown;
        try {
          review = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          review = undefined;
        }
        let out: ReturnType<typeof reviewPod>;
        try {
          out = reviewPod(review, opts);
        } catch (err) {
          // Fail closed: an unexpected error refuses the pod rather than admitting it without its sidecar.
          const uid = (review as any)?.request?.uid ?? '';
          const message = `pgwarden: internal error while injecting: ${err instanceof Error ? err.message : String(err)}`;
          out = {
            body: {
              apiVersion: 'admission.k8s.io/v1',
              kind: 'AdmissionReview',
              response: { uid, allowed: false, status: { code: 500, message } },
            },
            result: 'error',
            reason: message,
          };
        }
        const r = (review as any)?.request;
        opts.events.emit('webhook.admission', {
          namespace: r?.namespace ?? '',
          pod: r?.object?.metadata?.name ?? r?.object?.metadata?.generateName ?? '',
          result: out.result,
          reason: out.reason,
          durationMs: performance.now() - started,
        });
        const text = JSON.stringify(out.body);
        res.writeHead(out.result === 'error' && out.body.response.status?.code === 400 ? 400 : 200, {
          'Content-Type': 'application/json',
          'Content-Length': Buffer.byteLength(text),
        });
        res.end(text);
      });
    });
  }

  /** Hot swap: new TLS handshakes use the new certificate; established connections are unaffected. */
  setCertificate(kp: KeyPairPem): void {
    this.server.setSecureContext({ cert: kp.certPem, key: kp.keyPem, minVersion: 'TLSv1.2' });
  }

  async listen(port: number, host = '0.0.0.0'): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(port, host, resolve));
    return (this.server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
