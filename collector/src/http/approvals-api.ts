import type { IncomingMessage } from 'node:http';
import { grantDurationMs, isApprovalId } from '@pgwarden/policy';
import { APPROVAL_STATES, type ApprovalState } from '../approvals/approval-book.js';
import type { ApprovalQueue } from '../approvals/approval-queue.js';
import type { OidcBearer } from '../auth/oidc-bearer.js';
import type { TokenFile } from '../auth/token-file.js';
import { CollectorError, type CollectorErrorCode } from '../errors.js';
import { requireApprover } from './approver-auth.js';
import { HttpError, parseBodyObject, type Reply, readBody } from './json-io.js';
import { inScope, type ReaderNote } from './read-routes.js';

export interface ApprovalsDeps {
  /** Absent without NATS: there is no queue to show. */
  queue?: ApprovalQueue;
  /** Absent without --approvers-file: nobody can authenticate, so every approvals route is refused. */
  approvers?: TokenFile;
  /** `--oidc-issuer`: approvers may also present that issuer's tokens (JWTs) their `oidc` binding names. */
  oidc?: OidcBearer;
}

const MAX_REASON = 1024;
const MAX_LIMIT = 1000;

const STATUS: Partial<Record<CollectorErrorCode, [number, string]>> = {
  COLLECTOR_APPROVAL_UNKNOWN: [404, 'not_found'],
  COLLECTOR_APPROVAL_NOT_PENDING: [409, 'not_pending'],
  COLLECTOR_APPROVAL_NOT_APPROVER: [403, 'not_an_approver'],
  COLLECTOR_APPROVAL_SELF: [403, 'self_approval'],
  COLLECTOR_APPROVAL_BAD_GRANT: [400, 'bad_grant'],
  COLLECTOR_APPROVAL_UNAVAILABLE: [503, 'unavailable'],
};

/**
 * `GET /api/v1/approvals[?state=&limit=|?grants=active]`, `GET /api/v1/approvals/{id}`, `POST /api/v1/approvals/{id}`,
 * `POST /api/v1/approvals/{id}/revoke`. Every route needs
 * an approver's bearer token: the queue holds statement text, which may be sensitive. The answer is returned, not
 * sent, so that a read of the queue can be recorded first; `note` learns who asked.
 */
export async function answerApprovals(
  deps: ApprovalsDeps,
  req: IncomingMessage,
  url: URL,
  note: ReaderNote = {},
): Promise<Reply & { items?: number }> {
  try {
    return await route(deps, req, url, note);
  } catch (err) {
    const mapped = err instanceof CollectorError ? STATUS[err.code] : undefined;
    if (!mapped) throw err;
    throw new HttpError(mapped[0], mapped[1], (err as CollectorError).message);
  }
}

async function route(
  deps: ApprovalsDeps,
  req: IncomingMessage,
  url: URL,
  note: ReaderNote,
): Promise<Reply & { items?: number }> {
  const method = req.method ?? 'GET';
  const rest = url.pathname.slice('/api/v1/approvals'.length);
  // Ids are UUIDs: nothing in them is percent-encoded, so the path segment is taken as it is.
  const [id, action, ...more] = rest === '' ? [] : rest.slice(1).split('/');
  if ((action !== undefined && action !== 'revoke') || more.length > 0)
    throw new HttpError(404, 'not_found', `no route ${method} ${url.pathname}`);
  // GET the list or an entry; POST a decision to an entry; POST (only) its revoke.
  const allowed = action ? method === 'POST' : method === 'GET' || (method === 'POST' && id !== undefined);
  if (!allowed) throw new HttpError(405, 'method_not_allowed', `${method} is not supported on ${url.pathname}`);
  const { queue, approvers } = deps;
  if (!queue) throw new HttpError(501, 'approvals_disabled', 'the approval queue needs NATS: start with --nats');
  const who = await requireApprover(approvers, deps.oidc, req, note);

  // An approver limited to some namespaces sees (and decides) only their requests; others are as if absent.
  const visible = (e: { request?: { policy?: { namespace?: string } } }) =>
    inScope(who.namespaces, e.request?.policy?.namespace ?? null);
  if (id === undefined && url.searchParams.get('grants') !== null) {
    if (url.searchParams.get('grants') !== 'active') throw new HttpError(400, 'bad_grants', 'grants must be "active"');
    const approvals = queue.activeGrants().filter(visible);
    return { status: 200, body: { approvals }, items: approvals.length };
  }
  if (id === undefined) {
    const wanted = parseStates(url.searchParams.get('state'));
    const limit = parseLimit(url.searchParams.get('limit'));
    const approvals = queue
      .list('all')
      .filter((e) => (wanted === 'all' || wanted.has(e.state)) && visible(e))
      .slice(0, limit);
    return { status: 200, body: { approvals }, items: approvals.length };
  }
  if (!isApprovalId(id)) throw new HttpError(404, 'not_found', `no approval request ${JSON.stringify(id)}`);
  const entry = queue.get(id);
  if (!entry || !visible(entry)) throw new HttpError(404, 'not_found', `no approval request ${id}`);
  if (method === 'GET') return { status: 200, body: entry, items: 1 };
  if (action === 'revoke') {
    const { reason } = parseRevokeBody(await readBody(req, 16 * 1024));
    return { status: 200, body: await queue.revoke(id, who, reason) };
  }
  const body = parseDecisionBody(await readBody(req, 16 * 1024));
  return { status: 200, body: await queue.decide(id, body.decision, who, body.reason, body.grantFor) };
}

