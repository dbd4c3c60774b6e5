/**
 * SCRAM channel binding `tls-server-end-point` (RFC 5929 §4.1), the only type PostgreSQL offers: the hash of the
 * server's certificate, with the hash function of the certificate's signature algorithm (SHA-256 where that is MD5
 * or SHA-1). Binding the SCRAM proof to it means a machine in the middle that terminates TLS with a certificate of
 * its own cannot relay the exchange: the server compares the binding with the certificate it sent itself
 * (https://www.postgresql.org/docs/current/sasl-authentication.html#SASL-SCRAM-SHA-256).
 */
import { createHash } from 'node:crypto';

/** libpq's `channel_binding`: prefer uses it when the server offers it over TLS; require refuses to log in without. */
export type ChannelBindingMode = 'disable' | 'prefer' | 'require';
export const CHANNEL_BINDING_MODES: readonly ChannelBindingMode[] = ['disable', 'prefer', 'require'];

// Signature algorithm OIDs (dotted) → the hash RFC 5929 says to use.
const SIGNATURE_HASH: Record<string, string> = {
  '1.2.840.113549.1.1.4': 'sha256', // md5WithRSAEncryption: MD5 → SHA-256
  '1.2.840.113549.1.1.5': 'sha256', // sha1WithRSAEncryption: SHA-1 → SHA-256
  '1.2.840.113549.1.1.14': 'sha224',
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
  '1.2.840.10045.4.1': 'sha256', // ecdsa-with-SHA1
  '1.2.840.10045.4.3.1': 'sha224',
  '1.2.840.10045.4.3.2': 'sha256',
  '1.2.840.10045.4.3.3': 'sha384',
  '1.2.840.10045.4.3.4': 'sha512',
  '1.2.840.10040.4.3': 'sha256', // dsa-with-sha1
  '2.16.840.1.101.3.4.3.1': 'sha224', // dsa-with-sha224
  '2.16.840.1.101.3.4.3.2': 'sha256', // dsa-with-sha256
};
// Digest OIDs, for RSASSA-PSS, whose hash is a parameter of the signature algorithm (RFC 4055 §3.1).
const DIGEST_HASH: Record<string, string> = {
  '1.3.14.3.2.26': 'sha256', // SHA-1 → SHA-256
  '2.16.840.1.101.3.4.2.4': 'sha224',
  '2.16.840.1.101.3.4.2.1': 'sha256',
  '2.16.840.1.101.3.4.2.2': 'sha384',
  '2.16.840.1.101.3.4.2.3': 'sha512',
};
const RSASSA_PSS = '1.2.840.113549.1.1.10';

interface Tlv {
  tag: number;
  start: number; // first content byte
  end: number; // one past the last content byte
}

function tlv(der: Buffer, at: number, limit: number): Tlv {
  if (at + 2 > limit) throw new Error('truncated DER');
  const tag = der[at];
  let len = der[at + 1];
  let start = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || start + n > limit) throw new Error('unsupported DER length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + der[start + i];
    start += n;
  }
  if (start + len > limit) throw new Error('truncated DER');
  return { tag, start, end: start + len };
}

function oid(der: Buffer, t: Tlv): string {
  if (t.tag !== 0x06 || t.end <= t.start) throw new Error('expected an OBJECT IDENTIFIER');
  const arcs: number[] = [];
  let v = 0;
  for (let i = t.start; i < t.end; i++) {
    v = v * 128 + (der[i] & 0x7f);
    if (!(der[i] & 0x80)) {
      arcs.push(v);
      v = 0;
    }
  }
  // The first subidentifier packs the first two arcs (X.690 §8.19.4).
  const top = Math.min(2, Math.floor(arcs[0] / 40));
  return [top, arcs[0] - top * 40, ...arcs.slice(1)].join('.');
}

/**
 * The hash function for a DER certificate's `tls-server-end-point` binding, or an error naming the signature
 * algorithm when it has no single hash (e.g. Ed25519; PostgreSQL cannot bind to those either).
 */
export function endPointHashName(der: Buffer): string {
  const cert = tlv(der, 0, der.length);
  if (cert.tag !== 0x30) throw new Error('not a DER certificate');
  const tbs = tlv(der, cert.start, cert.end);
  const alg = tlv(der, tbs.end, cert.end);
  if (alg.tag !== 0x30) throw new Error('no signatureAlgorithm in the certificate');
  const algOid = tlv(der, alg.start, alg.end);
  const name = oid(der, algOid);
  const hash = SIGNATURE_HASH[name];
  if (hash) return hash;
  if (name === RSASSA_PSS) return pssHash(der, algOid.end, alg.end);
  throw new Error(`the server certificate's signature algorithm ${name} has no single hash function`);
}

/** RSASSA-PSS-params ::= SEQUENCE { hashAlgorithm [0] AlgorithmIdentifier DEFAULT sha1, ... } */
function pssHash(der: Buffer, at: number, limit: number): string {
  if (at >= limit) return 'sha256'; // no parameters: SHA-1 → SHA-256
  const params = tlv(der, at, limit);
  if (params.tag !== 0x30 || params.start === params.end) return 'sha256';
  const first = tlv(der, params.start, params.end);
  if (first.tag !== 0xa0) return 'sha256';
  const hashAlg = tlv(der, first.start, first.end);
  const name = oid(der, tlv(der, hashAlg.start, hashAlg.end));
  const hash = DIGEST_HASH[name];
  if (!hash) throw new Error(`the server certificate's RSASSA-PSS hash ${name} is not supported`);
  return hash;
}

/** The `tls-server-end-point` channel binding data for a DER certificate (throws as endPointHashName does). */
export function tlsServerEndPoint(der: Buffer): Buffer {
  return createHash(endPointHashName(der)).update(der).digest();
}
