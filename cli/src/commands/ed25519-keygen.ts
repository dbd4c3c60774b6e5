import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { writeFileSync } from 'node:fs';

/**
 * The `keygen` subcommands' common part (`approvals keygen`, `audit keygen`): a new Ed25519 key pair whose private
 * half goes to `out` alone (PEM PKCS#8, mode 0600 from creation, never over an existing file), and whose public
 * half is returned for the command to print. When `out` cannot be written it prints `<command>: cannot write …`
 * with the error code and exits 2; no key material is printed then or ever.
 */
export function writePrivateKey(out: string, command: string): KeyObject {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  try {
    writeFileSync(out, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
  } catch (err) {
    process.stderr.write(`${command}: cannot write ${out}: ${(err as NodeJS.ErrnoException).code ?? 'error'}\n`);
    process.exit(2);
  }
  return publicKey;
}

export const publicKeyPem = (key: KeyObject): string => String(key.export({ type: 'spki', format: 'pem' }));
