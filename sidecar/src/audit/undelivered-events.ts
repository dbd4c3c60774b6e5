import type { AuditGap } from '@pgwarden/policy';

/**
 * What the NATS sink still held undelivered when its shutdown drain ran out (nats-sink.ts close()). Positions only:
 * session ids and seq numbers, never an event's content. The spool outlives a container restart but not the pod: an
 * emptyDir is deleted with it, and then nothing else ever names these events, since neither an `audit.gap` nor the
 * events themselves reached NATS.
 */
export interface UndeliveredAudit {
  /** Events not delivered: `spooled` + `memoryOnly`. */
  events: number;
  /** In the spool directory: the next start of this container delivers them; deleting the pod loses them. */
  spooled: number;
  /** Never written to a spool (none configured, or it was full or failing): lost with this process. */
  memoryOnly: number;
  /** Of `events`, how many carry no position to name (a spool line the disk damaged). */
  unnamed: number;
  /** Per session, its undelivered seqs as ranges `1-40,45`; sessions in the order their first event was met. */
  sessions: { id: string; seqs: string }[];
  spoolDir?: string;
  /** Events dropped earlier (spool full, failing disk...) whose `audit.gap` never reached NATS: undeclared so far. */
  dropped?: AuditGap;
}

/**
 * Collects undelivered events' positions into per-session seq ranges. A session's events reach the sink in seq
 * order, so each is one comparison with the session's last range in the common case; anything else starts a range,
 * and report() sorts and merges.
 */
export class UndeliveredTally {
  private readonly ranges = new Map<string, number[]>();
  private spooled = 0;
  private memoryOnly = 0;
  private unnamed = 0;

  add(where: 'spool' | 'memory', session: string | undefined, seq: number | undefined): void {
    if (where === 'spool') this.spooled++;
    else this.memoryOnly++;
    if (session === undefined || seq === undefined || !Number.isInteger(seq)) {
      this.unnamed++;
      return;
    }
    const r = this.ranges.get(session);
    if (!r) {
      this.ranges.set(session, [seq, seq]);
      return;
    }
    if (seq === r[r.length - 1] + 1) r[r.length - 1] = seq;
    else r.push(seq, seq);
  }

  /** A spooled record, by its JetStream message id (message-id.ts); undefined for a line that names none. */
  addSpooled(msgID: string | undefined): void {
    const p = msgID === undefined ? undefined : positionOfMessageId(msgID);
    this.add('spool', p?.session, p?.seq);
  }

  get count(): number {
    return this.spooled + this.memoryOnly;
  }

  report(spoolDir?: string, dropped?: AuditGap): UndeliveredAudit {
    const sessions: UndeliveredAudit['sessions'] = [];
    for (const [id, flat] of this.ranges) sessions.push({ id, seqs: formatRanges(flat) });
    return {
      events: this.count,
      spooled: this.spooled,
      memoryOnly: this.memoryOnly,
      unnamed: this.unnamed,
      sessions,
      ...(spoolDir === undefined ? {} : { spoolDir }),
      ...(dropped ? { dropped } : {}),
    };
  }
}

/** `<session>.<seq>` or `<session>.<seq>.<16 hex of the hash>` (message-id.ts) → its position. */
export function positionOfMessageId(msgID: string): { session: string; seq: number } | undefined {
  const m = /^(.+)\.(\d+)\.[0-9a-f]{16}$/.exec(msgID) ?? /^(.+)\.(\d+)$/.exec(msgID);
  return m ? { session: m[1], seq: Number(m[2]) } : undefined;
}

/** Flat [from, to, from, to, ...] → `1-40,45`, sorted and merged. */
function formatRanges(flat: number[]): string {
  const pairs: [number, number][] = [];
  for (let i = 0; i < flat.length; i += 2) pairs.push([flat[i], flat[i + 1]]);
  pairs.sort((a, b) => a[0] - b[0]);
  const merged: [number, number][] = [];
  for (const p of pairs) {
    const last = merged[merged.length - 1];
    if (last && p[0] <= last[1] + 1) last[1] = Math.max(last[1], p[1]);
    else merged.push([p[0], p[1]]);
  }
  return merged.map(([a, b]) => (a === b ? String(a) : `${a}-${b}`)).join(',');
}

/** The log message for a report: what is lost now, and what a deleted pod loses. */
export function undeliveredMessage(r: UndeliveredAudit, drainingMs?: number): string {
  if (drainingMs !== undefined)
    // The drain's start: the pod's grace period may end it by SIGKILL, and then this is the only record of them.
    return (
      `audit events not yet delivered to NATS at shutdown: ${r.events} (${r.spooled} in the spool ${r.spoolDir ?? '-'}, ` +
      `${r.memoryOnly} only in memory), NATS unreachable; delivering them for up to ${drainingMs} ms: if the container ` +
      'is killed first, they are LOST with the pod'
    );
  const parts: string[] = [];
  if (r.spooled > 0)
    parts.push(
      `${r.spooled} left in the spool ${r.spoolDir}: the next start of this container delivers them, but they are ` +
        'LOST if the pod is deleted (the spool is an emptyDir)',
    );
  if (r.memoryOnly > 0) parts.push(`${r.memoryOnly} never reached a spool and are lost`);
  if (r.dropped) parts.push(`${r.dropped.dropped} dropped earlier (${r.dropped.cause}) were never declared to NATS`);
  return `audit events not delivered to NATS at shutdown: ${parts.join('; ')}`;
}

/**
 * Container runtimes split a log line past 16 KiB (CRI's limit) into partial lines that not every pipeline joins
 * again; a report naming many sessions is cut into parts below it, each a whole JSON record with the totals.
 */
export const MAX_LOG_LINE_CHARS = 12 * 1024;

/**
 * The report as log records of at most about `maxChars` each (one, unless it names many sessions): the sessions
 * spread over them in order, each with the totals; the earlier drops go with the first.
 */
export function undeliveredLogParts(
  report: UndeliveredAudit,
  maxChars = MAX_LOG_LINE_CHARS,
): (UndeliveredAudit & { part: number; parts: number })[] {
  const { sessions, dropped, ...totals } = report;
  const chunks: UndeliveredAudit['sessions'][] = [[]];
  const base = JSON.stringify(totals).length + 200;
  let size = base + (dropped ? JSON.stringify(dropped).length : 0);
  for (const s of sessions) {
    const n = s.id.length + s.seqs.length + 20;
    if (size + n > maxChars && chunks[chunks.length - 1].length > 0) {
      chunks.push([]);
      size = base;
    }
    chunks[chunks.length - 1].push(s);
    size += n;
  }
  return chunks.map((c, i) => ({
    ...totals,
    sessions: c,
    ...(i === 0 && dropped ? { dropped } : {}),
    part: i + 1,
    parts: chunks.length,
  }));
}
