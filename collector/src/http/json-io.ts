import type { IncomingMessage, ServerResponse } from 'node:http';

/** A refusal with an HTTP status; the server answers it as `{error: {code, message}}`, with `headers` if given. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
  }
}

/** An answer not yet sent: the read routes return one, so that the read is recorded before the reader gets it. */
export interface Reply {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

/** The answer to a request that failed with `err`: its own status for an HttpError, 400 for bad JSON, else 500. */
export function errorReply(err: unknown): Reply {
  if (err instanceof HttpError)
    return {
      status: err.status,
      body: { error: { code: err.code, message: err.message } },
      // RFC 6750 §3: a 401 names the scheme it wants.
      headers: { ...(err.status === 401 ? { 'www-authenticate': 'Bearer realm="pgwarden"' } : {}), ...err.headers },
    };
  if (err instanceof SyntaxError) return { status: 400, body: { error: { code: 'bad_json', message: err.message } } };
  if ((err as Error).message === 'bad cursor')
    return { status: 400, body: { error: { code: 'bad_cursor', message: 'cursor is not one this API issued' } } };
  return { status: 500, body: { error: { code: 'internal', message: 'internal error' } } };
}

/**
 * A request body that must be one JSON object with no members but `fields`: 400 `bad_json` (naming `shape`, the
 * body expected) or `bad_request` otherwise, so a misspelt field is refused rather than ignored.
 */
export function parseBodyObject(text: string, fields: readonly string[], shape: string): Record<string, unknown> {
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch {
    throw new HttpError(400, 'bad_json', `the body must be JSON: ${shape}`);
  }
  if (!o || typeof o !== 'object' || Array.isArray(o))
    throw new HttpError(400, 'bad_request', 'the body must be an object');
  const extra = Object.keys(o).filter((k) => !fields.includes(k));
  if (extra.length > 0) throw new HttpError(400, 'bad_request', `unknown field(s): ${extra.join(', ')}`);
  return o as Record<string, unknown>;
}

/**
 * On every answer: a browser must not sniff JSON into HTML, frame the collector in another site's page, or send
 * the collector's URL (an approval id in it) on as a referrer.
 */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};

/** An API answer is data, never a document: a browser that opens one directly runs nothing and frames nothing. */
const API_CSP = "default-src 'none'; frame-ancestors 'none'";

export function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-security-policy': API_CSP,
    ...SECURITY_HEADERS,
    ...headers,
  });
  res.end(text);
}

export async function readBody(req: IncomingMessage, max: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > max) throw new HttpError(413, 'too_large', `request body exceeds ${max} bytes`);
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}
