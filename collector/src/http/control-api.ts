import { createPublicKey, type KeyObject } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import {
  type AuditControl,
  type ControlMessage,
  isApprovalId,
  isControlNamespace,
  isControlPolicyName,
  MAX_CONTROL_REASON,
  NO_NAMESPACE,
  type SuspensionMessage,
} from '@pgwarden/policy';
import type { OidcBearer } from '../auth/oidc-bearer.js';
import type { TokenFile, TokenHolder } from '../auth/token-file.js';
import { type ControlKind, type ControlTarget, controlMessage, suspensionsOf } from '../control/control-actions.js';
import type { ControlStream } from '../control/control-stream.js';
import { CollectorError } from '../errors.js';
import type { AuditStore } from '../store/audit-store.js';
import { getControlApplications, getSessionSummary } from '../store/queries.js';
import { requireApprover } from './approver-auth.js';
import { HttpError, parseBodyObject, type Reply, readBody } from './json-io.js';
import { inScope, type ReaderNote } from './read-routes.js';

export type ControlOutcome = 'published' | 'refused' | 'unavailable';

export interface ControlDeps {
  store: AuditStore;
  /** Absent without NATS: there is nowhere to publish. */
  stream?: ControlStream;
  /** Absent without --approvers-file: nobody can authenticate, so every control route is refused. */
  approvers?: TokenFile;
  /** `--oidc-issuer`: approvers may also present that issuer's tokens (JWTs) their `oidc` binding names. */
  oidc?: OidcBearer;
  /** The approvals signing key (--approvals-signing-key): every control message is signed with it. */
  signingKey?: KeyObject;
  /** Told of every action asked for and how it ended, with the message when it was published. */
  onAction?(kind: ControlKind, outcome: ControlOutcome, control?: ControlMessage): void;
}

const TERMINATE = /^\/api\/v1\/sessions\/([^/]+)\/terminate$/;
const SUSPENSION = /^\/api\/v1\/policies\/([^/]+)\/([^/]+)\/(suspend|resume)$/;
const SUSPENSIONS = '/api/v1/suspensions';
const STATUS = /^\/api\/v1\/control\/([^/]+)$/;
/** How far back `GET /api/v1/control/{id}` looks without `since` (a day: actions are looked at while they happen). */
const STATUS_LOOKBACK_MS = 24 * 3600_000;
/** Every policy's subject: a policy name may hold dots, so its subject may have more than one token after `policy`. */
const POLICY_SUBJECTS = 'pgwarden.control.policy.>';

export const isControlPath = (path: string) =>
  path === SUSPENSIONS || TERMINATE.test(path) || SUSPENSION.test(path) || STATUS.test(path);

/**
 * `POST /api/v1/sessions/{id}/terminate`, `POST /api/v1/policies/{namespace}/{name}/suspend|resume` and
 * `GET /api/v1/suspensions`, for approvers only. The answer is returned, not sent, so that the request can be
 * recorded as an `audit.read` first; `note` learns who asked.
 */
export async function answerControl(
  deps: ControlDeps,
  req: IncomingMessage,
  url: URL,
  note: ReaderNote = {},
): Promise<Reply & { items?: number }> {
  const kind = actionOf(url.pathname);
  try {
    const reply = await route(deps, req, url, note);
    if (kind) deps.onAction?.(kind, 'published', (reply.body as { control: ControlMessage }).control);
    return reply;
  } catch (err) {
    const unavailable = err instanceof CollectorError && err.code === 'COLLECTOR_CONTROL_UNAVAILABLE';
    if (kind) deps.onAction?.(kind, unavailable ? 'unavailable' : 'refused');
    throw unavailable ? new HttpError(503, 'unavailable', err.message) : err;
  }
}

function actionOf(path: string): ControlKind | undefined {
  if (TERMINATE.test(path)) return 'terminate';
  return SUSPENSION.exec(path)?.[3] as SuspensionMessage['kind'] | undefined;
}

async function route(
  deps: ControlDeps,
  req: IncomingMessage,
  url: URL,
  note: ReaderNote,
): Promise<Reply & { items?: number }> {
  const method = req.method ?? 'GET';
  const path = url.pathname;
  const status = STATUS.exec(path);
  if (method !== (path === SUSPENSIONS || status ? 'GET' : 'POST'))
    throw new HttpError(405, 'method_not_allowed', `${method} is not supported on ${path}`);
  const { stream } = deps;
  if (!stream) throw new HttpError(501, 'control_disabled', 'live control needs NATS: start the collector with --nats');
  const who = await requireApprover(deps.approvers, deps.oidc, req, note);
  if (status) {
    const applied = await applicationsOf(deps, decode(status[1]), url.searchParams.get('since'), who);
    return { status: 200, body: { id: decode(status[1]), applied }, items: applied.length };
  }
  if (method === 'GET') {
    const verifyKey = deps.signingKey && createPublicKey(deps.signingKey);
    const suspensions = suspensionsOf(await stream.lastPerSubject(POLICY_SUBJECTS), verifyKey).filter((s) =>
      policyInScope(who, s.policy.namespace),
    );
    return { status: 200, body: { suspensions }, items: suspensions.length };
  }
  const target = await targetOf(deps, path, who);
  const reason = parseReasonBody(await readBody(req, 16 * 1024));
  note.reason = reason;
  const control = controlMessage(target, who.name, reason, deps.signingKey);
  await stream.publish(control);
  return { status: 202, body: { control } };
}

