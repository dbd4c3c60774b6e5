import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { AuditRead } from '@pgwarden/policy';
import type { IngestQueue } from '../ingest/ingest-queue.js';
import type { CollectorMetrics } from '../metrics.js';
import { readQuery } from '../read-audit/read-event.js';
import type { FindingRow } from '../store/queries.js';
import { type ApprovalsDeps, answerApprovals } from './approvals-api.js';
import { answerControl, type ControlDeps, isControlPath } from './control-api.js';
import { answerFindingClose, isFindingClosePath } from './finding-close.js';
import { checkHostAndOrigin, type HostPolicy, hostPolicy } from './host-check.js';
import { errorReply, HttpError, readBody, SECURITY_HEADERS, send } from './json-io.js';
import type { LiveStream } from './live-stream.js';
import { answerRead, READ_ROUTE, type ReadDeps, type ReaderNote, type ReadReply } from './read-routes.js';
import { followServerTls, readServerTls, type ServerTlsFiles } from './server-tls.js';
import { WebLogin } from './web-login.js';
import { WEB_UI_CSP, WEB_UI_HTML } from './web-ui.js';

export interface ApiDeps extends ReadDeps {
  live: LiveStream;
  metrics: CollectorMetrics;
  /** HTTP ingest (the fallback path when there is no NATS); disabled when absent. */
  ingest?: { queue: IngestQueue; token?: string };
  /** The approval queue (needs NATS) and who may use it (needs an approvers file). */
  approvals: ApprovalsDeps;
  /** Live control: terminate a session, suspend or resume a policy (needs NATS and an approvers file). */
  control: ControlDeps;
  /** Told of each finding an approver closed (POST /api/v1/findings/{id}/close). */
  onFindingClosed?(finding: FindingRow): void;
  /**
   * Records each read of the trail (the read routes, GET on the approvals routes and every control route, refusals
   * included) as one `audit.read` event before it is answered. When recording fails the reader gets 503, unless
   * `failOpen`.
   */
  readAudit?: {
    record(read: AuditRead): Promise<void>;
    failOpen?: boolean;
    onUnrecorded?(err: Error, read: AuditRead): void;
  };
  ready(): Promise<Record<string, boolean>>;
  /** The web UI's sign-in through the identity provider (`/auth/*`); absent: those paths are 404. */
  webLogin?: WebLogin;
}

const isApprovalsPath = (path: string) => path === '/api/v1/approvals' || path.startsWith('/api/v1/approvals/');

/** The routes whose every request is recorded as an `audit.read`, and who answers each. */
function recordedRoute(
  deps: ApiDeps,
  req: IncomingMessage,
  url: URL,
): ((note: ReaderNote) => Promise<ReadReply>) | undefined {
  const path = url.pathname;
  if (READ_ROUTE.test(path)) return (note) => answerRead(deps, req, url, note);
  if (req.method === 'GET' && isApprovalsPath(path)) return (note) => answerApprovals(deps.approvals, req, url, note);
  // An action taken on behalf of an approver is recorded like a read: who asked for what, and the answer.
  if (isControlPath(path)) return (note) => answerControl(deps.control, req, url, note);
  // So is closing a finding: the same approvers (those who decide), recorded the same way.
  if (isFindingClosePath(path)) {
    const { approvers, oidc } = deps.approvals;
    const closing = { store: deps.store, approvers, oidc, onClosed: deps.onFindingClosed };
    return (note) => answerFindingClose(closing, req, url, note);
  }
  return undefined;
}

/**
 * A read of the trail: answered in full, recorded (status and item count included), then sent. The data is thus
 * never released before its reading is in the trail; a read that cannot be recorded is refused instead.
 */
