import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { CollectorError } from '../errors.js';

export interface TlsClientOptions {
  /** PEM CA bundle that signs the destination's certificate (default: the system trust store). */
  ca?: string;
  /** Never disable outside tests; kept so a lab receiver with a self-signed cert can be reached deliberately. */
  rejectUnauthorized?: boolean;
}

export interface HttpReply {
  status: number;
  body: string;
}

/** One POST with a timeout; resolves with any status (callers decide what is retryable), rejects on transport errors. */
export function post(
  url: string,
  body: string,
  headers: Record<string, string>,
  tls: TlsClientOptions = {},
  timeoutMs = 15_000,
): Promise<HttpReply> {
  const u = new URL(url);
  const request = u.protocol === 'https:' ? httpsRequest : u.protocol === 'http:' ? httpRequest : null;
  if (!request)
    return Promise.reject(new CollectorError('COLLECTOR_BAD_CONFIG', `unsupported URL scheme ${u.protocol}`));
  return new Promise((resolve, reject) => {
    const req = request(
      u,
      {
        method: 'POST',
        headers: { ...headers, 'content-length': Buffer.byteLength(body) },
        timeout: timeoutMs,
        ...(u.protocol === 'https:' ? { ca: tls.ca, rejectUnauthorized: tls.rejectUnauthorized ?? true } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`request to ${u.host} timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}
