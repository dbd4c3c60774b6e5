import { createHash, createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';

/**
 * Ed25519 key parsing shared by every signature pgwarden makes or checks (approval decisions, audit checkpoints).
 * Each purpose signs its own context string, so a key used for two purposes still cannot have one signature
 * passed off as the other.
 */

/** A private key from PEM (PKCS#8); throws unless it is Ed25519. `purpose` names it in the error. */
export function ed25519PrivateKey(pem: string, purpose: string): KeyObject {
  const key = createPrivateKey(pem);
  if (key.asymmetricKeyType !== 'ed25519')
    throw new Error(`the ${purpose} must be Ed25519, not ${key.asymmetricKeyType}`);
  return key;
}

/**
 * A public key from PEM (`-----BEGIN PUBLIC KEY-----`); throws unless it is Ed25519. A private key is refused
 * (createPublicKey would quietly derive the public half), so one pasted by mistake into a ConfigMap or policy is
 * caught rather than published. `keygen` names the command that prints the public half.
 */
export function ed25519PublicKey(pem: string, keygen: string): KeyObject {
  if (/PRIVATE KEY/.test(pem)) throw new Error(`this is a private key: give the public key (${keygen})`);
  const key = createPublicKey(pem);
  if (key.type !== 'public' || key.asymmetricKeyType !== 'ed25519')
    throw new Error(`not an Ed25519 public key (${key.asymmetricKeyType ?? key.type})`);
  return key;
}

/** The first 16 hex digits of sha256 over the raw 32-byte public key: names a key without quoting it. */
export function ed25519KeyId(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  // The SPKI DER of an Ed25519 key is a fixed 12-byte prefix and the raw key.
  const raw = pub.export({ format: 'der', type: 'spki' }).subarray(-32);
  return createHash('sha256').update(raw).digest('hex').slice(0, 16);
}
