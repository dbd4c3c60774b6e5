import { createHmac } from 'node:crypto';
import type { ApprovalRequestMessage } from '@pgwarden/policy';
import { boundValuesText } from '../display/bound-values.js';
import { lookAlikes } from '../display/look-alikes.js';
import { visibleText } from '../display/visible-text.js';

/**
 * What the collector posts to a webhook when a statement is held for approval: plain data in, the body and headers
 * out. `json` is pgwarden's own shape; `slack` is an incoming-webhook message
 * (https://api.slack.com/messaging/webhooks), which Mattermost and Rocket.Chat accept too.
 */
export type NoticeFormat = 'json' | 'slack';
export const NOTICE_FORMATS: readonly NoticeFormat[] = ['json', 'slack'];

/** The most characters of SQL a notice carries (the last one an ellipsis when cut). */
export const NOTICE_SQL_LIMIT = 500;

export interface NoticeOptions {
  format: NoticeFormat;
  /**
   * Add the statement (already secret-redacted by the sidecar), cut to NOTICE_SQL_LIMIT characters, and the values a
   * prepared statement's execution was bound with (each marked text or binary), cut the same way.
   */
  includeSql: boolean;
  /** The web UI as people reach it: the notice links to the queue there. */
  publicUrl?: string;
}

/** The body of `format: json`. */
export interface ApprovalRequestedNotice {
  type: 'approval.requested';
  id: string;
  policy: { name: string; namespace?: string };
  /** The rule whose `review` action held it ('' for the policy's defaultAction). */
  rule: string;
  session: string;
  identity: NoticeIdentity;
  requestedAt: string;
  expiresAt: string;
  url?: string;
  sql?: string;
  /**
   * With `sql`, for an execution of a prepared statement: its bound values as the request carries them (binary ones
   * as `\x` hex), each cut to NOTICE_SQL_LIMIT characters, and their formats (`text` | `binary`) when it says.
   */
  params?: (string | null)[];
  paramFormats?: ('text' | 'binary')[];
  /** The request offers a grant (approval.grants): an approver may also approve its shape for up to this long. */
  grantMax?: string;
}

export interface NoticeIdentity {
  namespace?: string;
  serviceAccount?: string;
  pod?: string;
  user?: string;
  groups?: string[];
}

/** The exact body to post for `request` (`now`: epoch ms, for the "expires in" of a chat line). */
export function noticeBody(request: ApprovalRequestMessage, opts: NoticeOptions, now: number): string {
  const url = opts.publicUrl ? approvalLink(opts.publicUrl, request.id) : undefined;
  // A chat shows the statement to people who decide on it: controls, bidi overrides and padding as marks, as the web
  // UI shows them. The json body is data for a program and carries the text as stored.
  if (opts.format === 'slack') {
    const shown = opts.includeSql ? truncateSql(visibleText(request.sql)) : undefined;
    const values =
      opts.includeSql && request.params
        ? truncateSql(visibleText(boundValuesText(request.params, request.paramFormats).join(', ')))
        : undefined;
    // Words that pass for others in what the chat line shows (the statement only when it is included: its words
    // may be personal data).
    const id = identityOf(request.identity);
    const texts = [id.user, id.namespace, id.serviceAccount, id.pod, request.policy.namespace, request.policy.name];
    texts.push(request.rule, ...(opts.includeSql ? [request.sql] : []));
    const flagged = lookAlikes(texts.filter((t): t is string => typeof t === 'string').join(' '));
    return JSON.stringify({ text: slackText(request, now, url, shown, values, flagged) });
  }
  const sql = opts.includeSql ? truncateSql(request.sql) : undefined;
  const params = opts.includeSql ? request.params : undefined;
  const notice: ApprovalRequestedNotice = {
    type: 'approval.requested',
    id: request.id,
    policy: {
      name: request.policy.name,
      ...(request.policy.namespace ? { namespace: request.policy.namespace } : {}),
    },
    rule: request.rule.slice(0, 256),
    session: request.session,
    identity: identityOf(request.identity),
    requestedAt: request.requestedAt,
    expiresAt: request.expiresAt,
    ...(url ? { url } : {}),
    ...(sql !== undefined ? { sql } : {}),
    ...(params ? { params: params.map((v) => (v === null ? null : truncateSql(v))) } : {}),
    ...(params && request.paramFormats ? { paramFormats: request.paramFormats } : {}),
    ...(request.grantMax ? { grantMax: request.grantMax } : {}),
  };
  return JSON.stringify(notice);
}

/**
 * The web UI's approval queue for `id`: the page opens at its pending approvals (`#approvals`); the id rides along
 * in the query so a person can tell which one the message was about.
 */
