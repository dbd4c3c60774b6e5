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

  it('after a rotation seals under the current key only and opens under any, telling which', () => {
    const [oldKey, newKey, other] = [randomBytes(32), randomBytes(32), randomBytes(32)];
    const before = new RefreshTokenSeal(oldKey).seal(token, 's');
    const rotated = new RefreshTokenSeal(newKey, [other, oldKey]);
    expect(rotated.unseal(before, 's')).toEqual({ token, current: false });
    expect(rotated.unseal(before, 't')).toBeUndefined();
    const after = rotated.seal(token, 's');
    expect(rotated.unseal(after, 's')).toEqual({ token, current: true });
    // Sealed under the new key: the old key alone no longer opens it, the new one alone does.
    expect(new RefreshTokenSeal(oldKey).open(after, 's')).toBeUndefined();
    expect(new RefreshTokenSeal(newKey).open(after, 's')).toBe(token);
    // The old key gone: what only it sealed opens no more.
    expect(new RefreshTokenSeal(newKey, [other]).unseal(before, 's')).toBeUndefined();
    // The next key staged as a previous one before it becomes current opens what replicas already on it sealed.
    expect(new RefreshTokenSeal(oldKey, [newKey]).unseal(after, 's')).toEqual({ token, current: false });
    const files = [file('current', newKey), file('previous', `${oldKey.toString('hex')}\n`)];
    expect(RefreshTokenSeal.fromFiles(files[0], [files[1]]).unseal(before, 's')).toEqual({ token, current: false });
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
