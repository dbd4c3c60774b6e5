import type { AuditEvent } from '../event.js';
import { controlOf, findingOf, toOcsf } from './ocsf-mapping.js';

/**
 * RFC 5424 syslog messages (https://www.rfc-editor.org/rfc/rfc5424) in RFC 6587 octet-counting framing
 * (`MSG-LEN SP SYSLOG-MSG`, https://www.rfc-editor.org/rfc/rfc6587#section-3.4.1), so a message may contain
 * newlines (SQL text does).
 */
export const SD_ID = 'pgwarden@32473'; // 32473 is the private enterprise number RFC 5612 reserves for examples.

export interface SyslogFormatOptions {
  /** RFC 5424 facility, default 13 ("log audit"). */
  facility?: number;
  hostname?: string;
  appName?: string;
  format?: 'pgwarden' | 'ocsf';
}

/**
 * Severity: 2 critical for events found altered, 3 error for events found missing (audit.finding), 4 warning for a
 * denial, 5 notice for other decisions and for an approver's control action (control.applied), 6 informational
 * otherwise.
 */
function severityOf(e: AuditEvent): number {
  const f = findingOf(e);
  if (f) return f.kind === 'audit.tampered' ? 2 : 3;
  const a = e.decision?.action;
  if (a === 'deny') return 4;
  if (a || controlOf(e)) return 5;
  return 6;
}

/** PARAM-VALUE escaping: `"`, `\` and `]` must be backslash-escaped (RFC 5424 §6.3.3). */
const sdValue = (v: string) => v.replace(/["\\\]]/g, (c) => `\\${c}`);

/** Header fields are PRINTUSASCII without spaces, with a maximum length; anything else becomes `-` or is cut. */
function headerField(v: string | undefined, max: number): string {
  if (!v) return '-';
  const clean = v.replace(/[^\x21-\x7e]/g, '_').slice(0, max);
  return clean.length > 0 ? clean : '-';
}

/**
 * RFC 5424 TIMESTAMP (§6.2.3: RFC 3339, at most 6 fractional digits, no spaces). The collector accepts any time
 * `Date.parse` reads (`Jan 1 2026 (any text)` too), so anything else is rewritten from its parsed value: a space in
 * the header would shift every later field and let the text that follows pose as hostname, MSGID or structured data.
 */
function syslogTime(t: string): string {
  if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$/.test(t)) return t;
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? '-' : new Date(ms).toISOString();
}

export function formatSyslog(e: AuditEvent, o: SyslogFormatOptions = {}): string {
  const pri = (o.facility ?? 13) * 8 + severityOf(e);
  const params: [string, string | number | undefined][] = [
    ['session', e.session.id],
    ['seq', e.session.seq],
    ['type', e.type],
    ['decision', e.decision?.action],
    ['rule', e.decision?.rule],
    ['identity', e.identity?.user ?? e.identity?.serviceAccount],
    ['namespace', e.identity?.namespace],
    ['policy', e.policy?.name],
  ];
  const sd = `[${SD_ID}${params
    .filter(([, v]) => v !== undefined && v !== '')
    .map(([k, v]) => ` ${k}="${sdValue(String(v))}"`)
    .join('')}]`;
  const body = JSON.stringify(o.format === 'ocsf' ? toOcsf(e) : e);
  return `<${pri}>1 ${syslogTime(e.time)} ${headerField(o.hostname, 255)} ${headerField(o.appName ?? 'pgwarden', 48)} - ${headerField(e.type, 32)} ${sd} ${body}`;
}

/** Octet-counting frame: the length is in bytes (UTF-8), not characters. */
export function frameOctetCounting(msg: string): Buffer {
  const b = Buffer.from(msg, 'utf8');
  return Buffer.concat([Buffer.from(`${b.length} `, 'ascii'), b]);
}

/** Parses a buffer of octet-counted frames: returns complete messages and the unconsumed rest. */
export function parseOctetCounting(buf: Buffer): { messages: string[]; rest: Buffer } {
  const messages: string[] = [];
  let off = 0;
  for (;;) {
    const sp = buf.indexOf(0x20, off);
    if (sp === -1 || sp - off > 10) break;
    const len = Number(buf.subarray(off, sp).toString('ascii'));
    if (!Number.isInteger(len) || len <= 0) throw new Error(`bad octet count at offset ${off}`);
    if (buf.length < sp + 1 + len) break;
    messages.push(buf.subarray(sp + 1, sp + 1 + len).toString('utf8'));
    off = sp + 1 + len;
  }
  return { messages, rest: buf.subarray(off) };
}
