/**
 * In-process X.509 for the admission webhook: an operator-owned CA and short-lived serving certificates
 * (ECDSA P-256, SHA-256). The API server verifies the webhook against `caBundle`
 * (https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/#contacting-the-webhook)
 * and requires the service DNS name in subjectAltName.
 */
import 'reflect-metadata'; // tsyringe (used by @peculiar/x509) needs the Reflect metadata polyfill
import { X509Certificate as NodeX509, randomBytes, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
const crypto = webcrypto;

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export interface KeyPairPem {
  certPem: string;
  keyPem: string;
}

export interface IssuedCertificate extends KeyPairPem {
  notBefore: Date;
  notAfter: Date;
}

async function exportKey(key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await crypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

async function importKey(pem: string): Promise<CryptoKey> {
  return crypto.subtle.importKey('pkcs8', x509.PemConverter.decode(pem)[0], ALG, true, ['sign']);
}

function serial(): string {
  const b = randomBytes(16);
  b[0] &= 0x7f; // positive INTEGER
  return b.toString('hex');
}

/** Backdated (a minute, or a tenth of a short lifetime): tolerate clock skew between operator and API server. */
function validity(ms: number, now: Date) {
  const skew = Math.min(60_000, Math.floor(ms / 10));
  return { notBefore: new Date(now.getTime() - skew), notAfter: new Date(now.getTime() + ms) };
}

export async function createCA(commonName: string, validityMs: number, now = new Date()): Promise<IssuedCertificate> {
  const keys = (await crypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const v = validity(validityMs, now);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${commonName}`,
    ...v,
    keys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await exportKey(keys.privateKey), ...v };
}

export async function issueServingCertificate(
  ca: KeyPairPem,
  dnsNames: string[],
  validityMs: number,
  now = new Date(),
): Promise<IssuedCertificate> {
  const caCert = new x509.X509Certificate(ca.certPem);
  const caKey = await importKey(ca.keyPem);
  const keys = (await crypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const v = validity(validityMs, now);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${dnsNames[0]}`,
    issuer: caCert.subject,
    ...v,
    publicKey: keys.publicKey,
    signingKey: caKey,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(dnsNames.map((d) => ({ type: 'dns' as const, value: d }))),
      await x509.AuthorityKeyIdentifierExtension.create(caCert),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await exportKey(keys.privateKey), ...v };
}

/** Validity of the first certificate in a PEM (Node's parser: no trust decisions here). */
export function certificateValidity(pem: string): { notBefore: Date; notAfter: Date; subject: string; issuer: string } {
  const c = new NodeX509(pem);
  return { notBefore: new Date(c.validFrom), notAfter: new Date(c.validTo), subject: c.subject, issuer: c.issuer };
}

/** Does `certPem` chain to `caPem` (signature check only)? */
export function signedBy(certPem: string, caPem: string): boolean {
  const c = new NodeX509(certPem);
  const ca = new NodeX509(caPem);
  return c.checkIssued(ca) && c.verify(ca.publicKey);
}

/** The DNS names the API server uses for a Service: https://kubernetes.io/docs/concepts/services-networking/dns-pod-service/ */
export function serviceDnsNames(service: string, namespace: string): string[] {
  return [
    `${service}.${namespace}.svc`,
    `${service}.${namespace}.svc.cluster.local`,
    `${service}.${namespace}`,
    service,
  ];
}
