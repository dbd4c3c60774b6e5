import { createPublicKey, createSign } from 'node:crypto';
import { freshnessMs } from '@pgwarden/policy/oidc';
import { base64url, exportJWK, exportPKCS8, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeSigningKey, startTestIdp, type TestIdp } from '../../../test/governance/oidc-provider.js';
import { IdentityConfigError, IdentityError } from './errors.js';
import { createOidcVerifier, type OidcConfig } from './oidc-verifier.js';

let idp: TestIdp;
beforeAll(async () => {
  idp = await startTestIdp();
});
afterAll(() => idp.close());

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const cfg = (over: Partial<OidcConfig> = {}): OidcConfig => ({
  issuer: idp.issuer,
  audience: 'pgwarden',
  ca: idp.ca,
  ...over,
});

async function refusal(p: Promise<unknown>): Promise<IdentityError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(IdentityError);
  return err as IdentityError;
}

describe('OIDC verification against a real HTTPS identity provider', () => {
  it('accepts a valid token: sub → user, groups, issuer; discovery and JWKS fetched once', async () => {
    const fetches = { ...idp.fetches };
    const v = createOidcVerifier(cfg());
    const token = await idp.sign({ sub: 'alice', groups: ['data-team', 'dba'] });
    for (let i = 0; i < 5; i++) {
      expect(await v.verify(token)).toEqual({ user: 'alice', groups: ['data-team', 'dba'], issuer: idp.issuer });
    }
    expect(idp.fetches.discovery - fetches.discovery).toBe(1);
    expect(idp.fetches.jwks - fetches.jwks).toBe(1);
  });

  it('reads a space-separated groups claim under a configured name and refuses a malformed one', async () => {
    const v = createOidcVerifier(cfg({ groupsClaim: 'roles' }));
    expect((await v.verify(await idp.sign({ roles: 'a  b c' }))).groups).toEqual(['a', 'b', 'c']);
    expect((await v.verify(await idp.sign({}))).groups).toEqual([]);
    expect((await refusal(v.verify(await idp.sign({ roles: [1, 2] })))).reason).toBe('bad_claim');
    const byEmail = createOidcVerifier(cfg({ usernameClaim: 'email' }));
    expect((await byEmail.verify(await idp.sign({ email: 'a@example.com' }))).user).toBe('a@example.com');
    expect((await refusal(byEmail.verify(await idp.sign({})))).reason).toBe('missing_claim');
  });

  it('refuses an email user name the identity provider says it has not verified', async () => {
    const byEmail = createOidcVerifier(cfg({ usernameClaim: 'email' }));
    for (const email_verified of [false, 'false']) {
      const err = await refusal(byEmail.verify(await idp.sign({ email: 'boss@example.com', email_verified })));
      expect(err.reason).toBe('bad_claim');
      expect(err.message).toMatch(/not verified/);
    }
    expect((await byEmail.verify(await idp.sign({ email: 'a@example.com', email_verified: true }))).user).toBe(
      'a@example.com',
    );
    // Unverified addresses matter only where the address is the user name.
    expect((await createOidcVerifier(cfg()).verify(await idp.sign({ email_verified: false }))).user).toBe('agent-1');
  });

  it('refuses expired tokens, wrong audience, wrong issuer, missing sub/exp, and never echoes the token', async () => {
    const v = createOidcVerifier(cfg());
    const now = Math.floor(Date.now() / 1000);
    const cases: [Record<string, unknown>, string][] = [
      [{ exp: now - 120 }, 'token_expired'],
      [{ aud: 'someone-else' }, 'wrong_audience'],
      [{ iss: 'https://evil.example' }, 'wrong_issuer'],
      [{ sub: undefined }, 'missing_claim'],
      [{ exp: undefined }, 'missing_claim'],
      [{ nbf: now + 600 }, 'token_not_yet_valid'],
    ];
    for (const [claims, reason] of cases) {
      const token = await idp.sign(claims);
      const err = await refusal(v.verify(token));
      expect(err.reason, JSON.stringify(claims)).toBe(reason);
      expect(err.message).not.toContain(token.split('.')[1]);
      expect(err.message).not.toContain(token.split('.')[2]);
    }
  });

  it('refuses alg none and HS256 signed with the public key as the secret (algorithm confusion)', async () => {
    const v = createOidcVerifier(cfg());
    const now = Math.floor(Date.now() / 1000);
    const claims = { iss: idp.issuer, aud: 'pgwarden', sub: 'mallory', exp: now + 300 };
    const none = `${base64url.encode(JSON.stringify({ alg: 'none', kid: 'k1' }))}.${base64url.encode(JSON.stringify(claims))}.`;
    expect((await refusal(v.verify(none))).reason).toBe('alg_not_allowed');
    const pem = createPublicKey({ key: idp.published[0].publicJwk as never, format: 'jwk' }).export({
      type: 'spki',
      format: 'pem',
    });
    const hs = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'HS256', kid: 'k1' })
      .sign(new TextEncoder().encode(String(pem)));
    const err = await refusal(v.verify(hs));
    expect(err.reason).toBe('alg_not_allowed');
    expect(err.message).toContain('HS256');
  });

  it('takes keys from the JWKS only (jwk, jku, x5u in the header are ignored), refuses crit, keeps the last duplicate claim', async () => {
    const v = createOidcVerifier(cfg());
    const attacker = await makeSigningKey('k1');
    const before = idp.fetches.jwks;
    for (const header of [
      { jwk: attacker.publicJwk },
      { jku: `${idp.issuer}/keys?attacker`, x5u: `${idp.issuer}/x5u` },
    ]) {
      expect((await refusal(v.verify(await idp.sign({ sub: 'admin' }, attacker, header)))).reason).toBe(
        'bad_signature',
      );
    }
    expect(idp.fetches.jwks - before).toBeLessThanOrEqual(1);
    const now = Math.floor(Date.now() / 1000);
    const signed = async (header: object, payload: string) => {
      const input = `${base64url.encode(JSON.stringify(header))}.${base64url.encode(payload)}`;
      const sig = createSign('RSA-SHA256')
        .update(input)
        .sign(await exportPKCS8(idp.published[0].privateKey));
      return `${input}.${sig.toString('base64url')}`;
    };
    const claims = `"iss":"${idp.issuer}","aud":"pgwarden","exp":${now + 300}`;
    const crit = await signed({ alg: 'RS256', kid: 'k1', crit: ['x-ext'], 'x-ext': 1 }, `{${claims},"sub":"a"}`);
    expect((await refusal(v.verify(crit))).reason).toBe('malformed_token');
    // RFC 7519 §4 allows the lexically last duplicate; what matters is that it is the one identity everywhere.
    const dup = await signed({ alg: 'RS256', kid: 'k1' }, `{${claims},"sub":"a","groups":["contractors"],"groups":[]}`);
    expect(await v.verify(dup)).toEqual({ user: 'a', groups: [], issuer: idp.issuer });
  });

  it('refuses a back-channel logout token or any security event token signed for the same audience', async () => {
    const v = createOidcVerifier(cfg());
    const events = { 'http://schemas.openid.net/event/backchannel-logout': {} };
    const key = idp.published[0];
    for (const [claims, header] of [
      [{ sub: 'alice', events }, { typ: 'logout+jwt' }],
      [{ sub: 'alice', events }, {}],
      [{ sub: 'alice' }, { typ: 'application/secevent+jwt' }],
    ] as const) {
      const err = await refusal(v.verify(await idp.sign(claims, key, header)));
      expect(err.reason).toBe('bad_claim');
    }
    // An ID token's own typ (JWT) is fine.
    expect((await v.verify(await idp.sign({ sub: 'alice' }, key, { typ: 'JWT' }))).user).toBe('alice');
  });

  it('refuses a signature by an unpublished key carrying a published kid, and an algorithm outside the allow-list', async () => {
    const v = createOidcVerifier(cfg());
    const impostor = await makeSigningKey('k1');
    expect((await refusal(v.verify(await idp.sign({}, impostor)))).reason).toBe('bad_signature');
    const ec = await makeSigningKey('ec1', 'ES256');
    idp.published.push(ec);
    try {
      const rsOnly = createOidcVerifier(cfg({ algorithms: ['RS256'] }));
      expect((await refusal(rsOnly.verify(await idp.sign({}, ec)))).reason).toBe('alg_not_allowed');
      expect((await createOidcVerifier(cfg()).verify(await idp.sign({ sub: 'ec-user' }, ec))).user).toBe('ec-user');
    } finally {
      idp.published.pop();
    }
    expect((await refusal(v.verify('not-a-jwt'))).reason).toBe('malformed_token');
    expect((await refusal(v.verify(''))).reason).toBe('no_token');
  });

  it('applies the clock skew exactly at its boundaries (exp and nbf)', async () => {
    const T = Math.floor(Date.now() / 1000);
    const at = (s: number) => createOidcVerifier(cfg({ clockSkewSeconds: 30, now: () => new Date(s * 1000) }));
    const exp = await idp.sign({ iat: T - 600, exp: T });
    expect((await at(T + 29).verify(exp)).user).toBe('agent-1');
    expect((await refusal(at(T + 31).verify(exp))).reason).toBe('token_expired');
    const nbf = await idp.sign({ iat: T, nbf: T, exp: T + 600 });
    expect((await at(T - 29).verify(nbf)).user).toBe('agent-1');
    expect((await refusal(at(T - 31).verify(nbf))).reason).toBe('token_not_yet_valid');
  });

  it('refuses a token that lives longer than the maximum lifetime (exp - iat, or exp - now without iat)', async () => {
    const T = Math.floor(Date.now() / 1000);
    const v = createOidcVerifier(cfg());
    expect((await v.verify(await idp.sign({ iat: T, exp: T + 24 * 3600 }))).user).toBe('agent-1');
    const year = await refusal(v.verify(await idp.sign({ iat: T, exp: T + 365 * 86400 })));
    expect(year.reason).toBe('token_lifetime_too_long');
    expect(year.message).toBe(
      'OIDC token lifetime 365d (exp - iat) exceeds the maximum of 1d: ask the identity provider for a shorter-lived token',
    );
    // Without iat, what is left of the token is its lifetime as far as the sidecar can tell.
    const noIat = await refusal(v.verify(await idp.sign({ iat: undefined, exp: T + 25 * 3600 })));
    expect(noIat.reason).toBe('token_lifetime_too_long');
    expect(noIat.message).toMatch(/\(exp - now, no iat\)/);
    expect((await v.verify(await idp.sign({ iat: undefined, exp: T + 24 * 3600 }))).user).toBe('agent-1');
    // The lifetime, not what is left of it: a 70-minute token is refused under a 1-hour cap with 20 minutes to go.
    const hour = createOidcVerifier(cfg({ maxTokenLifetimeSeconds: 3600 }));
    expect((await hour.verify(await idp.sign({ iat: T, exp: T + 3600 }))).user).toBe('agent-1');
    const err = await refusal(hour.verify(await idp.sign({ iat: T - 3000, exp: T + 1200 })));
    expect(err.message).toMatch(/lifetime 1h10m \(exp - iat\) exceeds the maximum of 1h/);
  });

  it('reads how long a JWKS answer may be used from Cache-Control max-age less Age, within the bounds', () => {
    const f = (h: Record<string, string>) => freshnessMs(new Headers(h), 60_000, 300_000);
    expect(f({})).toBe(300_000);
    expect(f({ 'cache-control': 'public, max-age=120' })).toBe(120_000);
    expect(f({ 'cache-control': 'max-age=120', age: '30' })).toBe(90_000);
    expect(f({ 'cache-control': 'max-age=120', age: '100' })).toBe(60_000);
    expect(f({ 'cache-control': 'max-age=86400' })).toBe(300_000);
    expect(f({ 'cache-control': 'no-cache, max-age=120' })).toBe(60_000);
    expect(f({ 'cache-control': 'no-store' })).toBe(60_000);
    expect(f({ 'cache-control': 'max-age=0' })).toBe(60_000);
    expect(f({ 'cache-control': 's-maxage=10' })).toBe(300_000);
    expect(f({ 'cache-control': 'max-age=-5' })).toBe(300_000);
  });

  it('stops trusting a key the identity provider withdrew once the JWKS max-age has passed, without a request per login', async () => {
    const old = idp.published[0];
    const k2 = await makeSigningKey('k2');
    idp.published = [old, k2];
    idp.jwksHeaders = { 'cache-control': 'public, max-age=1' };
    try {
      const v = createOidcVerifier(cfg({ jwksMinAgeMs: 500 }));
      const before = idp.fetches.jwks;
      const byOld = await idp.sign({ sub: 'old' }, old);
      expect((await v.verify(byOld)).user).toBe('old');
      idp.published = [k2];
      expect((await v.verify(byOld)).user).toBe('old');
      expect(idp.fetches.jwks - before).toBe(1);
      await sleep(1100);
      const results = await Promise.all(Array.from({ length: 10 }, () => refusal(v.verify(byOld))));
      for (const r of results) expect(r.reason).toBe('unknown_key');
      expect((await v.verify(await idp.sign({ sub: 'new' }, k2))).user).toBe('new');
      expect(idp.fetches.jwks - before).toBe(2);
      // A max-age longer than the bound is cut to it; no-cache is raised to the minimum, not a request per login.
      idp.published = [old, k2];
      idp.jwksHeaders = { 'cache-control': 'max-age=86400' };
      const capped = createOidcVerifier(cfg({ jwksMaxAgeMs: 600, jwksMinAgeMs: 100 }));
      expect((await capped.verify(byOld)).user).toBe('old');
      idp.published = [k2];
      await sleep(650);
      expect((await refusal(capped.verify(byOld))).reason).toBe('unknown_key');
      idp.jwksHeaders = { 'cache-control': 'no-cache' };
      const floor = createOidcVerifier(cfg({ jwksMinAgeMs: 400 }));
      const token = await idp.sign({}, k2);
      const n = idp.fetches.jwks;
      for (let i = 0; i < 20; i++) await floor.verify(token);
      expect(idp.fetches.jwks - n).toBe(1);
      await sleep(450);
      await floor.verify(token);
      expect(idp.fetches.jwks - n).toBe(2);
    } finally {
      idp.published = [old];
      idp.jwksHeaders = {};
    }
  });

  it('keeps verifying with held keys through a short JWKS outage, and refuses once they are older than the stale limit', async () => {
    idp.jwksHeaders = { 'cache-control': 'max-age=0' };
    try {
      const v = createOidcVerifier(
        cfg({ jwksMinAgeMs: 200, jwksMaxAgeMs: 200, jwksMaxStaleMs: 1000, discoveryRetryMs: 100 }),
      );
      const token = await idp.sign({});
      expect((await v.verify(token)).user).toBe('agent-1');
      idp.behaviour.jwks = 'error';
      await sleep(300);
      expect((await v.verify(token)).user).toBe('agent-1');
      await sleep(800);
      expect((await refusal(v.verify(token))).reason).toBe('idp_unavailable');
      idp.behaviour.jwks = 'ok';
      await sleep(150);
      expect((await v.verify(token)).user).toBe('agent-1');
    } finally {
      idp.behaviour.jwks = 'ok';
      idp.jwksHeaders = {};
    }
  });

  it('asks a JWKS endpoint that answers with something other than a key set once per retry interval', async () => {
    idp.jwksHeaders = { 'cache-control': 'max-age=0' };
    try {
      const v = createOidcVerifier(cfg({ jwksMinAgeMs: 100, jwksMaxAgeMs: 100, discoveryRetryMs: 1000 }));
      const token = await idp.sign({});
      await v.verify(token);
      idp.behaviour.jwks = 'not-a-key-set';
      await sleep(150);
      const before = idp.fetches.jwks;
      for (let i = 0; i < 20; i++) expect((await v.verify(token)).user).toBe('agent-1');
      expect(idp.fetches.jwks - before).toBe(1);
      const fresh = createOidcVerifier(cfg({ discoveryRetryMs: 1000 }));
      const unloaded = idp.fetches.jwks;
      for (let i = 0; i < 10; i++) expect((await refusal(fresh.verify(token))).reason).toBe('idp_unavailable');
      expect(idp.fetches.jwks - unloaded).toBe(1);
    } finally {
      idp.behaviour.jwks = 'ok';
      idp.jwksHeaders = {};
    }
  });

  it('follows key rotation: an unknown kid refetches the JWKS, rate limited by the cooldown', async () => {
    const v = createOidcVerifier(cfg({ jwksCooldownMs: 1000 }));
    const old = idp.published[0];
    const ghostKeys = await Promise.all(Array.from({ length: 20 }, (_, i) => makeSigningKey(`ghost-${i}`, 'ES256')));
    await v.verify(await idp.sign({}, old));
    const k2 = await makeSigningKey('k2');
    idp.published = [k2];
    try {
      await new Promise((r) => setTimeout(r, 1050));
      const before = idp.fetches.jwks;
      const t2 = await idp.sign({ sub: 'rotated' }, k2);
      const results = await Promise.all(Array.from({ length: 10 }, () => v.verify(t2)));
      expect(results.every((r) => r.user === 'rotated')).toBe(true);
      expect(idp.fetches.jwks - before).toBe(1);
      // The retired key is gone; within the cooldown a flood of unknown kids causes no further fetches.
      const stale = await idp.sign({}, old);
      const ghosts = await Promise.all(ghostKeys.map((k) => idp.sign({}, k)));
      for (const t of [stale, ...ghosts]) expect((await refusal(v.verify(t))).reason).toBe('unknown_key');
      expect(idp.fetches.jwks - before).toBe(1);
    } finally {
      idp.published = [old];
    }
  });

  it('refuses when the identity provider is unreachable, untrusted or names another issuer', async () => {
    const token = await idp.sign({});
    const untrusted = createOidcVerifier(cfg({ ca: undefined }));
    expect((await refusal(untrusted.verify(token))).reason).toBe('idp_unavailable');
    const wrongIssuer = createOidcVerifier(cfg({ issuer: `${idp.issuer}/other` }));
    expect((await refusal(wrongIssuer.verify(token))).reason).toBe('idp_unavailable');
    const down = createOidcVerifier(cfg({ issuer: 'https://127.0.0.1:1', discoveryRetryMs: 60_000 }));
    expect((await refusal(down.verify(token))).reason).toBe('idp_unavailable');
    const err = await refusal(down.verify(token));
    expect(err.message).toContain('failed recently');
    // Explicit jwksUri skips discovery.
    const before = idp.fetches.discovery;
    expect((await createOidcVerifier(cfg({ jwksUri: `${idp.issuer}/keys` })).verify(token)).user).toBe('agent-1');
    expect(idp.fetches.discovery).toBe(before);
  });

  it('gives up on an identity provider that answers too slowly, and verifies again once it recovers', async () => {
    const token = await idp.sign({});
    idp.behaviour.discovery = 'trickle';
    try {
      const v = createOidcVerifier(cfg({ timeoutMs: 800, discoveryRetryMs: 100 }));
      const t0 = Date.now();
      const err = await refusal(v.verify(token));
      expect(err.reason).toBe('idp_unavailable');
      expect(Date.now() - t0).toBeLessThan(3000);
      idp.behaviour.discovery = 'ok';
      await new Promise((r) => setTimeout(r, 150));
      expect((await v.verify(token)).user).toBe('agent-1');
    } finally {
      idp.behaviour.discovery = 'ok';
    }
  });

  it('asks a failing JWKS endpoint at most once per retry interval, however many logins and made-up kids arrive', async () => {
    const token = await idp.sign({});
    const ghost = await idp.sign({}, await makeSigningKey('ghost'));
    const v = createOidcVerifier(cfg({ discoveryRetryMs: 400, jwksCooldownMs: 0 }));
    idp.behaviour.jwks = 'error';
    try {
      const before = idp.fetches.jwks;
      for (let i = 0; i < 20; i++)
        expect((await refusal(v.verify(i % 2 ? ghost : token))).reason).toBe('idp_unavailable');
      expect(idp.fetches.jwks - before).toBe(1);
      idp.behaviour.jwks = 'ok';
      await new Promise((r) => setTimeout(r, 450));
      expect((await v.verify(token)).user).toBe('agent-1');
      // Keys loaded, then the endpoint fails: made-up kids past the cooldown fetch once per retry interval, and
      // tokens signed with a known key keep verifying from the cache.
      idp.behaviour.jwks = 'error';
      const loaded = idp.fetches.jwks;
      for (let i = 0; i < 20; i++) await refusal(v.verify(ghost));
      expect(idp.fetches.jwks - loaded).toBe(1);
      expect((await v.verify(token)).user).toBe('agent-1');
    } finally {
      idp.behaviour.jwks = 'ok';
    }
  });

  it('refuses unsafe configuration at startup', async () => {
    const bad: Partial<OidcConfig>[] = [
      { algorithms: ['HS256'] },
      { algorithms: ['none'] },
      { clockSkewSeconds: 301 },
      { clockSkewSeconds: -1 },
      { issuer: 'http://idp.example' },
      { audience: '' },
      { jwksUri: 'http://idp.example/keys' },
      { maxTokenLifetimeSeconds: 0 },
      { maxTokenLifetimeSeconds: -60 },
      { maxTokenLifetimeSeconds: Number.NaN },
    ];
    for (const b of bad) expect(() => createOidcVerifier(cfg(b)), JSON.stringify(b)).toThrow(IdentityConfigError);
    expect(await exportJWK(idp.published[0].privateKey)).toHaveProperty('d');
  });
});
