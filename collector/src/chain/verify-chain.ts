import { type AuditKeyring, NO_KEYS } from '../signatures/audit-keys.js';
import {
  CHECKPOINT_TYPE,
  type CheckpointJudge,
  judgeCheckpoint,
  namespaceOf,
  type SignatureReport,
  signatureState,
  unsignedAfter,
} from '../signatures/checkpoint-judgement.js';
import { foreignEvents } from './chain-claims.js';

/**
 * Per-session hash-chain checking, pure. Events of a session carry `session.seq` (consecutive from the first
 * sequence number), `prevHash` (the previous event's `hash`, absent/null on the first) and `hash` (over the
 * canonical encoding of the event without `hash`). A missing event shows as a hole in `seq`; an altered one as a
 * hash that does not recompute, or a link that does not match.
 */
export interface ChainEvent {
  id: string;
  session: { id: string; seq: number };
  prevHash?: string | null;
  hash: string;
  type: string;
}

export interface ChainRules {
  /** Sequence number of a session's first event. */
  firstSeq: number;
  /** Recomputes an event's hash from its content. */
  hashOf(event: ChainEvent): string;
  /** The id an event at this position must carry, when ids are derived from the position. */
  idOf?(sessionId: string, seq: number): string;
}

/**
 * `audit.unsigned` comes only from a full verification with `--require-signed-audit` (never stored);
 * `audit.gap.unattributed` only from a sidecar's declaration naming no (or not all) sessions (store/declared-gaps.ts).
 */
export type FindingKind = 'audit.gap' | 'audit.gap.unattributed' | 'audit.tampered' | 'audit.unsigned';

export interface ChainFinding {
  kind: FindingKind;
  sessionId: string;
  seqFrom: number;
  seqTo: number;
  detail: string;
}

/** How far a session's chain is verified: every event up to `verifiedSeq` is present and linked. */
export interface ChainCursor {
  verifiedSeq: number;
  verifiedHash: string | null;
}

export function startCursor(rules: ChainRules): ChainCursor {
  return { verifiedSeq: rules.firstSeq - 1, verifiedHash: null };
}

/** Checks one event against the chain so far; returns a finding when it does not fit. */
function check(cursor: ChainCursor, e: ChainEvent, rules: ChainRules): ChainFinding | undefined {
  const sid = e.session.id;
  const seq = e.session.seq;
  let recomputed: string;
  try {
    recomputed = rules.hashOf(e);
  } catch (err) {
    return {
      kind: 'audit.tampered',
      sessionId: sid,
      seqFrom: seq,
      seqTo: seq,
      detail: `event ${e.id} cannot be hashed: ${(err as Error).message}`,
    };
  }
  if (rules.idOf && e.id !== rules.idOf(sid, seq)) {
    return {
      kind: 'audit.tampered',
      sessionId: sid,
      seqFrom: seq,
      seqTo: seq,
      detail: `event ${e.id} does not carry the id of seq ${seq}`,
    };
  }
  if (recomputed !== e.hash) {
    return {
      kind: 'audit.tampered',
      sessionId: sid,
      seqFrom: seq,
      seqTo: seq,
      detail: `event ${e.id} (seq ${seq}) content does not match its hash`,
    };
  }
  const prev = e.prevHash ?? null;
  if (seq === rules.firstSeq ? prev !== null && prev !== '' : prev !== cursor.verifiedHash) {
    return {
      kind: 'audit.tampered',
      sessionId: sid,
      seqFrom: seq,
      seqTo: seq,
      detail: `event ${e.id} (seq ${seq}) prevHash does not link to seq ${seq - 1}`,
    };
  }
  return undefined;
}

/** What the checkpoints passed in one `advance` were (see signatures/checkpoint-judgement.ts). */
export interface CheckpointTally {
  /** The highest seq a valid checkpoint vouched for, with its key's name. */
  vouched?: { seq: number; key: string };
  invalid: number;
  unjudged: number;
}

