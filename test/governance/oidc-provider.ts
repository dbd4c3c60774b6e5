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
  fetches: { discovery: number; jwks: number; refresh: number };
  /**
   * How each endpoint answers: `ok`, `error` (HTTP 500), `trickle` (200 with headers, then a byte every 500 ms
   * and never the end: a stuck proxy or IdP that idle timeouts never catch), or `not-a-key-set` (200 with JSON that
   * is not a JWKS).
   */
  behaviour: { discovery: IdpBehaviour; jwks: IdpBehaviour; token: IdpBehaviour };
  /** Extra response headers of the JWKS endpoint (Cache-Control, Age). */
  jwksHeaders: Record<string, string>;
  /**
   * The authorization code flow (`/authorize`, `/token`): who signs in next (claims of the ID token issued for the
   * code; `sub` at least), and the client secret `/token` then requires (HTTP Basic), if any. `/authorize` signs in
   * at once, without a page: it redirects to redirect_uri with a code bound to the PKCE challenge and nonce.
   */
  login: { claims: JWTPayload; clientSecret?: string; ttl?: number };
  /**
   * Refresh tokens (RFC 6749 §6; OpenID Connect Core 1.0 §12): whether a code exchange gives one (`never`, the
   * default; `always`; or only when the scope asked for `offline_access`), whether each use replaces it with a new one
   * (rotation: the spent one then gets `invalid_grant`), whether the answer holds an ID token, what that token's
   * `nonce` is (`omit`, as §12.2 advises; `same` as at sign-in; or any other value), and claims it gets besides the
   * grant's (other groups, another `sub`). `login.ttl` (seconds) sets every ID token's lifetime.
   */
  refresh: {
    issue: 'never' | 'always' | 'offline_access';
    rotate: boolean;
    idToken: boolean;
    nonce: string;
    claims: JWTPayload;
  };
  /** Every refresh token issued so far (to look for them where they must not be), and those still valid. */
  refreshTokens: { issued: string[]; live: Map<string, { clientId: string; nonce?: string; claims: JWTPayload }> };
  /** The last authorization request's query (scope, prompt). */
  lastAuthorize?: URLSearchParams;
  /** Revokes every refresh token of `sub` (all of them without one). */
  revoke(sub?: string): void;
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
    fetches: { discovery: 0, jwks: 0, refresh: 0 },
    behaviour: { discovery: 'ok', jwks: 'ok', token: 'ok' },
    jwksHeaders: {},
    login: { claims: { sub: 'agent-1' } },
    refresh: { issue: 'never', rotate: false, idToken: true, nonce: 'omit', claims: {} },
    refreshTokens: { issued: [], live: new Map() },
  } as unknown as TestIdp;
  idp.revoke = (sub) => {
    for (const [t, g] of idp.refreshTokens.live)
      if (sub === undefined || g.claims.sub === sub) idp.refreshTokens.live.delete(t);
  };
  const newRefreshToken = (grant: { clientId: string; nonce?: string; claims: JWTPayload }) => {
    const t = `rt-${randomBytes(24).toString('hex')}`;
    idp.refreshTokens.issued.push(t);
    idp.refreshTokens.live.set(t, grant);
    return t;
  };
  const codes = new Map<
    string,
    {
      clientId: string;
      redirectUri: string;
      nonce?: string;
      challenge: string;
      claims: JWTPayload;
      scope: string[];
    }
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
        idp.lastAuthorize = q;
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
          scope: (q.get('scope') ?? '').split(' '),
        });
        const back = new URL(redirectUri);
        back.searchParams.set('code', code);
        back.searchParams.set('state', q.get('state') ?? '');
        res.writeHead(302, { location: back.toString() }).end();
      } else if (path === `${opts.issuerPath ?? ''}/token` && req.method === 'POST') {
        let body = '';
        req.on('data', (c) => (body += c));
        req.on('end', async () => {
          if (misbehaved(idp.behaviour.token, res)) return;
          const f = new URLSearchParams(body);
          res.setHeader('content-type', 'application/json');
          const refusal = (status: number, error: string) => {
            res.statusCode = status;
            res.end(JSON.stringify({ error }));
          };
          // client_secret_basic (RFC 6749 §2.3.1): one method only, so no client_secret in the body besides.
          const client = basicClient(req.headers.authorization);
          const clientOk = (clientId: string | undefined) =>
            idp.login.clientSecret === undefined ||
            (client?.id === clientId && client?.secret === idp.login.clientSecret && !f.has('client_secret'));
          const exp = () => (idp.login.ttl !== undefined ? { exp: Math.floor(Date.now() / 1000) + idp.login.ttl } : {});
          if (f.get('grant_type') === 'refresh_token') {
            idp.fetches.refresh++;
            const old = f.get('refresh_token') ?? '';
            const grant = idp.refreshTokens.live.get(old);
            if (!clientOk(grant?.clientId)) {
              res.writeHead(401, { 'www-authenticate': 'Basic realm="test-idp"' });
              res.end(JSON.stringify({ error: 'invalid_client' }));
              return;
            }
            if (!grant || f.get('client_id') !== grant.clientId) return refusal(400, 'invalid_grant');
            let next: string | undefined;
            if (idp.refresh.rotate) {
              idp.refreshTokens.live.delete(old);
              next = newRefreshToken(grant);
            }
            const nonce =
              idp.refresh.nonce === 'omit'
                ? {}
                : { nonce: idp.refresh.nonce === 'same' ? grant.nonce : idp.refresh.nonce };
            const idToken = idp.refresh.idToken
              ? await idp.sign({ aud: grant.clientId, ...grant.claims, ...exp(), ...nonce, ...idp.refresh.claims })
              : undefined;
            res.end(
              JSON.stringify({
                access_token: 'opaque-access-token',
                token_type: 'Bearer',
                ...(idToken ? { id_token: idToken } : {}),
                ...(next ? { refresh_token: next } : {}),
              }),
            );
            return;
          }
          const grant = codes.get(f.get('code') ?? '');
          codes.delete(f.get('code') ?? '');
          const verifier = f.get('code_verifier') ?? '';
          if (!clientOk(grant?.clientId)) {
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
          if (!ok || !grant) return refusal(400, 'invalid_grant');
          const idToken = await idp.sign({
            aud: grant.clientId,
            ...(grant.nonce ? { nonce: grant.nonce } : {}),
            ...grant.claims,
            ...exp(),
          });
          const issue =
            idp.refresh.issue === 'always' ||
            (idp.refresh.issue === 'offline_access' && grant.scope.includes('offline_access'));
          const refreshToken = issue
            ? newRefreshToken({ clientId: grant.clientId, nonce: grant.nonce, claims: grant.claims })
            : undefined;
          res.end(
            JSON.stringify({
              id_token: idToken,
              access_token: 'opaque-access-token',
              token_type: 'Bearer',
              ...(refreshToken ? { refresh_token: refreshToken } : {}),
            }),
          );
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