/**
 * `state`: one state, `all`, or a comma-separated list (the UI's "recently decided" asks for every state but
 * pending). Default `pending`.
 */
function parseStates(param: string | null): Set<ApprovalState> | 'all' {
  const states = (param ?? 'pending').split(',');
  if (states.includes('all')) return states.length === 1 ? 'all' : badState();
  if (!states.every((s) => APPROVAL_STATES.includes(s as ApprovalState))) badState();
  return new Set(states as ApprovalState[]);
}

function badState(): never {
  throw new HttpError(
    400,
    'bad_state',
    `state must be all or one or more (comma-separated) of ${APPROVAL_STATES.join(', ')}`,
  );
}

/** `limit`: the newest N entries (1–1000); absent: all of them. */
function parseLimit(param: string | null): number | undefined {
  if (param === null) return undefined;
  const n = /^[0-9]{1,4}$/.test(param) ? Number(param) : 0;
  if (n < 1 || n > MAX_LIMIT) throw new HttpError(400, 'bad_limit', `limit must be an integer from 1 to ${MAX_LIMIT}`);
  return n;
}

/** `{decision: "approve" | "reject", reason?: string, grantFor?: duration}`, nothing else. */
export function parseDecisionBody(text: string): {
  decision: 'approved' | 'rejected';
  reason?: string;
  grantFor?: string;
} {
  const { decision, reason, grantFor } = parseBodyObject(
    text,
    ['decision', 'reason', 'grantFor'],
    '{"decision": "approve" | "reject", "reason"?: "...", "grantFor"?: "30m"}',
  );
  if (decision !== 'approve' && decision !== 'reject')
    throw new HttpError(400, 'bad_request', 'decision must be "approve" or "reject"');
  checkReason(reason);
  if (grantFor !== undefined && (typeof grantFor !== 'string' || grantDurationMs(grantFor) === undefined))
    throw new HttpError(400, 'bad_grant', 'grantFor must be a duration from 1s to 24h, e.g. "30m"');
  if (grantFor !== undefined && decision !== 'approve')
    throw new HttpError(400, 'bad_grant', 'only an approval can give a grant');
  return {
    decision: decision === 'approve' ? 'approved' : 'rejected',
    ...(reason ? { reason: reason as string } : {}),
    ...(grantFor !== undefined ? { grantFor: grantFor as string } : {}),
  };
}

/** `{reason?: string}`, nothing else (an empty body is `{}`). */
function parseRevokeBody(text: string): { reason?: string } {
  const { reason } = parseBodyObject(text.trim() === '' ? '{}' : text, ['reason'], '{"reason"?: "..."}');
  checkReason(reason);
  return reason ? { reason: reason as string } : {};
}

function checkReason(reason: unknown): void {
  if (reason !== undefined && (typeof reason !== 'string' || reason.length > MAX_REASON))
    throw new HttpError(400, 'bad_request', `reason must be a string of at most ${MAX_REASON} characters`);
}
