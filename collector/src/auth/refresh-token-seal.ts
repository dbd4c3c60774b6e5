import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { CollectorError } from '../errors.js';

const VERSION = 1;
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** Domain separation: this key seals nothing else, and a later format gets a new label. */
const AAD_LABEL = 'pgwarden web session refresh token v1\0';

/**
 * Refresh tokens of web sessions as the store keeps them (`--web-session-key-file`): AES-256-GCM under a key every
 * replica shares, with the session's id (the cookie's value, which the store never holds) as associated data. A
 * sealed token thus opens only for a request that presents its session's cookie: whoever holds the store and the key
 * but no cookie cannot open it, and one moved to another row fails its tag. Layout: version byte, 96-bit random IV
 * (NIST SP 800-38D §8.2.2; at most one seal per refresh, far below the 2^32 per key that random IVs allow),
 * ciphertext, 128-bit tag.
 */
export class RefreshTokenSeal {
  private readonly key: Buffer;

  constructor(key: Buffer) {
    if (key.length !== 32) throw new CollectorError('COLLECTOR_BAD_CONFIG', 'the web session key must be 32 bytes');
    this.key = Buffer.from(key);
  }

  /**
   * The key in `path`: 32 bytes as they are, or written as 64 hex digits or base64 (as `openssl rand -base64 32`
   * prints it, and as a Secret's data holds it). The message names the file, never what it holds.
   */
  static fromFile(path: string): RefreshTokenSeal {
    let raw: Buffer;
    try {
      raw = readFileSync(path);
    } catch (err) {
      throw new CollectorError(
        'COLLECTOR_BAD_CONFIG',
        `web session key file ${path}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`,
      );
    }
    const key = keyOf(raw);
    if (!key)
      throw new CollectorError(
        'COLLECTOR_BAD_CONFIG',
        `web session key file ${path} holds no 32-byte key (32 bytes, or 64 hex digits, or their base64): ` +
          'make one with `openssl rand -out FILE 32`',
      );
    return new RefreshTokenSeal(key);
  }

  seal(token: string, sessionId: string): Buffer {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(aad(sessionId));
    const body = Buffer.concat([cipher.update(token, 'utf8'), cipher.final()]);
    return Buffer.concat([Buffer.from([VERSION]), iv, body, cipher.getAuthTag()]);
  }

  /** The token, or undefined when it was not sealed for this session under this key (or was altered). */
  open(sealed: Buffer, sessionId: string): string | undefined {
    if (sealed.length < 1 + IV_BYTES + TAG_BYTES || sealed[0] !== VERSION) return undefined;
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.key, sealed.subarray(1, 1 + IV_BYTES));
      decipher.setAAD(aad(sessionId));
      decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
      const body = sealed.subarray(1 + IV_BYTES, sealed.length - TAG_BYTES);
      return Buffer.concat([decipher.update(body), decipher.final()]).toString('utf8');
    } catch {
      return undefined;
    }
  }
}

const aad = (sessionId: string) => Buffer.from(AAD_LABEL + sessionId, 'utf8');

function keyOf(raw: Buffer): Buffer | undefined {
  if (raw.length === 32) return raw;
  const text = raw.toString('latin1').trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, 'hex');
  if (/^[A-Za-z0-9+/_-]{43}={0,1}$/.test(text)) {
    const key = Buffer.from(text, 'base64');
    if (key.length === 32) return key;
  }
  return undefined;
}