export interface AdvanceResult {
  cursor: ChainCursor;
  findings: ChainFinding[];
  /** The first missing sequence number when events beyond it are waiting, else undefined. */
  holeAt?: number;
  checkpoints: CheckpointTally;
}

function tally(t: CheckpointTally, e: ChainEvent, judge: CheckpointJudge, findings: ChainFinding[]): void {
  const j = judge(e);
  if (j === 'unjudged') t.unjudged += 1;
  else if ('finding' in j) {
    t.invalid += 1;
    findings.push(j.finding);
  } else if (t.vouched === undefined || j.vouched > t.vouched.seq) t.vouched = { seq: j.vouched, key: j.key };
}

/**
 * Incremental step: consumes `events` (any order, may include already-verified or duplicate ones) from `cursor`
 * as far as they are contiguous. A tampered event is reported and the chain continues from its stated hash, so one
 * altered event yields one finding rather than condemning everything after it. With `judge`, each checkpoint event
 * that fits the chain (its link to the event it signs checked here) is judged too.
 */
export function advance(
  cursor: ChainCursor,
  events: readonly ChainEvent[],
  rules: ChainRules,
  judge?: CheckpointJudge,
): AdvanceResult {
  // One event per seq is the rule; a list only where a seq repeats (redelivery or a conflicting forgery).
  const bySeq = new Map<number, ChainEvent | ChainEvent[]>();
  for (const e of events) {
    if (e.session.seq <= cursor.verifiedSeq) continue;
    const there = bySeq.get(e.session.seq);
    if (there === undefined) bySeq.set(e.session.seq, e);
    else if (Array.isArray(there)) there.push(e);
    else bySeq.set(e.session.seq, [there, e]);
  }
  const findings: ChainFinding[] = [];
  const checkpoints: CheckpointTally = { invalid: 0, unjudged: 0 };
  let verifiedSeq = cursor.verifiedSeq;
  let verifiedHash = cursor.verifiedHash;
  for (;;) {
    const next = bySeq.get(verifiedSeq + 1);
    if (next === undefined) break;
    bySeq.delete(verifiedSeq + 1);
    const e = Array.isArray(next) ? next[0] : next;
    const f = check({ verifiedSeq, verifiedHash }, e, rules);
    if (f) findings.push(f);
    // A checkpoint that does not itself fit the chain vouches for nothing; its finding is already there.
    else if (judge && e.type === CHECKPOINT_TYPE) tally(checkpoints, e, judge, findings);
    if (Array.isArray(next)) {
      for (let k = 1; k < next.length; k++) {
        const o = next[k];
        if (o.hash !== e.hash || o.id !== e.id) {
          findings.push({
            kind: 'audit.tampered',
            sessionId: e.session.id,
            seqFrom: e.session.seq,
            seqTo: e.session.seq,
            detail: `two different events claim seq ${e.session.seq} (${e.id}, ${o.id})`,
          });
        }
      }
    }
    verifiedSeq = e.session.seq;
    verifiedHash = e.hash;
  }
  return {
    cursor: { verifiedSeq, verifiedHash },
    findings,
    holeAt: bySeq.size > 0 ? verifiedSeq + 1 : undefined,
    checkpoints,
  };
}

export interface FullReport {
  sessionId: string;
  events: number;
  firstSeq: number | null;
  lastSeq: number | null;
  ended: boolean;
  findings: ChainFinding[];
  ok: boolean;
  signature: SignatureReport;
}

/**
 * Full re-verification of one session from its stored events, ignoring any state recorded at ingest: every
 * hash recomputed, every link checked, every hole reported (including a missing start, and events missing
 * before a recorded `session.end`), every checkpoint judged against `keyring` (none: reported `unverified`).
 */
