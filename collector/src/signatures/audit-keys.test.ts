import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { auditSigner } from '@pgwarden/policy';
import { afterAll, describe, expect, it } from 'vitest';
import { keyAllows, parseAuditKeys, watchAuditKeys } from './audit-keys.js';

const dir = mkdtempSync(join(tmpdir(), 'pgwarden-audit-keys-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A key pair as `pgwarden audit keygen` makes it: PKCS#8 private PEM, SPKI public PEM. */
function keyPair() {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const privatePem = String(privateKey.export({ type: 'pkcs8', format: 'pem' }));
  return { privatePem, publicPem: String(publicKey.export({ type: 'spki', format: 'pem' })) };
}

const block = (pem: string) =>
  pem
    .trim()
    .split('\n')
    .map((l) => `      ${l}`)
    .join('\n');

/** A keys file in the documented YAML shape. */
function keysYaml(entries: { name: string; pem: string; namespaces?: string[] }[]): string {
  return `keys:\n${entries
    .map(
      (e) =>
        `  - name: ${e.name}\n    publicKey: |\n${block(e.pem)}\n${e.namespaces ? `    namespaces: [${e.namespaces.join(', ')}]\n` : ''}`,
    )
    .join('')}`;
}

/** Writes the file the way a Secret update lands: a new file renamed over the old one (new inode). */
function replace(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
}

const a = keyPair();
const b = keyPair();

describe('parseAuditKeys', () => {
  it('reads YAML and JSON; keys are found by the id checkpoints name, scoped to their namespaces', () => {
    const ring = parseAuditKeys(
      keysYaml([
        { name: 'agents-2026', pem: a.publicPem, namespaces: ['agents'] },
        { name: 'all-2026', pem: b.publicPem },
      ]),
      'keys.yaml',
    );
    expect(ring.keys.map((k) => [k.name, k.namespaces])).toEqual([
      ['agents-2026', ['agents']],
      ['all-2026', undefined],
    ]);
    const idA = auditSigner(a.privatePem).keyId;
    expect(ring.byId.get(idA)?.name).toBe('agents-2026');
    expect(ring.byId.get(auditSigner(b.privatePem).keyId)?.name).toBe('all-2026');
    const scoped = ring.byId.get(idA)!;
    expect([keyAllows(scoped, 'agents'), keyAllows(scoped, 'billing'), keyAllows(scoped, null)]).toEqual([
      true,
      false,
      false,
    ]);
    expect(keyAllows(ring.keys[1], null)).toBe(true);

    const json = JSON.stringify({ keys: [{ name: 'k', publicKey: a.publicPem }] });
    expect(parseAuditKeys(json, 'keys.json').keys.map((k) => k.keyId)).toEqual([idA]);
  });

  it('refuses what it cannot trust, naming the entry and never quoting key material', () => {
    const rsa = String(
      generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' }),
    );
    const cases: [string, RegExp][] = [
      [keysYaml([{ name: 'oops', pem: a.privatePem }]), /entry 0 \(oops\): publicKey: this is a private key/],
      [keysYaml([{ name: 'rsa', pem: rsa }]), /entry 0 \(rsa\): publicKey: not an Ed25519 public key \(rsa\)/],
      [
        `keys:\n  - name: k\n    publicKey: x\n    privateKey: |\n${block(a.privatePem)}\n`,
        /entry 0: unknown field\(s\) privateKey/,
      ],
      ['keys:\n  - name: k\n    publicKey: "not a pem"\n', /entry 0 \(k\): publicKey: /],
      ['keys:\n  - name: k\n    publicKey: 7\n', /publicKey must be a PEM string/],
      [keysYaml([{ name: 'k', pem: a.publicPem, namespaces: [] }]), /namespaces must be a non-empty list/],
      [`keys:\n  - name: k\n    publicKey: |\n${block(a.publicPem)}\n    namespaces: agents\n`, /namespaces must be/],
      [
        keysYaml([
          { name: 'k', pem: a.publicPem },
          { name: 'k', pem: b.publicPem },
        ]),
        /entry 1: the name k appears twice/,
      ],
      [
        keysYaml([
          { name: 'one', pem: a.publicPem },
          { name: 'two', pem: a.publicPem },
        ]),
        /entry 1 \(two\): the same key is listed as one/,
      ],
      ['- {name: k}', /must be an object with a list `keys`/],
      ['keys: []', /must list at least one/],
      ['keys: [1]', /entry 0 is not an object/],
      ['key: []', /unknown field\(s\) key/],
      ['keys: [unclosed', /not YAML\/JSON/],
      ['keys:\n  - {publicKey: x}', /entry 0: name must be a non-empty string/],
    ];
    const secret = a.privatePem.split('\n')[1];
    for (const [text, re] of cases) {
      let message = '';
      try {
        parseAuditKeys(text, 'keys.yaml');
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message, text).toMatch(re);
      expect(message).toMatch(/^audit keys file keys\.yaml: /);
      expect(message).not.toContain(secret);
    }
  });
});

describe('watchAuditKeys', () => {
  it('follows the file as it is replaced and keeps the previous keys while a replacement is invalid', () => {
    const path = join(dir, 'audit-keys.yaml');
    replace(path, keysYaml([{ name: 'first', pem: a.publicPem }]));
    const file = watchAuditKeys(path);
    const loaded: string[][] = [];
    const invalid: string[] = [];
    file.on('loaded', (ring) => loaded.push(ring.keys.map((k) => k.name)));
    file.on('invalid', (m) => invalid.push(m));
    expect(file.current().value.keys.map((k) => k.name)).toEqual(['first']);

    replace(
      path,
      keysYaml([
        { name: 'first', pem: a.publicPem },
        { name: 'second', pem: b.publicPem },
      ]),
    );
    expect(file.current()).toMatchObject({ error: undefined });
    expect(file.current().value.keys.map((k) => k.name)).toEqual(['first', 'second']);
    expect(loaded).toEqual([['first', 'second']]);

    // A private key pasted in by mistake: refused, the keys in force stay, the error is reported until fixed.
    replace(path, keysYaml([{ name: 'third', pem: b.privatePem }]));
    const broken = file.current();
    expect(broken.value.keys.map((k) => k.name)).toEqual(['first', 'second']);
    expect(broken.error).toMatch(/entry 0 \(third\): publicKey: this is a private key/);
    expect(file.current().error).toBe(broken.error);
    rmSync(path);
    expect(file.current()).toMatchObject({ error: expect.stringMatching(/cannot be read: ENOENT/) });
    expect(file.current().value.keys).toHaveLength(2);

    replace(path, keysYaml([{ name: 'third', pem: b.publicPem }]));
    expect(file.current()).toMatchObject({ error: undefined });
    expect(file.current().value.keys.map((k) => k.name)).toEqual(['third']);
    expect(invalid).toHaveLength(2);
    expect(loaded).toEqual([['first', 'second'], ['third']]);
  });

  it('fails at construction on a missing or invalid file', () => {
    expect(() => watchAuditKeys(join(dir, 'nope.yaml'))).toThrow(/audit keys file .* cannot be read: ENOENT/);
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, keysYaml([{ name: 'k', pem: a.privatePem }]));
    expect(() => watchAuditKeys(bad)).toThrow(/this is a private key/);
  });
});
