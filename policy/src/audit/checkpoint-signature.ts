import { type KeyObject, sign, verify } from 'node:crypto';
import { ed25519KeyId, ed25519PrivateKey, ed25519PublicKey } from '../crypto/ed25519-keys.js';
import type { AuditCheckpoint } from './event-types.js';

/**
 * Signed audit checkpoints. The hash chain alone is unkeyed: whoever can write the stream or the collector's store
 * can rewrite a session and recompute every hash. A sidecar given a signing key (`--audit-signing-key`, mounted into
 * its container only) adds `audit.checkpoint` events to each chain; each signs the hash of the event before it, and
 * that hash covers every earlier event of the chain. The collector, holding only public keys, then tells which events
 * a key holder vouched for. Signing costs ~50 µs, so it is done per checkpoint, not per statement.
 */

/** Domain separation: these bytes are signed for nothing else (approval decisions sign another context). */
const CONTEXT = 'pgwarden audit checkpoint v1\n';

/** The bytes a checkpoint signs: the chain it belongs to and the position and hash it vouches for. */
export function checkpointSignedBytes(sessionId: string, seq: number, hash: string): Buffer {
  return Buffer.from(`${CONTEXT}${sessionId}\n${seq}\n${hash}`, 'utf8');
}

export interface AuditSigner {
  /** ed25519KeyId of the key: what checkpoints name and the collector looks keys up by. */
  readonly keyId: string;
  /** The checkpoint body vouching for event `seq` (hash `hash`) of chain `sessionId`. */
  checkpoint(sessionId: string, seq: number, hash: string): AuditCheckpoint;
}

/**
 * A signer from a PEM (PKCS#8) Ed25519 private key, as `pgwarden audit keygen` writes it; throws otherwise. Its
 * refusals say why, never what the text holds: an OpenSSL decoder message is replaced by a fixed one rather than
 * trusted not to quote what it could not parse (callers put the message in logs and start-up errors).
 */
export function auditSigner(pem: string): AuditSigner {
  let key: KeyObject;
  try {
    key = ed25519PrivateKey(pem, 'audit signing key');
  } catch (err) {
    const message = (err as Error).message;
    if (/^the audit signing key must be Ed25519, not [\w-]+$/.test(message)) throw err;
    throw new Error(
      /-----BEGIN PUBLIC KEY-----/.test(pem)
        ? "this is a public key: give the private key (the public one goes in the collector's --audit-keys)"
        : 'not a PEM (PKCS#8) private key; `pgwarden audit keygen --out FILE` writes one',
    );
  }
  const keyId = ed25519KeyId(key);
  return {
    keyId,
    checkpoint: (sessionId, seq, hash) => ({
      seq,
      hash,
      key: keyId,
      sig: sign(null, checkpointSignedBytes(sessionId, seq, hash), key).toString('base64'),
    }),
  };
}

/** A verification key from PEM (`-----BEGIN PUBLIC KEY-----`) with its key id; refuses private keys. */
export function auditVerifyKey(pem: string): { keyId: string; key: KeyObject } {
  const key = ed25519PublicKey(pem, 'pgwarden audit keygen');
  return { keyId: ed25519KeyId(key), key };
}

export type CheckpointProblem =
  /** The body is not a checkpoint (missing or mistyped members). */
  | 'malformed'
  /** It does not sign the event right before it (seq - 1 and prevHash): a checkpoint cannot vouch elsewhere. */
  | 'not-preceding'
  /** No key with this id is trusted (for this event). */
  | 'unknown-key'
  | 'bad-signature';

export type CheckpointVerdict = { ok: true; keyId: string; seq: number } | { ok: false; problem: CheckpointProblem };

/**
 * Checks an `audit.checkpoint` event: its body, that it signs its immediate predecessor, and the signature under
 * the key `keyFor` returns for its key id (undefined: not trusted; a caller scoping keys to namespaces decides that
 * there). Whether the predecessor really has that hash is the chain's job, which links prevHash to it.
 */
export function verifyCheckpoint(
  event: { session: { id: string; seq: number }; prevHash?: string | null; checkpoint?: unknown },
  keyFor: (keyId: string) => KeyObject | undefined,
): CheckpointVerdict {
  const c = event.checkpoint as Partial<AuditCheckpoint> | undefined;
  if (
    typeof c !== 'object' ||
    c === null ||
    typeof c.seq !== 'number' ||
    typeof c.hash !== 'string' ||
    typeof c.key !== 'string' ||
    typeof c.sig !== 'string'
  )
    return { ok: false, problem: 'malformed' };
  if (c.seq !== event.session.seq - 1 || c.hash !== event.prevHash) return { ok: false, problem: 'not-preceding' };
  const key = keyFor(c.key);
  if (key === undefined) return { ok: false, problem: 'unknown-key' };
  const sig = Buffer.from(c.sig, 'base64');
  if (sig.length !== 64 || !verify(null, checkpointSignedBytes(event.session.id, c.seq, c.hash), key, sig))
    return { ok: false, problem: 'bad-signature' };
  return { ok: true, keyId: c.key, seq: c.seq };
}