/** What the path names, if the approver may act on it: 404 for what is unknown or outside their namespaces. */
async function targetOf(deps: ControlDeps, path: string, who: TokenHolder): Promise<ControlTarget> {
  const terminate = TERMINATE.exec(path);
  if (terminate) {
    const id = decode(terminate[1]);
    // Sidecar session ids are UUIDs; anything else (a sidecar's or collector's own chain) is no session to end.
    const s = isApprovalId(id) ? await getSessionSummary(deps.store.db, id) : null;
    if (!s || !inScope(who.namespaces, s.namespace))
      throw new HttpError(404, 'not_found', `no session ${JSON.stringify(id)}`);
    if (s.ended) throw new HttpError(409, 'session_ended', `session ${id} has already ended`);
    return { kind: 'terminate', session: id };
  }
  const [, ns, n, kind] = SUSPENSION.exec(path) as RegExpExecArray;
  const [namespace, name] = [decode(ns), decode(n)];
  if (!isControlNamespace(namespace) || !isControlPolicyName(name))
    throw new HttpError(
      400,
      'bad_policy',
      `${JSON.stringify(`${namespace}/${name}`)} is no policy: namespace and name are Kubernetes names ` +
        `(namespace ${NO_NAMESPACE} for a policy without one)`,
    );
  if (!policyInScope(who, namespace)) throw new HttpError(404, 'not_found', `no policy ${namespace}/${name}`);
  return { kind: kind as SuspensionMessage['kind'], policy: { namespace, name } };
}

/** One sidecar's report of applying an action (its `control.applied` event), as `GET /api/v1/control/{id}` lists it. */
export interface ControlApplication {
  time: string;
  source: { instance?: string; pod?: string; namespace?: string };
  kind: string;
  sessionsEnded: number;
  signed: boolean;
}

/**
 * Which sidecars reported applying action `id` (their `control.applied` events, in the approver's namespaces): the
 * approver's answer to "did it work?". `since` (RFC 3339, e.g. the action's `at`) bounds the search.
 */
async function applicationsOf(
  deps: ControlDeps,
  id: string,
  since: string | null,
  who: TokenHolder,
): Promise<ControlApplication[]> {
  if (!isApprovalId(id)) throw new HttpError(404, 'not_found', `no control action ${JSON.stringify(id)}`);
  const from = since === null ? new Date(Date.now() - STATUS_LOOKBACK_MS) : new Date(since);
  if (Number.isNaN(from.getTime())) throw new HttpError(400, 'bad_since', 'since must be an RFC 3339 time');
  const events = await getControlApplications(deps.store.db, id, new Date(from.getTime() - 60_000));
  return events
    .filter((e) => inScope(who.namespaces, e.identity?.namespace ?? null))
    .map((e) => {
      const c = (e.control ?? {}) as Partial<AuditControl>;
      const source = (e.source ?? {}) as ControlApplication['source'];
      return {
        time: e.time,
        // The sidecar's namespace: its own (downward API), else the one its chain files its events under.
        source: { instance: source.instance, pod: source.pod, namespace: source.namespace ?? e.identity?.namespace },
        kind: String(c.kind),
        sessionsEnded: c.sessionsEnded ?? 0,
        signed: c.signed === true,
      };
    });
}

/** A policy without a namespace (`_`) is every namespace's business: only approvers without a limit act on it. */
const policyInScope = (who: TokenHolder, namespace: string) =>
  inScope(who.namespaces, namespace === NO_NAMESPACE ? null : namespace);

/** A malformed escape stays as it is: no valid session id or policy name contains `%`, so it is refused as such. */
function decode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/** `{"reason": "..."}`: why, as the approver says it, 1 to MAX_CONTROL_REASON characters and not blank. */
export function parseReasonBody(text: string): string {
  const { reason } = parseBodyObject(text, ['reason'], '{"reason": "..."}');
  if (typeof reason !== 'string' || reason.trim() === '' || reason.length > MAX_CONTROL_REASON)
    throw new HttpError(400, 'bad_reason', `reason is required: a string of 1 to ${MAX_CONTROL_REASON} characters`);
  return reason;
}