export function verifySession(
  sessionId: string,
  events: readonly ChainEvent[],
  rules: ChainRules,
  expectedLastSeq?: number,
  keyring: AuditKeyring = NO_KEYS,
): FullReport {
  const sorted = [...events].sort((a, b) => a.session.seq - b.session.seq);
  const findings: ChainFinding[] = [];
  // The namespace the session is filed under: its first event's that names one (as at ingest).
  const sessionNamespace = sorted.map(namespaceOf).find((ns) => ns !== null) ?? null;
  const judge: CheckpointJudge = (e) => judgeCheckpoint(e, keyring, [...new Set([sessionNamespace, namespaceOf(e)])]);
  findings.push(...foreignEvents(sessionNamespace, sorted));
  const checkpoints: CheckpointTally = { invalid: 0, unjudged: 0 };
  const add = (t: CheckpointTally) => {
    checkpoints.invalid += t.invalid;
    checkpoints.unjudged += t.unjudged;
    if (t.vouched && (!checkpoints.vouched || t.vouched.seq > checkpoints.vouched.seq)) checkpoints.vouched = t.vouched;
  };
  let cursor = startCursor(rules);
  let i = 0;
  while (i < sorted.length) {
    const r = advance(cursor, sorted.slice(i), rules, judge);
    findings.push(...r.findings);
    add(r.checkpoints);
    cursor = r.cursor;
    i = sorted.findIndex((e) => e.session.seq > cursor.verifiedSeq);
    if (i === -1) break;
    const missingTo = sorted[i].session.seq - 1;
    findings.push({
      kind: 'audit.gap',
      sessionId,
      seqFrom: cursor.verifiedSeq + 1,
      seqTo: missingTo,
      detail: `events ${cursor.verifiedSeq + 1}..${missingTo} are missing`,
    });
    // Resume after the hole: the first event after it cannot be link-checked, only hash-checked. A checkpoint
    // there is still judged (a forged one is reported) but vouches for nothing: what it signs is missing.
    const resume = sorted[i];
    const f = check({ verifiedSeq: resume.session.seq - 1, verifiedHash: resume.prevHash ?? null }, resume, rules);
    if (f) findings.push(f);
    else if (resume.type === CHECKPOINT_TYPE) {
      const t: CheckpointTally = { invalid: 0, unjudged: 0 };
      tally(t, resume, judge, findings);
      add({ ...t, vouched: undefined });
    }
    cursor = { verifiedSeq: resume.session.seq, verifiedHash: resume.hash };
    i += 1;
  }
  const end = sorted.find((e) => e.type === 'session.end');
  const first = sorted[0]?.session.seq ?? rules.firstSeq;
  const last = sorted[sorted.length - 1]?.session.seq ?? rules.firstSeq - 1;
  if (expectedLastSeq !== undefined && expectedLastSeq > last) {
    // The store recorded (at ingest) events up to expectedLastSeq that are no longer there: a deleted tail.
    findings.push({
      kind: 'audit.gap',
      sessionId,
      seqFrom: last + 1,
      seqTo: expectedLastSeq,
      detail: `events ${last + 1}..${expectedLastSeq} were received but are missing now`,
    });
  }
  // The sidecar signs session.end with a checkpoint after it; anything else there is not the session's.
  const afterEnd = end ? sorted.filter((e) => e.session.seq > end.session.seq && e.type !== CHECKPOINT_TYPE) : [];
  if (end && afterEnd.length > 0) {
    findings.push({
      kind: 'audit.tampered',
      sessionId,
      seqFrom: afterEnd[0].session.seq,
      seqTo: afterEnd[afterEnd.length - 1].session.seq,
      detail: 'events recorded after session.end',
    });
  }
  const signedSeq = checkpoints.vouched?.seq ?? null;
  return {
    sessionId,
    events: sorted.length,
    firstSeq: sorted[0]?.session.seq ?? null,
    lastSeq: sorted[sorted.length - 1]?.session.seq ?? null,
    ended: end !== undefined,
    findings,
    ok: findings.length === 0,
    signature: {
      state: signatureState(signedSeq, last, checkpoints),
      signedSeq,
      signedBy: checkpoints.vouched?.key ?? null,
      unsignedEvents: unsignedAfter(signedSeq, first, last),
    },
  };
}
