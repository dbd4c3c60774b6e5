import { timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { authenticateReader, type ReadAccess } from '../auth/read-access.js';
import { CollectorError } from '../errors.js';
import type { IngestQueue } from '../ingest/ingest-queue.js';
import type { CollectorMetrics } from '../metrics.js';
import { SIGNATURE_STATES, type SignatureState } from '../signatures/checkpoint-judgement.js';
import type { AuditStore } from '../store/audit-store.js';
import { getSession, listSessions, searchEvents } from '../store/queries.js';
import { type ApprovalsDeps, routeApprovals } from './approvals-api.js';
import { liveFilterFrom } from './event-filter.js';
import { HttpError, readBody, send } from './json-io.js';
import type { LiveStream } from './live-stream.js';
import { followServerTls, readServerTls, type ServerTlsFiles } from './server-tls.js';
import { WEB_UI_HTML } from './web-ui.js';

export interface ApiDeps {
  store: AuditStore;
  live: LiveStream;
  metrics: CollectorMetrics;
  /** HTTP ingest (the fallback path when there is no NATS); disabled when absent. */
  ingest?: { queue: IngestQueue; token?: string };
  /** The approval queue (needs NATS) and who may use it (needs an approvers file). */
  approvals: ApprovalsDeps;
  /** Who may read the audit trail (sessions, events, stream, verify): auth/read-access.ts. */
  read: ReadAccess;
  /**
   * Told of every read of the trail that passed the token check, before it is served: who (`anonymous` on an open
   * API), the route and its query string. The collector logs it, so reading the trail leaves a trail too.
   */
  onRead?(read: { reader: string; method: string; path: string; query: string }): void;
  /** The audit keys in force (names) and the keys file's error while a broken replacement is ignored. */
  auditKeys?(): { keys: string[]; error?: string };
  ready(): Promise<Record<string, boolean>>;
}

/** The routes that serve the audit trail itself (statement text, result samples): readers only. */
const READ_ROUTE = /^\/api\/v1\/(sessions(\/[^/]+)?|events|stream|verify)$/;

/** The reader's namespaces (undefined: every namespace); throws 401/503 for anyone who may not read. */
function requireReader(deps: ApiDeps, req: IncomingMessage, url: URL): string[] | undefined {
  let who: ReturnType<typeof authenticateReader>;
  try {
    who = authenticateReader(deps.read, req.headers.authorization);
  } catch (err) {
    if (err instanceof CollectorError)
      throw new HttpError(503, 'readers_unavailable', `${err.message}: refusing every reader until it is fixed`);
    throw err;
  }
  if (!who)
    throw new HttpError(
      401,
      'unauthorized',
      'missing or unknown bearer token: reading the audit trail needs a reader’s or approver’s token',
    );
  deps.onRead?.({
    reader: who === 'anonymous' ? 'anonymous' : who.name,
    method: req.method ?? 'GET',
    path: url.pathname,
    query: url.search,
  });
  return who === 'anonymous' ? undefined : who.namespaces;
}

/** 404, as for a session that does not exist: a scoped reader learns nothing about other namespaces. */
const inScope = (scope: string[] | undefined, namespace: string | null) =>
  scope === undefined || (namespace !== null && scope.includes(namespace));

const MAX_INGEST_BYTES = 16 * 1024 * 1024;

function limitOf(q: URLSearchParams): number {
  const raw = q.get('limit');
  if (raw === null) return 50;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 1000)
    throw new HttpError(400, 'bad_limit', 'limit must be an integer between 1 and 1000');
  return n;
}

function timeOf(q: URLSearchParams, key: string): string | undefined {
  const v = q.get(key) ?? undefined;
  if (v !== undefined && Number.isNaN(Date.parse(v)))
    throw new HttpError(400, 'bad_time', `${key} must be an RFC 3339 timestamp`);
  return v;
}

const opt = (q: URLSearchParams, k: string) => q.get(k) ?? undefined;

