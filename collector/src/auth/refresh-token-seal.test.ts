import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { RefreshTokenSeal } from './refresh-token-seal.js';

describe('refresh tokens sealed for the store', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-seal-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, content: string | Buffer) => {
    const path = join(dir, name);
    writeFileSync(path, content);
    return path;
  };
  const token = `rt-${randomBytes(24).toString('hex')}`;

  it('opens only for the session it was sealed for, under the same key, unaltered', () => {
    const key = randomBytes(32);
    const seal = new RefreshTokenSeal(key);
    const sealed = seal.seal(token, 'session-a');
    expect(sealed.includes(Buffer.from(token))).toBe(false);
    expect(seal.open(sealed, 'session-a')).toBe(token);
    // Two seals of one token differ (a fresh IV each time).
    expect(seal.seal(token, 'session-a').equals(sealed)).toBe(false);
    // Moved to another session's row, or opened without its cookie: no token.
    expect(seal.open(sealed, 'session-b')).toBeUndefined();
    expect(new RefreshTokenSeal(randomBytes(32)).open(sealed, 'session-a')).toBeUndefined();
    for (let i = 0; i < sealed.length; i++) {
      const bent = Buffer.from(sealed);
      bent[i] ^= 1;
      expect(seal.open(bent, 'session-a'), `byte ${i}`).toBeUndefined();
    }
    expect(seal.open(sealed.subarray(0, 20), 'session-a')).toBeUndefined();
  });

  it('reads the key as 32 bytes, 64 hex digits or base64, the same key each way', () => {
    const key = randomBytes(32);
    const sealed = new RefreshTokenSeal(key).seal(token, 's');
    for (const [name, content] of [
      ['raw', key],
      ['hex', `${key.toString('hex')}\n`],
      ['base64', `${key.toString('base64')}\n`],
      ['base64url', key.toString('base64url')],
    ] as const)
      expect(RefreshTokenSeal.fromFile(file(name, content)).open(sealed, 's'), name).toBe(token);
  });

  it('refuses to start with a missing, short or malformed key, naming the file but never its content', () => {
    const secret = 'not-a-key-but-a-secret-all-the-same';
    for (const path of [join(dir, 'missing'), file('short', randomBytes(16)), file('text', secret)]) {
      let err: unknown;
      try {
        RefreshTokenSeal.fromFile(path);
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({ code: 'COLLECTOR_BAD_CONFIG', message: expect.stringContaining(path) });
      expect((err as Error).message).not.toContain(secret);
    }
  });
});
