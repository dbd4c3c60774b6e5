import { type KeyObject, sign, verify } from 'node:crypto';
import { canonicalJson } from '../api/canonical-json.js';

/**
 * Ed25519 over `context` + the canonical JSON of a message without its `sig`: what approval decisions and control
 * messages are signed as. The context separates the domains, so a signature made for one kind of message never
 * verifies as another.
 */
function signedBytes(context: string, message: { sig?: unknown }): Buffer {
  const { sig: _sig, ...rest } = message;
  return Buffer.from(context + canonicalJson(rest), 'utf8');
}

/** The base64 signature of `message` (its own `sig`, if any, left out). */
export function signMessage(context: string, message: { sig?: unknown }, key: KeyObject): string {
  return sign(null, signedBytes(context, message), key).toString('base64');
}

/** Whether one of `keys` signed exactly this message, its base64 signature in `sig`. */
export function verifyMessage(context: string, message: { sig?: unknown }, keys: readonly KeyObject[]): boolean {
  if (typeof message.sig !== 'string') return false;
  const sig = Buffer.from(message.sig, 'base64');
  if (sig.length !== 64) return false;
  const bytes = signedBytes(context, message);
  return keys.some((k) => verify(null, bytes, k, sig));
}
