import type { IncomingMessage } from 'node:http';
import { authenticateReader, type ReadAccess } from '../auth/read-access.js';
import type { TokenHolder } from '../auth/token-file.js';
import { CollectorError } from '../errors.js';
import { SIGNATURE_STATES, type SignatureState } from '../signatures/checkpoint-judgement.js';
import type { AuditStore } from '../store/audit-store.js';
import { FINDING_STATES, getSession, listFindings, listSessions, searchEvents } from '../store/queries.js';
import { boundHolder, oidcCallerOf, unauthorized } from './approver-auth.js';
import { type LiveFilter, liveFilterFrom } from './event-filter.js';
import { HttpError, type Reply, readBody } from './json-io.js';

export interface ReadDeps {
  store: AuditStore;
  /** Who may read the audit trail (sessions, events, stream, verify): auth/read-access.ts. */
  read: ReadAccess;
  /**
   * Told of every read of the trail that passed the token check, before it is served: who (`anonymous` on an open
   * API), the route and its query string. The collector logs it.
   */
  onRead?(read: { reader: string; method: string; path: string; query: string }): void;
  /** The audit keys in force (names) and the keys file's error while a broken replacement is ignored. */
  auditKeys?(): { keys: string[]; error?: string };
}

/**
 * Who is reading, as far as the request got before it was answered: set by the token check, read by whoever
 * records the read (`reader` stays unset for a request refused before anyone was recognised).
 */
export interface ReaderNote {
  reader?: string;
  /** The reader's namespace scope, when their entry limits it. */
  namespaces?: string[];
  /** The verified OIDC token's (or web sign-in's) issuer and `sub`, whoever it is bound to. */
  oidc?: { issuer: string; subject: string };
  /** An action's reason, once the request body was read and the reason accepted (the chain's `read.reason`). */
  reason?: string;
}

/** A read route's answer: JSON with how many items it holds, or the live stream to open. */
export type ReadReply = (Reply & { items?: number }) | { status: 200; stream: LiveFilter };

/** The routes that serve the audit trail itself (statement text, result samples): readers only. */
export const READ_ROUTE = /^\/api\/v1\/(sessions(\/[^/]+)?|events|findings|stream|verify)$/;

/**
 * The reader an OIDC token's holder is (a readers entry binding them, else an approvers one), undefined without a
 * JWT; 403 `not_a_reader` for a valid token nobody is bound to. A file that cannot be read is skipped, as for static
 * tokens: `broken` (the readers file's error) then answers 503 if the approvers file does not know them either.
 */
async function oidcReader(
  deps: ReadDeps,
  req: IncomingMessage,
  broken: unknown,
  note: ReaderNote,
): Promise<TokenHolder | undefined> {
  const { oidc, readers, approvers } = deps.read;
  const caller = await oidcCallerOf(oidc, req);
  if (!caller || !oidc) return undefined;
  note.oidc = { issuer: caller.issuer, subject: caller.subject };
  let unreadable = broken;
  for (const file of [readers, approvers]) {
    if (!file || (file === readers && broken)) continue;
    try {
      const who = boundHolder(oidc, file, caller);
      if (who) return who;
    } catch (err) {
      if (!(err instanceof CollectorError)) throw err;
      unreadable ??= err;
    }
  }
  if (unreadable) throw unreadable;
  throw new HttpError(
    403,
    'not_a_reader',
    `OIDC user ${caller.user} at ${caller.issuer} is not bound to a reader or approver (readers or approvers file, oidc)`,
  );
}

/** The reader's namespaces (undefined: every namespace); throws 401/403/503 for anyone who may not read. */
async function requireReader(
  deps: ReadDeps,
  req: IncomingMessage,
  url: URL,
  note: ReaderNote,
): Promise<string[] | undefined> {
  let who: TokenHolder | 'anonymous' | undefined;
  try {
    let broken: unknown;
    try {
      who = authenticateReader(deps.read, req.headers.authorization);
    } catch (err) {
      if (!(err instanceof CollectorError)) throw err;
      broken = err;
    }
    who ??= await oidcReader(deps, req, broken, note);
    if (!who && broken) throw broken;
  } catch (err) {
    if (err instanceof CollectorError)
      throw new HttpError(503, 'readers_unavailable', `${err.message}: refusing every reader until it is fixed`);
    throw err;
  }
  if (!who)
    throw unauthorized(
      deps.read.oidc,
      req,
      'missing or unknown bearer token: reading the audit trail needs a reader’s or approver’s token',
    );
  note.reader = who === 'anonymous' ? 'open' : who.name;
  if (who !== 'anonymous' && who.namespaces) note.namespaces = who.namespaces;
  deps.onRead?.({
    reader: who === 'anonymous' ? 'anonymous' : who.name,
    method: req.method ?? 'GET',
    path: url.pathname,
    query: url.search,
  });
  return who === 'anonymous' ? undefined : who.namespaces;
}

