import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { keyResolverFromEnv, secretFileKeyResolver } from './secret-key-files.js';

describe('secretFileKeyResolver', () => {
  it('reads <dir>/<secret>/<key> (the mounted-Secret layout) and refuses path tricks', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgw-keys-'));
    mkdirSync(join(dir, 'pii-key'));
    writeFileSync(join(dir, 'pii-key', 'hmac'), 'k3y');
    writeFileSync(join(dir, 'outside'), 'nope');
    const resolve = secretFileKeyResolver(dir);
    expect(resolve({ name: 'pii-key', key: 'hmac' })?.toString()).toBe('k3y');
    expect(resolve({ name: 'pii-key', key: 'missing' })).toBeUndefined();
    expect(resolve({ name: '..', key: 'outside' })).toBeUndefined();
    expect(resolve({ name: 'pii-key/..', key: 'outside' })).toBeUndefined();
    expect(keyResolverFromEnv({ PGWARDEN_MASKING_KEYS_DIR: dir })?.({ name: 'pii-key', key: 'hmac' })?.toString()).toBe(
      'k3y',
    );
    expect(keyResolverFromEnv({})).toBeUndefined();
  });
});