function tokenMatches(header: string | undefined, token: string): boolean {
  const given = Buffer.from(header?.startsWith('Bearer ') ? header.slice(7) : '');
  const want = Buffer.from(token);
  return given.length === want.length && timingSafeEqual(given, want);
}

/** Ingest body: NDJSON (one event per line), a JSON array of events, or one event object. */
function splitIngestBody(body: string): unknown[] {
  const t = body.trim();
  if (t.startsWith('[')) return JSON.parse(t) as unknown[];
  return t.split('\n').filter((l) => l.trim().length > 0);
}

async function route(deps: ApiDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://collector');
  const q = url.searchParams;
  const path = url.pathname;
  const method = req.method ?? 'GET';
  if (method === 'GET' && path === '/healthz') return send(res, 200, { status: 'ok' });
  if (method === 'GET' && path === '/readyz') {
    const checks = await deps.ready();
    return send(res, Object.values(checks).every(Boolean) ? 200 : 503, { checks });
  }
  if (method === 'GET' && path === '/metrics') {
    res.writeHead(200, { 'content-type': deps.metrics.registry.contentType });
    res.end(await deps.metrics.registry.metrics());
    return;
  }
  if (method === 'GET' && (path === '/' || path === '/index.html')) {
    res.writeHead(200, {
      'content-type': 'text/html; charset=utf-8',
      'content-security-policy': "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
    });
    res.end(WEB_UI_HTML);
    return;
  }
  const scope = READ_ROUTE.test(path) ? requireReader(deps, req, url) : undefined;
  if (method === 'GET' && path === '/api/v1/sessions') {
    const page = await listSessions(deps.store.db, {
      namespace: opt(q, 'namespace'),
      namespaces: scope,
      policy: opt(q, 'policy'),
      identity: opt(q, 'identity'),
      decision: opt(q, 'decision'),
      chain: opt(q, 'chain'),
      signature: opt(q, 'signature'),
      from: timeOf(q, 'from'),
      to: timeOf(q, 'to'),
      limit: limitOf(q),
      cursor: opt(q, 'cursor'),
    });
    return send(res, 200, page);
  }
  const m = /^\/api\/v1\/sessions\/([^/]+)$/.exec(path);
  if (method === 'GET' && m) {
    const id = decodeURIComponent(m[1]);
    const s = await getSession(deps.store.db, id);
    if (!s || !inScope(scope, s.session.namespace))
      throw new HttpError(404, 'not_found', `no session ${JSON.stringify(id)}`);
    return send(res, 200, s);
  }
  if (method === 'GET' && path === '/api/v1/events') {
    const page = await searchEvents(deps.store.db, {
      table: opt(q, 'table'),
      kind: opt(q, 'kind'),
      decision: opt(q, 'decision'),
      type: opt(q, 'type'),
      session: opt(q, 'session'),
      identity: opt(q, 'identity'),
      namespace: opt(q, 'namespace'),
      namespaces: scope,
      policy: opt(q, 'policy'),
      from: timeOf(q, 'from'),
      to: timeOf(q, 'to'),
      limit: limitOf(q),
      cursor: opt(q, 'cursor'),
    });
    return send(res, 200, page);
  }
  if (method === 'GET' && path === '/api/v1/stream') {
    deps.live.add(res, { ...liveFilterFrom(q), ...(scope ? { namespaces: new Set(scope) } : {}) });
    deps.metrics.sseClients.set(deps.live.size);
    res.on('close', () => deps.metrics.sseClients.set(deps.live.size));
    return;
  }
  if (method === 'POST' && path === '/api/v1/verify') {
    const body = await readBody(req, 1024 * 1024);
    const request = body.trim() ? (JSON.parse(body) as { sessions?: string[]; details?: unknown }) : {};
    const sessions = request.sessions;
    if (sessions !== undefined && (!Array.isArray(sessions) || !sessions.every((s) => typeof s === 'string'))) {
      throw new HttpError(400, 'bad_request', 'sessions must be an array of session ids');
    }
    if (request.details !== undefined && typeof request.details !== 'boolean')
      throw new HttpError(400, 'bad_request', 'details must be a boolean');
    if (scope) {
      // A scoped reader verifies named sessions of its own namespaces only (verifying "all" would cover others').
      if (sessions === undefined)
        throw new HttpError(
          403,
          'scoped_reader',
          'a reader limited to some namespaces must name the sessions to verify',
        );
      for (const id of sessions) {
        const s = await getSession(deps.store.db, id);
        if (!s || !inScope(scope, s.session.namespace))
          throw new HttpError(404, 'not_found', `no session ${JSON.stringify(id)}`);
      }
    }
    const reports = await deps.store.verify(sessions);
    const signatures = Object.fromEntries(SIGNATURE_STATES.map((s) => [s, 0])) as Record<SignatureState, number>;
    for (const r of reports) signatures[r.signature.state] += 1;
    return send(res, 200, {
      ok: reports.every((r) => r.ok),
      sessions: reports.length,
      failed: reports.filter((r) => !r.ok),
      signatures,
      ...(deps.auditKeys ? { auditKeys: deps.auditKeys() } : {}),
      ...(request.details ? { reports } : {}),
    });
  }
  if (method === 'POST' && path === '/api/v1/ingest') {
    if (!deps.ingest) throw new HttpError(404, 'ingest_disabled', 'HTTP ingest is not enabled on this collector');
    if (deps.ingest.token !== undefined && !tokenMatches(req.headers.authorization, deps.ingest.token)) {
      throw new HttpError(401, 'unauthorized', 'missing or wrong bearer token');
    }
    const items = splitIngestBody(await readBody(req, MAX_INGEST_BYTES));
    const outcomes = await Promise.all(items.map((body) => deps.ingest?.queue.push({ body, source: 'http' })));
    const count = (k: string) => outcomes.filter((o) => o === k).length;
    // Replies only once every event is durably stored (or kept in audit_rejected): the sender may then forget them.
    return send(res, 200, {
      received: items.length,
      stored: count('stored'),
      duplicates: count('duplicate'),
      rejected: count('rejected'),
    });
  }
  if (path === '/api/v1/approvals' || path.startsWith('/api/v1/approvals/')) {
    return routeApprovals(deps.approvals, req, res, url);
  }
  throw new HttpError(404, 'not_found', `no route ${method} ${path}`);
}

