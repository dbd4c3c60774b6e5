import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { type AttemptResult, parseRetryAfter } from './notification-delivery.js';

export interface WebhookPostOptions {
  /** The whole exchange, from connecting to the answer's last byte (default 10 s). */
  timeoutMs?: number;
  /** Aborts the request at once (the collector is stopping). */
  signal?: AbortSignal;
}

/** What of the answer's body is read, then dropped: receivers say nothing a notifier needs. */
const MAX_ANSWER_BYTES = 16 * 1024;

/**
 * Not the exporters' `post` (exports/http-post.ts): that one reads whole answers (a bulk API's per-item errors),
 * times out on idleness and rejects with messages naming the host; a webhook's answer is dropped unread past 16 KiB,
 * the deadline covers the whole exchange, a stopping collector aborts it, and nothing it returns names the URL.
 *
 * One POST to a webhook: resolves with the status (redirects are not followed: a 3xx is just its status), or with
 * `{error}` naming the transport failure (a timeout, an errno code such as ECONNREFUSED, `aborted`), with
 * `maybeDelivered` when it came after the whole body was sent (the receiver may have acted on it). Never
 * rejects, and the result never carries the URL: webhook URLs are secrets (Slack's carry a token in the path).
 */
export function postWebhook(
  url: URL,
  body: string,
  headers: Record<string, string>,
  opts: WebhookPostOptions = {},
): Promise<AttemptResult> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
  // Before a request exists: one destroyed at once emits an error no listener would take yet (a crash).
  if (opts.signal?.aborted) return Promise.resolve({ error: 'aborted' });
  return new Promise((resolve) => {
    let settled = false;
    // The whole body went out: a receiver may have taken it whatever happens next (its answer lost, late, cut off).
    let written = false;
    const settle = (r: AttemptResult) => {
      if (settled) return;
      settled = true;
      resolve('error' in r && written ? { ...r, maybeDelivered: true } : r);
    };
    const req = request(url, {
      method: 'POST',
      // No pooled socket outlives the exchange: a stopping collector leaves nothing open behind it.
      agent: false,
      headers: { ...headers, 'content-length': Buffer.byteLength(body) },
    });
    const fail = (error: string) => {
      settle({ error });
      req.destroy();
    };
    const timer = setTimeout(() => fail(`timed out after ${timeoutMs} ms`), timeoutMs);
    const onAbort = () => fail('aborted');
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    // The deadline and the abort also cover an answer's body that trickles in after its status: the exchange ends
    // (and its socket closes) within `timeoutMs` either way.
    req.on('close', () => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
    });
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      const retryAfter = res.headers['retry-after'];
      settle({ status, retryAfterMs: parseRetryAfter(retryAfter, Date.now()) });
      let read = 0;
      res.on('data', (chunk: Buffer) => {
        read += chunk.length;
        if (read > MAX_ANSWER_BYTES) res.destroy();
      });
      res.on('error', () => {});
    });
    // Only the error's code: a message may quote more of the request than its origin.
    req.on('error', (err: NodeJS.ErrnoException) => settle({ error: err.code ?? 'connection failed' }));
    req.on('finish', () => {
      written = true;
    });
    req.end(body);
  });
}