/**
 * Whether `namespace` is within `scope` (undefined: every namespace; a null namespace only then). Outside it, the
 * answer is 404, as for a session that does not exist: a scoped reader learns nothing about other namespaces.
 */
export const inScope = (scope: string[] | undefined, namespace: string | null) =>
  scope === undefined || (namespace !== null && scope.includes(namespace));

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

/** A malformed escape (`%E0%A4%A`) names no session: 404 like any unknown id, not a 500. */
function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new HttpError(404, 'not_found', `no session ${JSON.stringify(segment)}`);
  }
}

/** Answers a request on a READ_ROUTE path; throws HttpError for a refusal (401, 403, 404, 400, …). */
export async function answerRead(deps: ReadDeps, req: IncomingMessage, url: URL, note: ReaderNote): Promise<ReadReply> {
  const q = url.searchParams;
  const path = url.pathname;
  const method = req.method ?? 'GET';
  const scope = await requireReader(deps, req, url, note);
  if (method === 'GET' && path === '/api/v1/sessions') {
    const page = await listSessions(deps.store.db, {
      namespace: opt(q, 'namespace'),
      namespaces: scope,
      policy: opt(q, 'policy'),
      identity: opt(q, 'identity'),
      decision: opt(q, 'decision'),
      chain: opt(q, 'chain'),
      signature: opt(q, 'signature'),
      state: opt(q, 'state'),
      from: timeOf(q, 'from'),
      to: timeOf(q, 'to'),
      limit: limitOf(q),
      cursor: opt(q, 'cursor'),
    });
    return { status: 200, body: page, items: page.items.length };
  }
  const m = /^\/api\/v1\/sessions\/([^/]+)$/.exec(path);
  if (method === 'GET' && m) {
    const id = decodeSegment(m[1]);
    const s = await getSession(deps.store.db, id);
    if (!s || !inScope(scope, s.session.namespace))
      throw new HttpError(404, 'not_found', `no session ${JSON.stringify(id)}`);
    return { status: 200, body: s, items: s.events.length };
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
    return { status: 200, body: page, items: page.items.length };
  }
  if (method === 'GET' && path === '/api/v1/findings') {
    const state = (q.get('state') ?? 'open') as (typeof FINDING_STATES)[number];
    if (!FINDING_STATES.includes(state))
      throw new HttpError(400, 'bad_state', `state must be ${FINDING_STATES.join(', ')}`);
    const page = await listFindings(deps.store.db, {
      state,
      kind: opt(q, 'kind'),
      session: opt(q, 'session'),
      namespace: opt(q, 'namespace'),
      namespaces: scope,
      limit: limitOf(q),
      cursor: opt(q, 'cursor'),
    });
    return { status: 200, body: page, items: page.items.length };
  }
  if (method === 'GET' && path === '/api/v1/stream')
    return { status: 200, stream: { ...liveFilterFrom(q), ...(scope ? { namespaces: new Set(scope) } : {}) } };
  if (method === 'POST' && path === '/api/v1/verify') return verify(deps, req, scope);
  throw new HttpError(404, 'not_found', `no route ${method} ${path}`);
}

async function verify(deps: ReadDeps, req: IncomingMessage, scope: string[] | undefined): Promise<ReadReply> {
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
      throw new HttpError(403, 'scoped_reader', 'a reader limited to some namespaces must name the sessions to verify');
    for (const id of sessions) {
      const s = await getSession(deps.store.db, id);
      if (!s || !inScope(scope, s.session.namespace))
        throw new HttpError(404, 'not_found', `no session ${JSON.stringify(id)}`);
    }
  }
  const reports = await deps.store.verify(sessions);
  const signatures = Object.fromEntries(SIGNATURE_STATES.map((s) => [s, 0])) as Record<SignatureState, number>;
  for (const r of reports) signatures[r.signature.state] += 1;
  return {
    status: 200,
    items: reports.length,
    body: {
      ok: reports.every((r) => r.ok),
      sessions: reports.length,
      failed: reports.filter((r) => !r.ok),
      signatures,
      ...(deps.auditKeys ? { auditKeys: deps.auditKeys() } : {}),
      ...(request.details ? { reports } : {}),
    },
  };
}
