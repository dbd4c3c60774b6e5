import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseTokenFile, sha256Hex, TokenFile } from './token-file.js';

const dir = mkdtempSync(join(tmpdir(), 'pgwarden-approvers-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Writes the file the way a Secret update lands: a new file renamed over the old one (new inode). */
function writeApprovers(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
}

describe('parseTokenFile', () => {
  it('reads YAML and JSON lists; groups default to none; hex may be upper case', () => {
    const yaml = `- name: alice\n  groups: [dba]\n  tokenSha256: ${sha256Hex('t-alice')}\n- name: bob\n  tokenSha256: ${sha256Hex('t-bob').toUpperCase()}\n`;
    const fromYaml = parseTokenFile(yaml, 'a.yaml');
    expect(fromYaml.map((a) => [a.name, a.groups])).toEqual([
      ['alice', ['dba']],
      ['bob', []],
    ]);
    expect(fromYaml[1].digest.toString('hex')).toBe(sha256Hex('t-bob'));
    const json = JSON.stringify([{ name: 'carol', groups: ['x'], tokenSha256: sha256Hex('t-carol') }]);
    expect(parseTokenFile(json, 'a.json').map((a) => a.name)).toEqual(['carol']);
    // A reader may be limited to some namespaces; without the field every namespace is theirs.
    const scoped = parseTokenFile(
      `- {name: tess, tokenSha256: ${sha256Hex('t')}, namespaces: [team-a, team-b]}\n`,
      'r.yaml',
      'readers',
    );
    expect(scoped[0].namespaces).toEqual(['team-a', 'team-b']);
    expect(fromYaml[0].namespaces).toBeUndefined();
    // sha256sum's output for `printf %s TOKEN`: the documented way to make the hash.
    expect(sha256Hex('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });

  it('refuses what it cannot trust, naming the entry but never echoing a token', () => {
    const h = sha256Hex('x');
    const cases: [string, RegExp][] = [
      ['name: alice', /must be a list/],
      ['[1]', /entry 0 is not an object/],
      [`- {name: alice, token: s3cret-plain-token}`, /unknown field\(s\) token/],
      ['- {name: alice, tokenSha256: abc}', /tokenSha256 must be 64 hex digits/],
      [`- {name: "", tokenSha256: ${h}}`, /name must be a non-empty string/],
      [`- {name: a, groups: dba, tokenSha256: ${h}}`, /groups must be a list/],
      [`- {name: a, namespaces: team-a, tokenSha256: ${h}}`, /namespaces must be a list of namespace names/],
      [`- {name: a, namespaces: [""], tokenSha256: ${h}}`, /namespaces must be a list of namespace names/],
      [`- {name: a, tokenSha256: ${h}}\n- {name: b, tokenSha256: ${h}}`, /same token hash appears twice/],
      ['- [unclosed', /not YAML\/JSON/],
      ['- {name: a, groups: [dba]}', /needs tokenSha256, an oidc binding, or both/],
      ['- {name: a, oidc: []}', /needs tokenSha256, an oidc binding, or both/],
    ];
    for (const [text, re] of cases) {
      let message = '';
      try {
        parseTokenFile(text, 'f');
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message, text).toMatch(re);
      expect(message).not.toContain('s3cret-plain-token');
    }
  });
});

describe('an entry bound to an OIDC subject only', () => {
  it('needs no static token, and no static token reaches it', () => {
    const [dora] = parseTokenFile('- {name: dora, oidc: [{issuer: "https://idp.example", subject: u-dora}]}', 'f');
    expect(dora).toEqual({ name: 'dora', groups: [], oidc: [{ issuer: 'https://idp.example', subject: 'u-dora' }] });
    const dir = mkdtempSync(join(tmpdir(), 'pgwarden-oidc-only-'));
    try {
      const path = join(dir, 'approvers.yaml');
      writeFileSync(
        path,
        `- {name: dora, oidc: [{issuer: "https://idp.example", subject: u-dora}]}\n- {name: a, tokenSha256: ${sha256Hex('t')}}\n`,
      );
      const file = new TokenFile(path);
      expect(file.authenticate('Bearer ')).toBeUndefined();
      expect(file.authenticate(`Bearer ${'0'.repeat(64)}`)).toBeUndefined();
      expect(file.authenticate('Bearer t')?.name).toBe('a');
      expect(file.boundTo((b) => b.subject === 'u-dora').map((h) => h.name)).toEqual(['dora']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('TokenFile', () => {
  it('authenticates by bearer token hash and follows the file as it is replaced', () => {
    const path = join(dir, 'approvers.yaml');
    writeApprovers(path, `- {name: alice, groups: [dba], tokenSha256: ${sha256Hex('old-token')}}\n`);
    const f = new TokenFile(path);
    const reloads: number[] = [];
    const invalid: string[] = [];
    f.on('loaded', (n) => reloads.push(n));
    f.on('invalid', (m) => invalid.push(m));
    expect(f.authenticate('Bearer old-token')).toEqual({ name: 'alice', groups: ['dba'] });
    expect(f.authenticate('bearer old-token')).toEqual({ name: 'alice', groups: ['dba'] });
    expect(f.authenticate('Bearer wrong')).toBeUndefined();
    expect(f.authenticate('old-token')).toBeUndefined();
    expect(f.authenticate(undefined)).toBeUndefined();

    writeApprovers(path, `- {name: alice, groups: [dba, oncall], tokenSha256: ${sha256Hex('new-token')}}\n`);
    expect(f.authenticate('Bearer old-token')).toBeUndefined();
    expect(f.authenticate('Bearer new-token')).toEqual({ name: 'alice', groups: ['dba', 'oncall'] });
    expect(reloads).toEqual([1]);

    // A broken replacement refuses every token (the old ones too) until it is fixed.
    writeApprovers(path, '- {name: alice, token: oops}\n');
    expect(() => f.authenticate('Bearer new-token')).toThrow(/unknown field/);
    rmSync(path);
    expect(() => f.authenticate('Bearer new-token')).toThrow(/cannot be read: ENOENT/);
    writeApprovers(path, `- {name: bob, tokenSha256: ${sha256Hex('bob-token')}}\n`);
    expect(f.authenticate('Bearer bob-token')).toEqual({ name: 'bob', groups: [] });
    expect(f.authenticate('Bearer new-token')).toBeUndefined();
    expect(invalid).toHaveLength(2);
  });

  it('fails at construction on a missing or invalid file', () => {
    expect(() => new TokenFile(join(dir, 'nope.yaml'))).toThrow(/cannot be read: ENOENT/);
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, '{}');
    expect(() => new TokenFile(bad)).toThrow(/must be a list/);
  });
});

describe('approvers file identities', () => {
  const hash = 'a'.repeat(64);
  it('reads oidc and serviceAccounts, and refuses malformed ones', () => {
    const [e] = parseTokenFile(
      `- {name: dora, tokenSha256: ${hash}, oidc: [{issuer: "https://idp.example", subject: 00u1}], serviceAccounts: [agents/bot]}`,
      'f',
    );
    expect(e).toMatchObject({
      oidc: [{ issuer: 'https://idp.example', subject: '00u1' }],
      serviceAccounts: ['agents/bot'],
    });
    for (const extra of [
      'oidc: [{issuer: x}]',
      'oidc: [{issuer: x, subject: y, name: z}]',
      'oidc: {issuer: x, subject: y}',
      'serviceAccounts: [bot]',
      'serviceAccounts: [Agents/Bot]',
    ])
      expect(() => parseTokenFile(`- {name: dora, tokenSha256: ${hash}, ${extra}}`, 'f'), extra).toThrow(
        /oidc|serviceAccounts/,
      );
  });
});