export interface ApiServer {
  server: Server;
  url: string;
  close(): Promise<void>;
}

export async function startApiServer(
  deps: ApiDeps,
  listen: { host?: string; port?: number; tls?: ServerTlsFiles } = {},
  onTlsError: (message: string) => void = () => {},
): Promise<ApiServer> {
  // HTTPS when given a certificate: the API carries bearer tokens and the audit trail.
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    route(deps, req, res).catch((err: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (err instanceof HttpError)
        return send(
          res,
          err.status,
          { error: { code: err.code, message: err.message } },
          // RFC 6750 §3: a 401 names the scheme it wants.
          err.status === 401 ? { 'www-authenticate': 'Bearer realm="pgwarden"' } : {},
        );
      if (err instanceof SyntaxError) return send(res, 400, { error: { code: 'bad_json', message: err.message } });
      if ((err as Error).message === 'bad cursor')
        return send(res, 400, { error: { code: 'bad_cursor', message: 'cursor is not one this API issued' } });
      send(res, 500, { error: { code: 'internal', message: 'internal error' } });
    });
  };
  const tls = listen.tls;
  const server: Server = tls ? createHttpsServer(readServerTls(tls), handler) : createServer(handler);
  const stopFollowing = tls
    ? followServerTls(tls, (ctx) => (server as HttpsServer).setSecureContext(ctx), onTlsError)
    : () => {};
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port ?? 0, listen.host ?? '127.0.0.1', () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    server,
    url: `${tls ? 'https' : 'http'}://${host}:${addr.port}`,
    close: () =>
      new Promise((resolve) => {
        stopFollowing();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
