import type { IncomingMessage } from 'node:http';
import type { OidcBearer } from '../auth/oidc-bearer.js';
import type { TokenFile } from '../auth/token-file.js';
import type { AuditStore } from '../store/audit-store.js';
import { closeFinding } from '../store/finding-close.js';
import type { FindingRow } from '../store/queries.js';
import { requireApprover } from './approver-auth.js';
import { parseReasonBody } from './control-api.js';
import { HttpError, type Reply, readBody } from './json-io.js';
import { inScope, type ReaderNote } from './read-routes.js';

export interface FindingCloseDeps {
  store: AuditStore;
  /** Absent without --approvers-file: nobody can close a finding. */
  approvers?: TokenFile;
  /** `--oidc-issuer`: approvers may also present that issuer's tokens (JWTs) their `oidc` binding names. */
  oidc?: OidcBearer;
  /** Told of each finding closed, as it now reads. */
  onClosed?(finding: FindingRow): void;
}

const CLOSE = /^\/api\/v1\/findings\/([^/]+)\/close$/;
/** Finding ids are bigserial values; anything else names no finding. */
const FINDING_ID = /^[1-9][0-9]{0,14}$/;

export const isFindingClosePath = (path: string) => CLOSE.test(path);

/**
 * `POST /api/v1/findings/{id}/close` with `{"reason": "..."}`: an approver closes an open finding by hand, e.g. an
 * `audit.gap.unattributed` that no chain can ever settle, once they have looked into it. Approvers, not readers: it
 * takes an integrity alert off the open list, which is acting on the trail, not reading it, as ending a session is.
 * A scoped approver closes findings of their namespaces only. The answer is returned, not sent, so that the request is
 * recorded (an `audit.read` in the collector's chain, as every control action) before it is answered.
 */
export async function answerFindingClose(
  deps: FindingCloseDeps,
  req: IncomingMessage,
  url: URL,
  note: ReaderNote,
): Promise<Reply & { items?: number }> {
  const method = req.method ?? 'GET';
  if (method !== 'POST')
    throw new HttpError(405, 'method_not_allowed', `${method} is not supported on ${url.pathname}`);
  const who = await requireApprover(deps.approvers, deps.oidc, req, note);
  const raw = (CLOSE.exec(url.pathname) as RegExpExecArray)[1];
  if (!FINDING_ID.test(raw)) throw new HttpError(404, 'not_found', `no finding ${JSON.stringify(raw)}`);
  const reason = parseReasonBody(await readBody(req, 16 * 1024));
  note.reason = reason;
  const outcome = await closeFinding(
    deps.store.db,
    Number(raw),
    { name: who.name, ...(note.oidc ? { oidc: note.oidc } : {}) },
    reason,
    (namespace) => inScope(who.namespaces, namespace),
  );
  if ('closed' in outcome) {
    deps.onClosed?.(outcome.closed);
    return { status: 200, body: { finding: outcome.closed }, items: 1 };
  }
  if (outcome.refused === 'not_found') throw new HttpError(404, 'not_found', `no finding ${raw}`);
  if (outcome.refused === 'resolved')
    throw new HttpError(
      409,
      'finding_resolved',
      `finding ${raw} was resolved at ${outcome.finding.resolvedAt}: its events arrived, nothing is left to close`,
    );
  const c = outcome.finding.closed;
  throw new HttpError(409, 'already_closed', `finding ${raw} was closed by ${c?.by} at ${c?.at}`);
}
