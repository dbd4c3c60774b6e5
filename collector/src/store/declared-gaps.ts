import { createHash } from 'node:crypto';
import type { ChainFinding } from '../chain/verify-chain.js';
import type { AuditEvent } from '../event.js';

/** What a sidecar's `audit.gap` event says, as far as it can be read (the event is the sidecar's, not ours). */
interface GapBody {
  cause?: unknown;
  dropped?: unknown;
  since?: unknown;
  until?: unknown;
  truncated?: unknown;
  sessions?: unknown;
}

/**
 * An `audit.gap.unattributed` finding with what identifies the loss it reports (`declaration`): a restarted sidecar
 * declares what its at-risk record still holds again (sidecar/src/audit/unsynced-events.ts), from a chain of its own
 * with a new instance id, and that is the same loss, filed once (ingest-writer.ts, insertFindings).
 */
export interface DeclaredFinding extends ChainFinding {
  declaration: string;
}

interface SessionRange {
  id: string;
  fromSeq: number;
  toSeq: number;
}

/**
 * A sidecar's declaration of possibly lost events, split into what it attributes to sessions (seq ranges: findings on
 * those sessions, settled by their chains) and what it cannot: no sessions named (a torn or altered at-risk record,
 * see sidecar/src/audit/at-risk-record.ts), a list cut short (`truncated`), ranges that do not read as seqs, or no
 * `gap` at all. The latter is one `audit.gap.unattributed` finding per declaring event, filed on the sidecar's own chain
 * at the event's seq: the collector cannot know which events are missing, so no chain it verifies can settle it.
 */
export function declaredGaps(events: readonly AuditEvent[]): {
  ranges: ChainFinding[];
  unattributed: DeclaredFinding[];
} {
  const ranges: ChainFinding[] = [];
  const unattributed: DeclaredFinding[] = [];
  for (const e of events) {
    if (e.type !== 'audit.gap') continue;
    const gap: GapBody = typeof e.gap === 'object' && e.gap !== null ? (e.gap as GapBody) : {};
    const listed = Array.isArray(gap.sessions) ? (gap.sessions as unknown[]) : [];
    const named: SessionRange[] = listed.filter(isRange);
    for (const s of named)
      ranges.push({
        kind: 'audit.gap',
        sessionId: s.id,
        seqFrom: s.fromSeq,
        seqTo: s.toSeq,
        detail:
          gap.cause === 'fsync_failed'
            ? `sidecar may have lost events ${s.fromSeq}..${s.toSeq} (fsync_failed: an fdatasync of its audit file or spool failed)`
            : `sidecar dropped events ${s.fromSeq}..${s.toSeq} (${text(gap.cause) ?? 'no cause given'})`,
      });
    const unreadable = listed.length - named.length;
    const what =
      named.length === 0 && unreadable === 0
        ? 'events of sessions it did not name'
        : gap.truncated === true
          ? `events of sessions beyond the ${named.length} it named (its list was cut)`
          : unreadable > 0
            ? `events of ${unreadable} session range(s) it named unreadably`
            : undefined;
    if (what === undefined || !Number.isSafeInteger(e.session?.seq)) continue;
    unattributed.push({
      kind: 'audit.gap.unattributed',
      sessionId: e.session.id,
      seqFrom: e.session.seq,
      seqTo: e.session.seq,
      detail: `${who(e)} may have lost ${what}${window(gap)} (${causeText(gap)}; ${countText(gap)}): which events is unknown, so no chain verification can resolve this`,
      declaration: declarationOf(e, gap, listed),
    });
  }
  return { ranges, unattributed };
}

function isRange(s: unknown): s is SessionRange {
  const r = s as Partial<SessionRange> | null;
  return (
    typeof r === 'object' &&
    r !== null &&
    typeof r.id === 'string' &&
    Number.isSafeInteger(r.fromSeq) &&
    Number.isSafeInteger(r.toSeq)
  );
}

/**
 * What makes two declarations the same loss: the same sidecar (its pod, which a restart keeps; else its instance)
 * saying the same thing. `until` is left out: a restarted sidecar declares the carried gap with `until` at `since`.
 * Anything else that differs (more dropped, another range) is a loss declared anew, so it is another finding.
 */
function declarationOf(e: AuditEvent, gap: GapBody, listed: readonly unknown[]): string {
  const source = (typeof e.source === 'object' && e.source !== null ? e.source : {}) as Record<string, unknown>;
  const pod = source.pod ?? e.identity?.pod;
  const declarer =
    typeof pod === 'string' && pod !== ''
      ? ['pod', source.namespace ?? e.identity?.namespace ?? null, pod]
      : typeof source.instance === 'string' && source.instance !== ''
        ? ['instance', source.instance]
        : ['chain', e.session.id];
  const said = [gap.cause ?? null, gap.since ?? null, gap.dropped ?? null, gap.truncated === true, listed];
  return createHash('sha256')
    .update(JSON.stringify([declarer, said]))
    .digest('hex');
}

/** The declaring sidecar, as far as its event tells: instance, pod, policy. */
function who(e: AuditEvent): string {
  const source = (typeof e.source === 'object' && e.source !== null ? e.source : {}) as Record<string, unknown>;
  const instance = text(source.instance);
  const pod = text(source.pod ?? e.identity?.pod);
  const podNs = text(source.namespace ?? e.identity?.namespace);
  const policy = text(e.policy?.name);
  return (
    `sidecar ${instance ?? '(instance not given)'}` +
    (pod ? ` (pod ${podNs ? `${podNs}/` : ''}${pod})` : '') +
    (policy ? ` of policy ${policy}` : '')
  );
}

function window(gap: GapBody): string {
  const since = text(gap.since);
  const until = text(gap.until);
  if (since && until) return since === until ? ` at ${since}` : ` between ${since} and ${until}`;
  return since ? ` since ${since}` : until ? ` until ${until}` : '';
}

function causeText(gap: GapBody): string {
  const cause = text(gap.cause);
  if (cause === 'fsync_failed') return 'fsync_failed: an fdatasync of its audit file or spool failed';
  return cause ?? 'no cause given';
}

function countText(gap: GapBody): string {
  return Number.isSafeInteger(gap.dropped) && (gap.dropped as number) > 0
    ? `${gap.dropped} event(s) in all`
    : 'how many is unknown';
}

/** A string member of the sidecar's event, bounded: it ends up in a finding's detail. */
function text(v: unknown): string | undefined {
  return typeof v === 'string' && v.length > 0 ? (v.length > 200 ? `${v.slice(0, 200)}…` : v) : undefined;
}
