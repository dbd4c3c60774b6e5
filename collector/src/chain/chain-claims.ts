import { namespaceOf } from '../signatures/checkpoint-judgement.js';
import type { ChainEvent, ChainFinding } from './verify-chain.js';

/**
 * What an event claims about the chain it joins, beyond its hash and link: which namespace it belongs to, and which
 * position. Pure; the store and the full verification both apply these.
 */

/**
 * Events that name another namespace than the session they join. A sidecar serves one namespace, so every event of
 * its chains names the same one; the subject check (ingest-queue.ts) only ties an event to the NATS user that sent
 * it, so without this one namespace's user could add events to another namespace's session by naming its id.
 * `sessionNamespace` is the namespace the session is filed under (null: its events name none). An event naming no
 * namespace joins any session: only a user allowed on every namespace's subjects can send one.
 */
export function foreignEvents(sessionNamespace: string | null, events: readonly ChainEvent[]): ChainFinding[] {
  const out: ChainFinding[] = [];
  for (const e of events) {
    const ns = namespaceOf(e);
    if (ns === null || ns === sessionNamespace) continue;
    out.push({
      kind: 'audit.tampered',
      sessionId: e.session.id,
      seqFrom: e.session.seq,
      seqTo: e.session.seq,
      detail: `event ${e.id} (seq ${e.session.seq}) names namespace ${JSON.stringify(ns)}, its session ${sessionNamespace === null ? 'none' : JSON.stringify(sessionNamespace)}`,
    });
  }
  return out;
}

/**
 * A second event for a position already verified: a sidecar never writes two (a redelivery is the same event and
 * is dropped as a duplicate), so it is a replacement or a replay under another message id.
 */
export function secondEventFinding(e: ChainEvent, why: string): ChainFinding {
  return {
    kind: 'audit.tampered',
    sessionId: e.session.id,
    seqFrom: e.session.seq,
    seqTo: e.session.seq,
    detail: `a second event claims seq ${e.session.seq} (${e.id}): ${why}`,
  };
}
