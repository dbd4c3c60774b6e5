import { createHash, randomBytes } from 'node:crypto';
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
  /**
   * The authorization code flow (`/authorize`, `/token`): who signs in next (claims of the ID token issued for the
   * code; `sub` at least), and the client secret `/token` then requires (HTTP Basic), if any. `/authorize` signs in
   * at once, without a page: it redirects to redirect_uri with a code bound to the PKCE challenge and nonce.
   */
  login: { claims: JWTPayload; clientSecret?: string };
  /** Signs claims with `key` (default the first published key); iss/aud/sub/iat/exp defaulted. */
  sign(claims?: JWTPayload, key?: SigningKey, header?: Record<string, unknown>): Promise<string>;
  close(): Promise<void>;
}

/**
 * The client id and secret of an `Authorization: Basic` header: each form-urlencoded before base64 (RFC 6749
 * §2.3.1), so a `:` or `+` in them survives.
 */
function basicClient(header: string | undefined): { id: string; secret: string } | undefined {
  if (!header?.startsWith('Basic ')) return undefined;
  const raw = Buffer.from(header.slice(6), 'base64').toString('utf8');
  const i = raw.indexOf(':');
  const decode = (v: string) => decodeURIComponent(v.replace(/\+/g, ' '));
  try {
    return i < 0 ? undefined : { id: decode(raw.slice(0, i)), secret: decode(raw.slice(i + 1)) };
  } catch {
    return undefined;
  }
}

export async function startTestIdp(opts: { audience?: string; issuerPath?: string } = {}): Promise<TestIdp> {
  const certs = makeCertificates(mkdtempSync(join(tmpdir(), 'pgwarden-idp-')));
  const { readFileSync } = await import('node:fs');
  const idp = {
    published: [await makeSigningKey('k1')],
    fetches: { discovery: 0, jwks: 0 },
    behaviour: { discovery: 'ok', jwks: 'ok' },
    jwksHeaders: {},
    login: { claims: { sub: 'agent-1' } },
  } as TestIdp;
  const codes = new Map<
    string,
    { clientId: string; redirectUri: string; nonce?: string; challenge: string; claims: JWTPayload }
  >();
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
            authorization_endpoint: `${idp.issuer}/authorize`,
            token_endpoint: `${idp.issuer}/token`,
            id_token_signing_alg_values_supported: ['RS256', 'ES256'],
          }),
        );
      } else if (path === `${opts.issuerPath ?? ''}/keys`) {
        idp.fetches.jwks++;
        if (misbehaved(idp.behaviour.jwks, res)) return;
        res.setHeader('content-type', 'application/json');
        for (const [k, v] of Object.entries(idp.jwksHeaders)) res.setHeader(k, v);
        res.end(JSON.stringify({ keys: idp.published.map((k) => k.publicJwk) }));
      } else if (path === `${opts.issuerPath ?? ''}/authorize`) {
        const q = new URL(req.url ?? '', idp.issuer).searchParams;
        const redirectUri = q.get('redirect_uri') ?? '';
        if (q.get('response_type') !== 'code' || q.get('code_challenge_method') !== 'S256' || !redirectUri) {
          res.statusCode = 400;
          res.end();
          return;
        }
        const code = randomBytes(16).toString('hex');
        codes.set(code, {
          clientId: q.get('client_id') ?? '',
          redirectUri,
          nonce: q.get('nonce') ?? undefined,
          challenge: q.get('code_challenge') ?? '',
          claims: { ...idp.login.claims },
        });
        const back = new URL(redirectUri);
        back.searchParams.set('code', code);
        back.searchParams.set('state', q.get('state') ?? '');
        res.writeHead(302, { location: back.toString() }).end();
      } else if (path === `${opts.issuerPath ?? ''}/token` && req.method === 'POST') {
        let body = '';
        req.on('data', (c) => (body += c));
        req.on('end', async () => {
          const f = new URLSearchParams(body);
          const grant = codes.get(f.get('code') ?? '');
          codes.delete(f.get('code') ?? '');
          const verifier = f.get('code_verifier') ?? '';
          res.setHeader('content-type', 'application/json');
          // client_secret_basic (RFC 6749 §2.3.1): one method only, so no client_secret in the body besides.
          const client = basicClient(req.headers.authorization);
          if (
            idp.login.clientSecret !== undefined &&
            (client?.id !== grant?.clientId || client?.secret !== idp.login.clientSecret || f.has('client_secret'))
          ) {
            res.writeHead(401, { 'www-authenticate': 'Basic realm="test-idp"' });
            res.end(JSON.stringify({ error: 'invalid_client' }));
            return;
          }
          const ok =
            grant &&
            f.get('grant_type') === 'authorization_code' &&
            f.get('redirect_uri') === grant.redirectUri &&
            f.get('client_id') === grant.clientId &&
            createHash('sha256').update(verifier).digest('base64url') === grant.challenge;
          if (!ok || !grant) {
            res.statusCode = 400;
            res.end(JSON.stringify({ error: 'invalid_grant' }));
            return;
          }
          const idToken = await idp.sign({
            aud: grant.clientId,
            ...(grant.nonce ? { nonce: grant.nonce } : {}),
            ...grant.claims,
          });
          res.end(JSON.stringify({ id_token: idToken, access_token: 'opaque-access-token', token_type: 'Bearer' }));
        });
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

/**
 * An approvers file for the collector's OIDC tests: alice with a static token (`aliceToken`), and each of `people`
 * in group dba bound to subject `u-<name>` at `issuer`.
 */
export function approversWithOidc(issuer: string, aliceToken: string, people: string[] = ['dora']): string {
  const alice = `- {name: alice, groups: [dba], tokenSha256: ${createHash('sha256').update(aliceToken).digest('hex')}}`;
  const bound = people.map((p) => `- {name: ${p}, groups: [dba], oidc: [{issuer: "${issuer}", subject: u-${p}}]}`);
  return [alice, ...bound, ''].join('\n');
}
