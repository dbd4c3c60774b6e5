import { type CheckpointProblem, verifyCheckpoint } from '@pgwarden/policy';
import type { ChainEvent, ChainFinding } from '../chain/verify-chain.js';
import { type AuditKey, type AuditKeyring, keyAllows } from './audit-keys.js';
import type { SignatureState } from './signature-states.js';

/**
 * What the collector makes of `audit.checkpoint` events (contract: checkpoint-signature.ts in @pgwarden/policy).
 * A valid checkpoint at seq n signs the hash of event n - 1, which covers every earlier event of the chain: it
 * vouches for events 1..n-1. Pure: the keys come in as data.
 */
export const CHECKPOINT_TYPE = 'audit.checkpoint';

export { SIGNATURE_STATES, type SignatureState } from './signature-states.js';

export interface SignatureReport {
  state: SignatureState;
  /** The highest seq a valid checkpoint vouches for (and with it every earlier event); null when none does. */
  signedSeq: number | null;
  /** The name (in the audit keys file) of the key that signed that checkpoint. */
  signedBy: string | null;
  /** Events after `signedSeq` that no valid checkpoint covers, not counting the checkpoint itself. */
  unsignedEvents: number;
}

export type CheckpointJudgement =
  | { vouched: number; key: string }
  | { finding: ChainFinding }
  /** No keys are configured: the checkpoint is neither trusted nor held against the chain. */
  | 'unjudged';

/** Judges the checkpoint events of one chain (see `judgeCheckpoint`); called only for linked, hash-checked ones. */
export type CheckpointJudge = (event: ChainEvent) => CheckpointJudgement;

/** The namespace an event is filed under (`identity.namespace`, as for the subject check), null without one. */
export function namespaceOf(e: ChainEvent): string | null {
  const ns = (e as { identity?: { namespace?: unknown } }).identity?.namespace;
  return typeof ns === 'string' ? ns : null;
}

/**
 * Checks one checkpoint event against the keyring. The key must be allowed for every namespace in `namespaces`:
 * the chain's (the namespace its session is filed under) and the checkpoint's own, so a key scoped to one
 * namespace cannot vouch for a session shown under another.
 */
export function judgeCheckpoint(
  e: ChainEvent,
  keyring: AuditKeyring,
  namespaces: readonly (string | null)[],
): CheckpointJudgement {
  if (keyring.keys.length === 0) return 'unjudged';
  const inScope = (keyId: string) => {
    const k = keyring.byId.get(keyId);
    return k && namespaces.every((ns) => keyAllows(k, ns)) ? k.key : undefined;
  };
  const verdict = verifyCheckpoint(e as Parameters<typeof verifyCheckpoint>[0], inScope);
  if (verdict.ok) return { vouched: verdict.seq, key: keyring.byId.get(verdict.keyId)?.name ?? verdict.keyId };
  const seq = e.session.seq;
  return {
    finding: {
      kind: 'audit.tampered',
      sessionId: e.session.id,
      seqFrom: seq,
      seqTo: seq,
      detail: problemDetail(e, verdict.problem, keyring, namespaces),
    },
  };
}

/** A key id as a checkpoint states it: attacker-chosen text, so anything but 16 hex digits is quoted and cut. */
const shownKeyId = (id: string) => (/^[0-9a-f]{16}$/.test(id) ? id : JSON.stringify(id.slice(0, 64)));

function problemDetail(
  e: ChainEvent,
  problem: CheckpointProblem,
  keyring: AuditKeyring,
  namespaces: readonly (string | null)[],
): string {
  const at = `checkpoint ${e.id}`;
  if (problem === 'malformed') return `${at} malformed: its body is not {seq, hash, key, sig}`;
  // Any other problem comes after the body was found well-formed, so the key id is a string.
  const keyId = String((e as { checkpoint?: { key?: unknown } }).checkpoint?.key);
  const known: AuditKey | undefined = keyring.byId.get(keyId);
  const key = known ? `key ${known.name} (${keyId})` : `key ${shownKeyId(keyId)}`;
  switch (problem) {
    case 'not-preceding':
      return `${at} not-preceding: it does not sign the event before it (seq ${e.session.seq - 1}), ${key}`;
    case 'unknown-key': {
      const outside = known && namespaces.find((ns) => !keyAllows(known, ns));
      if (known && outside !== undefined)
        return `${at} wrong-namespace: signed by ${key}, which may not vouch for ${outside === null ? 'events without a namespace' : `namespace ${JSON.stringify(outside)}`}`;
      return `${at} unknown-key: signed by ${key}, which is not in the audit keys`;
    }
    case 'bad-signature':
      return `${at} bad-signature: the signature does not verify under ${key}`;
  }
}

/** Events after the one vouched for at `signedSeq`, not counting the checkpoint at signedSeq + 1 itself. */
export function unsignedAfter(signedSeq: number | null, firstSeq: number, lastSeq: number): number {
  return signedSeq === null ? Math.max(0, lastSeq - firstSeq + 1) : Math.max(0, lastSeq - signedSeq - 1);
}

/**
 * The state from the highest vouched-for seq and the chain's last seq; without a valid checkpoint, from what the
 * checkpoints seen since `previous` was decided were (any unjudged: unverified; only invalid ones: unsigned).
 */
export function signatureState(
  signedSeq: number | null,
  lastSeq: number,
  seen: { invalid: number; unjudged: number },
  previous: SignatureState = 'unsigned',
): SignatureState {
  if (signedSeq !== null) return lastSeq - signedSeq - 1 > 0 ? 'partial' : 'signed';
  if (seen.unjudged > 0) return 'unverified';
  if (seen.invalid > 0) return 'unsigned';
  return previous;
}

/** The first key that may vouch for events of `namespace`, if any: such a session is expected to be signed. */
export function keyCovering(keyring: AuditKeyring, namespace: string | null): AuditKey | undefined {
  return keyring.keys.find((k) => keyAllows(k, namespace));
}

/**
 * `--require-signed-audit`: an ended session must be `signed`, and a session of a namespace some key covers must
 * carry at least one valid checkpoint. Returns the finding (kind `audit.unsigned`) when the session falls short.
 */
export function unsignedFinding(
  s: {
    sessionId: string;
    namespace: string | null;
    ended: boolean;
    firstSeq: number;
    lastSeq: number;
    signature: SignatureReport;
  },
  keyring: AuditKeyring,
): ChainFinding | undefined {
  const sig = s.signature;
  const base = { kind: 'audit.unsigned' as const, sessionId: s.sessionId, seqTo: s.lastSeq };
  if (s.ended && sig.state !== 'signed') {
    if (sig.signedSeq !== null)
      return {
        ...base,
        seqFrom: sig.signedSeq + 2,
        detail: `the session ended with ${sig.unsignedEvents} event(s) after the last valid checkpoint (seq ${sig.signedSeq} and before signed by ${sig.signedBy})`,
      };
    return { ...base, seqFrom: s.firstSeq, detail: 'the session ended without a valid checkpoint' };
  }
  const covering = keyCovering(keyring, s.namespace);
  if (sig.signedSeq === null && covering)
    return {
      ...base,
      seqFrom: s.firstSeq,
      detail: `no valid checkpoint, though key ${covering.name} covers ${s.namespace === null ? 'events without a namespace' : `namespace ${JSON.stringify(s.namespace)}`}`,
    };
  return undefined;
}
