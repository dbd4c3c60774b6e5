import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { endPointHashName, tlsServerEndPoint } from './channel-binding.js';

const dir = mkdtempSync(join(tmpdir(), 'pgw-cb-'));

/** One key per type, made once: RSA key generation is the slow part. */
function key(name: string, args: string[]): string[] {
  const file = join(dir, `${name}.key`);
  execFileSync('openssl', ['genpkey', ...args, '-out', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  return ['-key', file];
}

/** A self-signed certificate made by the openssl CLI; returns its DER and openssl's own fingerprint with `digest`. */
function cert(name: string, keyArgs: string[], signArgs: string[], digest: string): { der: Buffer; expected: string } {
  const pem = join(dir, `${name}.crt`);
  execFileSync(
    'openssl',
    ['req', '-x509', ...keyArgs, '-out', pem, '-days', '1', '-subj', `/CN=${name}`, ...signArgs],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const der = execFileSync('openssl', ['x509', '-in', pem, '-outform', 'DER']);
  const fp = execFileSync('openssl', ['x509', '-in', pem, '-noout', '-fingerprint', `-${digest}`], {
    encoding: 'utf8',
  });
  return { der, expected: fp.trim().split('=')[1].replace(/:/g, '').toLowerCase() };
}

const RSA = key('rsa', ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048']);
const EC = key('ec', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:prime256v1']);

// RFC 5929 §4.1: the signature's own hash, except MD5 and SHA-1, which become SHA-256. The expected value is the
// openssl CLI's fingerprint of the same certificate with that hash, not this module's arithmetic.
describe('tls-server-end-point', () => {
  const cases: Array<[string, string[], string[], string]> = [
    ['rsa-sha256', RSA, ['-sha256'], 'sha256'],
    ['rsa-sha384', RSA, ['-sha384'], 'sha384'],
    ['rsa-sha512', RSA, ['-sha512'], 'sha512'],
    ['rsa-sha1', RSA, ['-sha1'], 'sha256'],
    ['ecdsa-sha256', EC, ['-sha256'], 'sha256'],
    ['ecdsa-sha384', EC, ['-sha384'], 'sha384'],
    ['ecdsa-sha512', EC, ['-sha512'], 'sha512'],
    ['rsa-pss-sha384', RSA, ['-sha384', '-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:-1'], 'sha384'],
  ];
  for (const [name, key, sign, digest] of cases) {
    it(`binds a ${name} certificate with ${digest}`, () => {
      const { der, expected } = cert(name, key, sign, digest);
      expect(endPointHashName(der)).toBe(digest);
      expect(tlsServerEndPoint(der).toString('hex')).toBe(expected);
    });
  }

  it('refuses an Ed25519 certificate (no single hash), naming the algorithm', () => {
    const { der } = cert('ed25519', key('ed25519', ['-algorithm', 'ED25519']), [], 'sha256');
    expect(() => tlsServerEndPoint(der)).toThrow(/signature algorithm 1\.3\.101\.112 has no single hash function/);
  });

  it('refuses bytes that are not a certificate instead of hashing them', () => {
    const { der } = cert('truncated', EC, [], 'sha256');
    expect(() => tlsServerEndPoint(der.subarray(0, 40))).toThrow(/truncated DER/);
    expect(() => tlsServerEndPoint(Buffer.from('not a certificate'))).toThrow(/DER/);
    expect(() => tlsServerEndPoint(readFileSync(join(dir, 'truncated.crt')))).toThrow(/DER/);
  });
});
