import type { AuditEvent } from '../event.js';
import { namespaceOf } from '../signatures/checkpoint-judgement.js';
import type { ChainEvent, ChainFinding } from './verify-chain.js';

/**
 * What a sidecar's own chain said about one of its session chains (`audit.heads`): the chain reached `seq`, whose
 * event had `hash`. `instance` is the sidecar that said so (`source.instance` of the heads event), `by` the heads
 * event's id.
 */
export interface CommittedHead {
  instance: string | null;
  /** The namespace of the heads event ('' for none): it must be the session's own. */
  namespace: string;
  seq: number;
  hash: string;
  by: string;
}

/** The heads one `audit.heads` event names, as commitments (malformed entries are skipped: its hash covers them). */
export function headsOf(e: AuditEvent): { sessionId: string; head: CommittedHead }[] {
  if (e.type !== 'audit.heads') return [];
  const chains = (e.heads as { chains?: unknown } | undefined)?.chains;
  if (!Array.isArray(chains)) return [];
  const instance = instanceOf(e);
  const namespace = namespaceOf(e) ?? '';
  const out: { sessionId: string; head: CommittedHead }[] = [];
  for (const c of chains as { id?: unknown; seq?: unknown; hash?: unknown }[]) {
    if (typeof c?.id !== 'string' || !Number.isSafeInteger(c.seq) || typeof c.hash !== 'string') continue;
    out.push({ sessionId: c.id, head: { instance, namespace, seq: c.seq as number, hash: c.hash, by: e.id } });
  }
  return out;
}

/**
 * The detail of a tail (or whole chain) found missing through a head: one wording for the periodic sweep and for
 * verification, so a finding reads the same wherever it was raised.
 */
export function missingTailDetail(from: number, seq: number, by: string, known: boolean): string {
  if (!known) return `the whole chain is missing: the sidecar's ${by} recorded it up to seq ${seq}`;
  const what = from === seq ? `event ${seq} is` : `events ${from}..${seq} are`;
  return `${what} missing: the sidecar's ${by} recorded the chain up to seq ${seq}`;
}

export function instanceOf(e: ChainEvent): string | null {
  const i = (e as { source?: { instance?: unknown } }).source?.instance;
  return typeof i === 'string' ? i : null;
}

/**
 * Holds a session's stored events to the heads its sidecar recorded for it. Only heads from the sidecar that wrote
 * the session (same `source.instance`, published in the session's namespace) count: another publisher's claims about
 * the chain are ignored. A chain whose events stop before the highest recorded head lost its tail (`audit.gap`), even
 * when what is left is intact and ends with a checkpoint; an event at a recorded position with another hash was
 * replaced (`audit.tampered`); a chain with heads but no events at all was deleted whole.
 */
export function headFindings(
  sessionId: string,
  events: readonly ChainEvent[],
  heads: readonly CommittedHead[],
): ChainFinding[] {
  const instance = events.map(instanceOf).find((i) => i !== null) ?? null;
  const namespace = events.map(namespaceOf).find((n) => n !== null) ?? '';
  let top: CommittedHead | undefined;
  for (const h of heads) {
    if (events.length > 0 && (h.instance !== instance || h.namespace !== namespace)) continue;
    if (top === undefined || h.seq > top.seq) top = h;
  }
  if (top === undefined) return [];
  let last = 0;
  let at: ChainEvent | undefined;
  for (const e of events) {
    if (e.session.seq > last) last = e.session.seq;
    if (e.session.seq === top.seq) at = e;
  }
  if (events.length === 0 || last < top.seq) {
    return [
      {
        kind: 'audit.gap',
        sessionId,
        seqFrom: last + 1,
        seqTo: top.seq,
        detail: missingTailDetail(last + 1, top.seq, top.by, events.length > 0),
      },
    ];
  }
  if (at !== undefined && at.hash !== top.hash) {
    return [
      {
        kind: 'audit.tampered',
        sessionId,
        seqFrom: top.seq,
        seqTo: top.seq,
        detail: `event ${at.id} (seq ${top.seq}) is not the event the sidecar's ${top.by} recorded there`,
      },
    ];
  }
  return [];
}
