import * as crypto from 'node:crypto';
import { canonicalJson } from './canonical-json.js';
import type { AuditEvent, UnsealedAuditEvent } from './event-types.js';

/**
 * Per-session hash chain (DESIGN §5). Each event carries `prevHash` (the previous event's `hash`, null at seq 1)
 * and `hash` = sha256 over the canonical JSON of the event without `hash`. Removing an event leaves a hole in
 * `session.seq`; altering one breaks its own hash, or, if the hash was recomputed, the next event's `prevHash`.
 */

/**
 * sha256 hex of a string's UTF-8. The one-shot `crypto.hash` (Node ≥ 20.12) skips the Hash object a sealed event
 * would otherwise allocate; the result is the same bytes either way.
 */
const oneShot = (crypto as { hash?: (alg: string, data: string, enc: 'hex') => string }).hash;
const sha256Hex: (s: string) => string = oneShot
  ? (s) => oneShot('sha256', s, 'hex')
  : (s) => crypto.createHash('sha256').update(s).digest('hex');

/**
 * sha256 (hex) of an event's canonical JSON text, for producers that write the canonical encoding themselves
 * (the sidecar's statement events); the same digest sealEventToJson computes.
 */
export function hashCanonical(canonical: string): string {
  return sha256Hex(canonical);
}

/** The hash an event should carry: sha256 (hex) of its canonical JSON with `hash` left out. */
export function hashEvent(event: Omit<AuditEvent, 'hash'> | AuditEvent): string {
  const { hash: _ignored, ...rest } = event as AuditEvent;
  return sha256Hex(canonicalJson(rest));
}

/** Where a session's chain stands: the next seq to hand out and the hash to link to. */
export interface ChainState {
  seq: number;
  prevHash: string | null;
}

export function newChain(): ChainState {
  return { seq: 0, prevHash: null };
}

/** Gives an event the next seq of its session, its id, prevHash and hash, and advances `chain`. */
export function sealEvent(unsealed: UnsealedAuditEvent, chain: ChainState): AuditEvent {
  return sealEventToJson(unsealed, chain).event;
}

/**
 * sealEvent, also returning the event as JSON text: the canonical encoding it was hashed over with `hash`
 * appended as the last member. Any JSON parser reads it back to the same event, so a sink can send this text
 * instead of serialising the event a second time.
 */
export function sealEventToJson(unsealed: UnsealedAuditEvent, chain: ChainState): { event: AuditEvent; json: string } {
  const seq = chain.seq + 1;
  const sessionId = unsealed.session.id;
  const event = {
    ...unsealed,
    id: `${sessionId}.${seq}`,
    session: { id: sessionId, seq },
    prevHash: chain.prevHash,
  } as AuditEvent;
  const canonical = canonicalJson(event);
  const hash = sha256Hex(canonical);
  event.hash = hash;
  chain.seq = seq;
  chain.prevHash = hash;
  return { event, json: `${canonical.slice(0, -1)},"hash":"${hash}"}` };
}

export interface ChainGap {
  session: string;
  /** First and last missing seq, inclusive. */
  fromSeq: number;
  toSeq: number;
}

export type TamperReason = 'hash-mismatch' | 'broken-link' | 'conflicting-duplicate' | 'bad-genesis' | 'bad-id';

export interface ChainTamper {
  session: string;
  seq: number;
  id: string;
  reason: TamperReason;
}

export interface ChainReport {
  ok: boolean;
  sessions: number;
  events: number;
  gaps: ChainGap[];
  tampered: ChainTamper[];
  /** Exact re-deliveries of an event already seen (harmless: at-least-once delivery). */
  duplicates: number;
  /** Sessions whose chain has no `session.end` (still open, or their tail was lost: not an error by itself). */
  open: string[];
}

type ChainEvent = Pick<AuditEvent, 'id' | 'type' | 'session' | 'prevHash' | 'hash'>;

/**
 * Verifies the chains of any set of events (several sessions, any order, duplicates allowed).
 * A gap before a session's first event counts from seq 1; the tail after the last event is only known
 * to be missing when a `session.end` is absent, reported as `open`, not as a gap.
 */
export function verifyChain(events: readonly ChainEvent[]): ChainReport {
  const bySession = new Map<string, Map<number, ChainEvent>>();
  const tampered: ChainTamper[] = [];
  let duplicates = 0;
  for (const e of events) {
    const sid = e.session.id;
    let m = bySession.get(sid);
    if (!m) {
      m = new Map();
      bySession.set(sid, m);
    }
    const seen = m.get(e.session.seq);
    if (seen) {
      if (seen.hash === e.hash && hashEvent(seen as AuditEvent) === hashEvent(e as AuditEvent)) duplicates++;
      else tampered.push({ session: sid, seq: e.session.seq, id: e.id, reason: 'conflicting-duplicate' });
      continue;
    }
    m.set(e.session.seq, e);
  }
  const gaps: ChainGap[] = [];
  const open: string[] = [];
  for (const [sid, m] of bySession) {
    const seqs = [...m.keys()].sort((a, b) => a - b);
    let expected = 1;
    let prev: ChainEvent | undefined;
    let ended = false;
    for (const seq of seqs) {
      const e = m.get(seq)!;
      if (seq > expected) gaps.push({ session: sid, fromSeq: expected, toSeq: seq - 1 });
      if (e.id !== `${sid}.${seq}`) tampered.push({ session: sid, seq, id: e.id, reason: 'bad-id' });
      if (hashEvent(e as AuditEvent) !== e.hash) {
        tampered.push({ session: sid, seq, id: e.id, reason: 'hash-mismatch' });
      } else if (seq === 1 && e.prevHash !== null) {
        tampered.push({ session: sid, seq, id: e.id, reason: 'bad-genesis' });
      } else if (prev && prev.session.seq === seq - 1 && e.prevHash !== prev.hash) {
        tampered.push({ session: sid, seq, id: e.id, reason: 'broken-link' });
      }
      if (e.type === 'session.end') ended = true;
      prev = e;
      expected = seq + 1;
    }
    if (!ended && m.get(1)?.type === 'session.start') open.push(sid);
  }
  return {
    ok: gaps.length === 0 && tampered.length === 0,
    sessions: bySession.size,
    events: events.length - duplicates,
    gaps,
    tampered,
    duplicates,
    open,
  };
}
