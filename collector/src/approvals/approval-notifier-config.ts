import { readFileSync } from 'node:fs';
import { isLoopbackHost } from '@pgwarden/policy';
import { CollectorError } from '../errors.js';
import { NOTICE_FORMATS, type NoticeFormat } from './approval-notice.js';
import type { ApprovalNotifierOptions } from './approval-notifier.js';
import type { RetryPolicy } from './notification-delivery.js';

/** `startCollector`'s `approvalNotifications` (docs/collector.md, "Notifications"). */
export interface ApprovalNotificationOptions {
  /**
   * File holding the webhook URL (`--approval-webhook-url-file`): the URL is a secret (a Slack incoming webhook's
   * carries its token), so it never comes from an argument. Or `webhookUrl`, the URL itself, for an environment
   * variable. Read once at start.
   */
  webhookUrlFile?: string;
  webhookUrl?: string;
  /** `json` (default) or `slack`. */
  format?: NoticeFormat;
  /** File holding the shared secret that signs each notice (X-Pgwarden-Signature); read once at start. */
  signingSecretFile?: string;
  /** Include the statement, cut to 500 characters (off by default: SQL may hold personal data). */
  includeSql?: boolean;
  /** Follow each announced request up when its hold ends: approved, rejected, expired… (default true). */
  outcomes?: boolean;
  /** Tuning, for tests mostly: the shared consumers' names and ack wait, one POST's deadline, the retries. */
  durable?: string;
  outcomesDurable?: string;
  ackWaitMs?: number;
  timeoutMs?: number;
  retry?: Partial<RetryPolicy>;
}

export interface ResolvedNotifications {
  notifier: Omit<ApprovalNotifierOptions, 'nats' | 'entryOf' | 'bookLoaded'> & { outcomes: boolean };
  /** What logs may say of the webhook: scheme://host[:port], never its path or query. */
  origin: string;
  /** Plain http to a host other than this machine: the URL (and the notices) cross the network unencrypted. */
  plainHttpOffLoopback: boolean;
}

/**
 * Reads and checks the notification settings before anything starts: a missing file, a URL that does not parse or
 * is not http(s), or an unknown format refuses the start. Messages name the file, never the URL or the secret.
 */
export function resolveApprovalNotifications(
  o: ApprovalNotificationOptions,
  publicUrl?: string,
): ResolvedNotifications {
  const format = o.format ?? 'json';
  if (!NOTICE_FORMATS.includes(format))
    throw badConfig(`approval webhook format must be ${NOTICE_FORMATS.join(' or ')}, not ${format}`);
  const where = o.webhookUrlFile ? `file ${o.webhookUrlFile}` : 'its setting';
  const raw = o.webhookUrlFile ? readSecretFile(o.webhookUrlFile, 'approval webhook URL') : o.webhookUrl;
  if (!raw) throw badConfig('approval notifications need a webhook URL (--approval-webhook-url-file)');
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw badConfig(`the approval webhook URL in ${where} is not a URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw badConfig(`the approval webhook URL in ${where} must be https (or http), not ${url.protocol}`);
  const signingSecret = o.signingSecretFile
    ? readSecretFile(o.signingSecretFile, 'approval webhook signing secret')
    : undefined;
  return {
    notifier: {
      webhook: {
        url,
        format,
        includeSql: o.includeSql === true,
        ...(publicUrl ? { publicUrl: checkPublicUrl(publicUrl) } : {}),
        ...(signingSecret ? { signingSecret } : {}),
      },
      outcomes: o.outcomes !== false,
      durable: o.durable,
      outcomesDurable: o.outcomesDurable,
      ackWaitMs: o.ackWaitMs,
      timeoutMs: o.timeoutMs,
      retry: o.retry,
    },
    origin: url.origin,
    plainHttpOffLoopback: url.protocol === 'http:' && !isLoopbackHost(url.hostname),
  };
}

/** `--public-url`: where people reach the web UI (an ingress, say); an http(s) URL, kept without a trailing '/'. */
export function checkPublicUrl(publicUrl: string): string {
  let u: URL;
  try {
    u = new URL(publicUrl);
  } catch {
    throw badConfig(`--public-url ${publicUrl} is not a URL`);
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:')
    throw badConfig(`--public-url must be https (or http), not ${u.protocol}`);
  return u.toString().replace(/\/+$/, '');
}

/** A one-line secret from a mounted file (kubectl's trailing newline dropped); empty is refused. */
function readSecretFile(path: string, what: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw badConfig(`${what} ${path} cannot be read: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  const value = text.trim();
  if (!value) throw badConfig(`${what} ${path} is empty`);
  return value;
}

const badConfig = (message: string) => new CollectorError('COLLECTOR_BAD_CONFIG', message);
