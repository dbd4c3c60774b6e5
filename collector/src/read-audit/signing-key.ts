import { type AuditSigner, auditSigner } from '@pgwarden/policy';

/**
 * The signer of `--audit-signing-key` from its PEM text. Refusals say why, never what the file holds: an OpenSSL
 * decoder message is replaced by a fixed one rather than trusted not to quote what it could not parse.
 */
export function collectorAuditSigner(pem: string): AuditSigner {
  try {
    return auditSigner(pem);
  } catch (err) {
    const message = (err as Error).message;
    if (/^the audit signing key must be Ed25519, not [\w-]+$/.test(message)) throw err;
    throw new Error(
      /-----BEGIN PUBLIC KEY-----/.test(pem)
        ? 'this is a public key: give the private key (--audit-keys gets the public one)'
        : 'not a PEM (PKCS#8) private key; `pgwarden audit keygen --out FILE` writes one',
    );
  }
}
