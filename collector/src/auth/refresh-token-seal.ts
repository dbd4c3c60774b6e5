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
 *
 * Rotation (`--web-session-previous-key-file`): tokens are sealed under the current key only and opened under any of
 * the keys; one opened under a previous key is sealed again under the current one at its session's next renewal
 * (WebSessions.renewed). The layout names no key: opening tries each in turn, and a GCM tag that fails under the
 * wrong key says so (the chance of a false pass is 2^-128), at the cost of one AES pass over a short token per key.
 */
export class RefreshTokenSeal {
  private readonly key: Buffer;
  private readonly previous: readonly Buffer[];

  constructor(key: Buffer, previous: readonly Buffer[] = []) {
    for (const k of [key, ...previous])
      if (k.length !== 32) throw new CollectorError('COLLECTOR_BAD_CONFIG', 'the web session key must be 32 bytes');
    this.key = Buffer.from(key);
    this.previous = previous.map((k) => Buffer.from(k));
  }

  /** The key in `current` seals and opens; those in `previous` (keys being rotated out, or in) only open. */
  static fromFiles(current: string, previous: readonly string[] = []): RefreshTokenSeal {
    return new RefreshTokenSeal(
      keyFromFile(current, 'web session key file'),
      previous.map((p) => keyFromFile(p, 'previous web session key file')),
    );
  }

  /**
   * The key in `path`: 32 bytes as they are, or written as 64 hex digits or base64 (as `openssl rand -base64 32`
   * prints it, and as a Secret's data holds it). The message names the file, never what it holds.
   */
  static fromFile(path: string): RefreshTokenSeal {
    return RefreshTokenSeal.fromFiles(path);
  }

  seal(token: string, sessionId: string): Buffer {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(aad(sessionId));
    const body = Buffer.concat([cipher.update(token, 'utf8'), cipher.final()]);
    return Buffer.concat([Buffer.from([VERSION]), iv, body, cipher.getAuthTag()]);
  }

  /** The token, or undefined when it was not sealed for this session under one of the keys (or was altered). */
  open(sealed: Buffer, sessionId: string): string | undefined {
    return this.unseal(sealed, sessionId)?.token;
  }

  /** The token and whether the current key sealed it (else it is due to be sealed again under the current one). */
  unseal(sealed: Buffer, sessionId: string): { token: string; current: boolean } | undefined {
    if (sealed.length < 1 + IV_BYTES + TAG_BYTES || sealed[0] !== VERSION) return undefined;
    const current = openWith(this.key, sealed, sessionId);
    if (current !== undefined) return { token: current, current: true };
    for (const key of this.previous) {
      const token = openWith(key, sealed, sessionId);
      if (token !== undefined) return { token, current: false };
    }
    return undefined;
  }
}

function openWith(key: Buffer, sealed: Buffer, sessionId: string): string | undefined {
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(1, 1 + IV_BYTES));
    decipher.setAAD(aad(sessionId));
    decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
    const body = sealed.subarray(1 + IV_BYTES, sealed.length - TAG_BYTES);
    return Buffer.concat([decipher.update(body), decipher.final()]).toString('utf8');
  } catch {
    return undefined;
  }
}

/** The key in `path`; the message names the file (and which flag's it is), never what it holds. */
function keyFromFile(path: string, what: string): Buffer {
  let raw: Buffer;
  try {
    raw = readFileSync(path);
  } catch (err) {
    throw new CollectorError(
      'COLLECTOR_BAD_CONFIG',
      `${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`,
    );
  }
  const key = keyOf(raw);
  if (!key)
    throw new CollectorError(
      'COLLECTOR_BAD_CONFIG',
      `${what} ${path} holds no 32-byte key (32 bytes, or 64 hex digits, or their base64): ` +
        'make one with `openssl rand -out FILE 32`',
    );
  return key;
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
