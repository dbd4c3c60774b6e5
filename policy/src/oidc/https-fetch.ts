import { request } from 'node:https';

/** Bodies larger than this are refused: a discovery document or JWKS is a few KiB. */
const MAX_BODY_BYTES = 1 << 20;

export interface HttpsFetchOptions {
  /** Extra trust anchors (PEM) for the identity provider; the system roots are used when absent. */
  ca?: string | Buffer;
  timeoutMs?: number;
}

export type HttpsFetch = (
  url: string,
  init?: {
    headers?: Headers | Record<string, string>;
    signal?: AbortSignal;
    /** GET by default; POST (with `body`) for an authorization code exchange at a token endpoint. */
    method?: 'GET' | 'POST';
    body?: string;
  },
) => Promise<Response>;

/**
 * A minimal fetch over node:https (GET, and POST for a token endpoint). Node 20's global fetch cannot take a per-request CA without importing
 * undici, so this is what jose's `customFetch` and the discovery request use. Plain http and redirects are refused:
 * the keys that decide who a client is must come from the configured issuer over verified TLS.
 *
 * `timeoutMs` bounds the whole request, body included. node:https's own `timeout` is an idle timeout: a server (or
 * a proxy in front of it) that sends a byte every few seconds would hold the request, and every login waiting on
 * it, for ever.
 */
export function createHttpsFetch(opts: HttpsFetchOptions = {}): HttpsFetch {
  return (url, init = {}) =>
    new Promise<Response>((resolve, reject) => {
      const target = new URL(url);
      if (target.protocol !== 'https:') {
        reject(new Error(`refusing non-https URL ${target.origin}`));
        return;
      }
      const headers: Record<string, string> = { accept: 'application/json' };
      if (init.headers instanceof Headers) {
        for (const [k, v] of init.headers) headers[k] = v;
      } else Object.assign(headers, init.headers ?? {});
      const timeoutMs = opts.timeoutMs ?? 5000;
      const signal = init.signal
        ? AbortSignal.any([init.signal, AbortSignal.timeout(timeoutMs)])
        : AbortSignal.timeout(timeoutMs);
      const method = init.method ?? 'GET';
      if (init.body !== undefined) headers['content-length'] = String(Buffer.byteLength(init.body));
      const req = request(target, { method, headers, ca: opts.ca, timeout: timeoutMs, signal }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_BODY_BYTES) {
            res.destroy(new Error(`response from ${target.origin} exceeds ${MAX_BODY_BYTES} bytes`));
            return;
          }
          chunks.push(c);
        });
        res.on('error', reject);
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          // Response forbids a body on these statuses; nothing useful would be in it anyway.
          const body = status === 204 || status === 304 ? null : Buffer.concat(chunks);
          const h = new Headers();
          for (const [k, v] of Object.entries(res.headers)) if (typeof v === 'string') h.set(k, v);
          resolve(new Response(body, { status: status < 200 || status > 599 ? 502 : status, headers: h }));
        });
      });
      req.on('timeout', () => req.destroy(new Error(`request to ${target.origin} timed out`)));
      req.on('error', reject);
      req.end(init.body);
    });
}

/** Thrown without a request while an earlier failure's back-off lasts. */
export class IdpBackoffError extends Error {
  override readonly name = 'IdpBackoffError';
}

/**
 * After a failed answer (network error, timeout, a status other than 200, a body that is not JSON) the next
 * `retryMs` fail at once, without a request. jose's remote key set refetches on every verification while it holds
 * no fresh keys, and counts its unknown-`kid` cooldown from the last success only: without this, an identity
 * provider whose JWKS endpoint fails would be asked once per login attempt (made-up `kid`s included), just when it
 * can least afford it.
 */
export function withFailureBackoff(fetchHttps: HttpsFetch, retryMs: number): HttpsFetch {
  let failedAt = Number.NEGATIVE_INFINITY;
  let lastError = '';
  return async (url, init) => {
    const since = Date.now() - failedAt;
    if (since < retryMs)
      throw new IdpBackoffError(`${lastError}; not retried for another ${Math.ceil((retryMs - since) / 1000)} s`);
    const failed = (message: string): never => {
      failedAt = Date.now();
      lastError = message;
      throw new Error(message);
    };
    let res: Response;
    try {
      res = await fetchHttps(url, init);
    } catch (err) {
      return failed(`request to ${new URL(url).origin} failed: ${(err as Error).message}`);
    }
    if (res.status !== 200) return failed(`${new URL(url).origin} answered HTTP ${res.status}`);
    const body = await res.text();
    try {
      JSON.parse(body);
    } catch {
      return failed(`${new URL(url).origin} answered with a body that is not JSON`);
    }
    return new Response(body, { status: res.status, headers: res.headers });
  };
}