async function serveRead(
  deps: ApiDeps,
  res: ServerResponse,
  url: URL,
  answer: (note: ReaderNote) => Promise<ReadReply>,
): Promise<void> {
  const note: ReaderNote = {};
  let reply: ReadReply;
  try {
    reply = await answer(note);
  } catch (err) {
    reply = errorReply(err);
  }
  if (deps.readAudit) {
    const query = readQuery(url.searchParams);
    const items = 'items' in reply ? reply.items : undefined;
    const read: AuditRead = {
      reader: note.reader ?? 'unknown',
      route: url.pathname,
      ...(query ? { query } : {}),
      ...(note.namespaces ? { namespaces: note.namespaces } : {}),
      ...(note.oidc ? { oidc: note.oidc } : {}),
      status: reply.status,
      ...(items !== undefined ? { items } : {}),
      ...(note.reason !== undefined ? { reason: note.reason } : {}),
    };
    try {
      await deps.readAudit.record(read);
    } catch (err) {
      deps.readAudit.onUnrecorded?.(err as Error, read);
      // Only a control action answers 202: it cannot be taken back, so the refusal must not suggest it failed.
      const outcome = reply.status === 202 ? 'the action was published all the same' : 'refusing to serve it';
      if (!deps.readAudit.failOpen)
        reply = errorReply(new HttpError(503, 'read_unrecorded', `${(err as Error).message}: ${outcome}`));
    }
  }
  if ('stream' in reply) {
    deps.live.add(res, reply.stream);
    deps.metrics.sseClients.set(deps.live.size);
    res.on('close', () => deps.metrics.sseClients.set(deps.live.size));
    return;
  }
  send(res, reply.status, reply.body, reply.headers);
}

const MAX_INGEST_BYTES = 16 * 1024 * 1024;

/** Compared as SHA-256 digests, so the time taken tells nothing of the token's length either. */
function tokenMatches(header: string | undefined, token: string): boolean {
  const digest = (t: string) => createHash('sha256').update(t, 'utf8').digest();
  const given = header?.startsWith('Bearer ') ? header.slice(7) : undefined;
  return given !== undefined && given !== '' && timingSafeEqual(digest(given), digest(token));
}

/** Ingest body: NDJSON (one event per line), a JSON array of events, or one event object. */
function splitIngestBody(body: string): unknown[] {
  const t = body.trim();
  if (t.startsWith('[')) return JSON.parse(t) as unknown[];
  return t.split('\n').filter((l) => l.trim().length > 0);
}

async function route(deps: ApiDeps, hosts: HostPolicy, req: IncomingMessage, res: ServerResponse): Promise<void> {
  // Before anything else, /healthz and the page included: a rebinding page must not learn even what serves here.
  checkHostAndOrigin(hosts, req);
  const url = new URL(req.url ?? '/', 'http://collector');
  const path = url.pathname;
  const method = req.method ?? 'GET';
  if (method === 'GET' && path === '/healthz') return send(res, 200, { status: 'ok' });
  if (method === 'GET' && path === '/readyz') {
    const checks = await deps.ready();
    return send(res, Object.values(checks).every(Boolean) ? 200 : 503, { checks });
  }
  if (method === 'GET' && path === '/metrics') {
    res.writeHead(200, { 'content-type': deps.metrics.registry.contentType, ...SECURITY_HEADERS });
    res.end(await deps.metrics.registry.metrics());
    return;
  }
  if (method === 'GET' && (path === '/' || path === '/index.html')) {
    res.writeHead(200, {
      'content-type': 'text/html; charset=utf-8',
      'content-security-policy': WEB_UI_CSP,
      'cache-control': 'no-store',
      ...SECURITY_HEADERS,
    });
    res.end(WEB_UI_HTML);
    return;
  }
  if (deps.webLogin && WebLogin.isPath(path)) {
    const reply = await deps.webLogin.answer(req, url);
    return send(res, reply.status, reply.body, { 'cache-control': 'no-store', ...reply.headers });
  }
  const recorded = recordedRoute(deps, req, url);
  if (recorded) return serveRead(deps, res, url, recorded);
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
  if (isApprovalsPath(path)) {
    const reply = await answerApprovals(deps.approvals, req, url);
    return send(res, reply.status, reply.body, reply.headers);
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
  listen: {
    host?: string;
    port?: number;
    tls?: ServerTlsFiles;
    /** Names the API answers to besides addresses, localhost and a listen name (host-check.ts); `*`: any. */
    allowedHosts?: readonly string[];
    /** The web UI's address as people reach it: its name is accepted too. */
    publicUrl?: string;
  } = {},
  onTlsError: (message: string) => void = () => {},
): Promise<ApiServer> {
  const hosts = hostPolicy(listen.host, listen.allowedHosts, listen.publicUrl);
  // HTTPS when given a certificate: the API carries bearer tokens and the audit trail.
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    route(deps, hosts, req, res).catch((err: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const reply = errorReply(err);
      send(res, reply.status, reply.body, reply.headers);
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
