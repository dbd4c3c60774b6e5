import type { KeyObject } from 'node:crypto';
import { signMessage, verifyMessage } from '../crypto/domain-signature.js';
import { ed25519PrivateKey, ed25519PublicKey } from '../crypto/ed25519-keys.js';
import type { ApprovalDecisionMessage, ApprovalRevokedMessage } from './approval-messages.js';

/**
 * Signed approval decisions. Without them a sidecar takes a decision's approver from whoever could publish on
 * `pgwarden.approval.decision.<id>`, which only NATS permissions restrict. With a policy's `approval.decisionKeys`
 * it applies only decisions signed (Ed25519) by the collector's key, so a NATS user that may publish there, or a
 * NATS without permissions, cannot approve anything. The signature covers every field of the decision, the request
 * id (a UUID the sidecar chose) included, so it cannot be replayed for another statement.
 */

/** Domain separation: these bytes are signed for nothing else. */
const CONTEXT = 'pgwarden approval decision v1\n';
/** Revocations are signed in their own domain, so a signed decision can never pass for one, nor the reverse. */
const REVOKE_CONTEXT = 'pgwarden approval revocation v1\n';

/** The collector's signing key from a PEM private key; throws unless it is Ed25519. */
export function decisionSigningKey(pem: string): KeyObject {
  return ed25519PrivateKey(pem, 'approval signing key');
}

/** A verification key from a PEM public key (`-----BEGIN PUBLIC KEY-----`); throws unless it is Ed25519. */
export function decisionVerifyKey(pem: string): KeyObject {
  return ed25519PublicKey(pem, 'pgwarden approvals keygen');
}

/** The decision with its signature (base64) in `sig`. */
export function signDecision(d: ApprovalDecisionMessage, key: KeyObject): ApprovalDecisionMessage {
  return { ...d, sig: signMessage(CONTEXT, d, key) };
}

/** Whether one of `keys` signed exactly this decision. */
export function verifyDecision(d: ApprovalDecisionMessage, keys: readonly KeyObject[]): boolean {
  return verifyMessage(CONTEXT, d, keys);
}

/** The revocation with its signature (base64) in `sig`. */
export function signRevocation(r: ApprovalRevokedMessage, key: KeyObject): ApprovalRevokedMessage {
  return { ...r, sig: signMessage(REVOKE_CONTEXT, r, key) };
}

/** Whether one of `keys` signed exactly this revocation. */
export function verifyRevocation(r: ApprovalRevokedMessage, keys: readonly KeyObject[]): boolean {
  return verifyMessage(REVOKE_CONTEXT, r, keys);
}

const parsed = new Map<string, KeyObject | null>();
/**
 * The verification keys of a policy's `approval.decisionKeys`, parsed once per distinct PEM. A key that does not
 * parse verifies nothing (policy validation refuses such a policy before it gets here).
 */
export function decisionVerifyKeys(pems: readonly string[]): KeyObject[] {
  const out: KeyObject[] = [];
  for (const pem of pems) {
    let k = parsed.get(pem);
    if (k === undefined) {
      try {
        k = decisionVerifyKey(pem);
      } catch {
        k = null;
      }
      if (parsed.size > 64) parsed.clear();
      parsed.set(pem, k);
    }
    if (k) out.push(k);
  }
  return out;
}