export function approvalLink(publicUrl: string, id: string): string {
  return `${publicUrl.replace(/\/+$/, '')}/?approval=${encodeURIComponent(id)}#approvals`;
}

/** `sql` cut to `limit` characters (code points, never half a surrogate pair), ending in '…' when cut. */
export function truncateSql(sql: string, limit = NOTICE_SQL_LIMIT): string {
  const chars = Array.from(sql);
  return chars.length <= limit ? sql : `${chars.slice(0, limit - 1).join('')}…`;
}

/**
 * The headers that let a receiver authenticate a notice, as Stripe and Slack sign theirs: the timestamp (Unix
 * seconds) and `sha256=<hex HMAC-SHA256 over "<timestamp>.<body>">` keyed with the shared secret. Binding the
 * timestamp lets a receiver refuse replays older than a few minutes.
 */
export function signatureHeaders(secret: string, body: string, unixSeconds: number): Record<string, string> {
  const ts = String(unixSeconds);
  return {
    'x-pgwarden-timestamp': ts,
    'x-pgwarden-signature': `sha256=${createHmac('sha256', secret).update(`${ts}.${body}`).digest('hex')}`,
  };
}

/** Who asked: the OIDC user when there is one, else the pod's service account and name. */
export function askedBy(identity: Record<string, unknown>): string {
  const id = identityOf(identity);
  if (id.user) return id.user;
  const sa = id.serviceAccount ? `${id.namespace ? `${id.namespace}/` : ''}${id.serviceAccount}` : undefined;
  if (sa && id.pod) return `${sa}/${id.pod}`;
  return sa ?? id.pod ?? 'an unknown identity';
}

/** `policy agents/writer-review, rule writes-need-approval, asked by ana`: which held statement, for a chat line. */
export function heldSummary(request: ApprovalRequestMessage): string {
  const policy = request.policy.namespace ? `${request.policy.namespace}/${request.policy.name}` : request.policy.name;
  const rule = request.rule ? `rule ${request.rule.slice(0, 256)}` : 'the policy’s default action';
  return `policy ${policy}, ${rule}, asked by ${askedBy(request.identity)}`;
}

function slackText(
  request: ApprovalRequestMessage,
  now: number,
  url?: string,
  sql?: string,
  values?: string,
  lookAlike: string[] = [],
): string {
  const line =
    `Statement held for approval: ${heldSummary(request)}, ` +
    `${expiresIn(Date.parse(request.expiresAt) - now)}.` +
    (request.grantMax ? ` It may be approved with its shape for up to ${request.grantMax}.` : '');
  // Only the link is left unescaped: it is ours, and Slack reads <url|label> as a link.
  let text = slackEscape(visibleText(line));
  if (url) text += ` <${slackEscape(url)}|Review it in pgwarden>`;
  if (lookAlike.length > 0) text += `\n:warning: Look-alike letters: ${slackEscape(visibleText(lookAlike.join('; ')))}`;
  // Backticks split by a zero-width space: a ``` in the SQL cannot close the block and let the rest format as text.
  if (sql !== undefined) text += `\n\`\`\`${slackEscape(sql).replace(/`/g, '`\u200b')}\`\`\``;
  // The values it runs with, each marked (text) or (binary): a text value that reads `\x41` is not bytes.
  if (values !== undefined) text += `\nwith \`${slackEscape(values).replace(/`/g, '`\u200b')}\``;
  return text;
}

function expiresIn(ms: number): string {
  if (ms < 60_000) return 'expires in less than a minute';
  return `expires in ${Math.round(ms / 60_000)} min`;
}

/**
 * Slack's three control characters (https://api.slack.com/reference/surfaces/formatting#escaping): escaped, a
 * name such as `<!channel>` in an identity or a statement cannot ping a channel or forge a link.
 */
export function slackEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

const text = (v: unknown): string | undefined => (typeof v === 'string' && v.length > 0 ? v.slice(0, 256) : undefined);

/** The identity's known fields only, each bounded: the sidecar's message may carry more than a chat needs. */
function identityOf(identity: Record<string, unknown>): NoticeIdentity {
  const out: NoticeIdentity = {};
  for (const k of ['namespace', 'serviceAccount', 'pod', 'user'] as const) {
    const v = text(identity[k]);
    if (v) out[k] = v;
  }
  if (Array.isArray(identity.groups)) {
    const groups = identity.groups.map(text).filter((g): g is string => g !== undefined);
    if (groups.length > 0) out.groups = groups.slice(0, 64);
  }
  return out;
}
