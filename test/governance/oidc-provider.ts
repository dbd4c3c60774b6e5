import { mkdtempSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type CryptoKey, exportJWK, generateKeyPair, type JWK, type JWTPayload, SignJWT } from 'jose';
import { makeCertificates } from '../harness/index.js';

export interface SigningKey {
  kid: string;
  alg: 'RS256' | 'ES256';
  privateKey: CryptoKey;
  publicJwk: JWK;
}

export async function makeSigningKey(kid: string, alg: 'RS256' | 'ES256' = 'RS256'): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { kid, alg, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } };
}

export type IdpBehaviour = 'ok' | 'error' | 'trickle' | 'not-a-key-set';

/**
 * A real OpenID provider for tests: HTTPS with a throwaway CA, a discovery document and a JWKS that tests can
 * rotate. It counts requests so tests can prove caching and the refetch rate limit.
 */
export interface TestIdp {
  issuer: string;
  ca: string;
  caFile: string;
  /** Keys served at jwks_uri; replace to rotate. */
  published: SigningKey[];
  fetches: { discovery: number; jwks: number };
  /**
   * How each endpoint answers: `ok`, `error` (HTTP 500), `trickle` (200 with headers, then a byte every 500 ms
   * and never the end: a stuck proxy or IdP that idle timeouts never catch), or `not-a-key-set` (200 with JSON that
   * is not a JWKS).
   */
  behaviour: { discovery: IdpBehaviour; jwks: IdpBehaviour };
  /** Extra response headers of the JWKS endpoint (Cache-Control, Age). */
  jwksHeaders: Record<string, string>;
  /** Signs claims with `key` (default the first published key); iss/aud/sub/iat/exp defaulted. */
  sign(claims?: JWTPayload, key?: SigningKey, header?: Record<string, unknown>): Promise<string>;
  close(): Promise<void>;
}

export async function startTestIdp(opts: { audience?: string; issuerPath?: string } = {}): Promise<TestIdp> {
  const certs = makeCertificates(mkdtempSync(join(tmpdir(), 'pgwarden-idp-')));
  const { readFileSync } = await import('node:fs');
  const idp = {
    published: [await makeSigningKey('k1')],
    fetches: { discovery: 0, jwks: 0 },
    behaviour: { discovery: 'ok', jwks: 'ok' },
    jwksHeaders: {},
  } as TestIdp;
  const misbehaved = (how: IdpBehaviour, res: ServerResponse): boolean => {
    if (how === 'not-a-key-set') {
      res.setHeader('content-type', 'application/json');
      res.end('{"keys":"none"}');
    } else if (how === 'error') {
      res.statusCode = 500;
      res.end();
    } else if (how === 'trickle') {
      res.setHeader('content-type', 'application/json');
      res.write(' ');
      const t = setInterval(() => res.write(' '), 500);
      res.on('close', () => clearInterval(t));
    }
    return how !== 'ok';
  };
  const server: Server = createServer(
    { cert: readFileSync(certs.certFile), key: readFileSync(certs.keyFile) },
    (req, res) => {
      const path = (req.url ?? '').split('?')[0];
      if (path === `${opts.issuerPath ?? ''}/.well-known/openid-configuration`) {
        idp.fetches.discovery++;
        if (misbehaved(idp.behaviour.discovery, res)) return;
        res.setHeader('content-type', 'application/json');
        res.end(
          JSON.stringify({
            issuer: idp.issuer,
            jwks_uri: `${idp.issuer}/keys`,
            id_token_signing_alg_values_supported: ['RS256', 'ES256'],
          }),
        );
      } else if (path === `${opts.issuerPath ?? ''}/keys`) {
        idp.fetches.jwks++;
        if (misbehaved(idp.behaviour.jwks, res)) return;
        res.setHeader('content-type', 'application/json');
        for (const [k, v] of Object.entries(idp.jwksHeaders)) res.setHeader(k, v);
        res.end(JSON.stringify({ keys: idp.published.map((k) => k.publicJwk) }));
      } else {
        res.statusCode = 404;
        res.end();
      }
    },
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  idp.issuer = `https://localhost:${port}${opts.issuerPath ?? ''}`;
  idp.ca = certs.ca;
  idp.caFile = certs.caFile;
  idp.sign = async (claims = {}, key = idp.published[0], header = {}) => {
    const now = Math.floor(Date.now() / 1000);
    const payload: JWTPayload = {
      iss: idp.issuer,
      aud: opts.audience ?? 'pgwarden',
      sub: 'agent-1',
      iat: now,
      exp: now + 300,
      ...claims,
    };
    for (const k of Object.keys(payload)) if (payload[k] === undefined) delete payload[k];
    return new SignJWT(payload)
      .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT', ...header })
      .sign(key.privateKey);
  };
  idp.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return idp;
}
