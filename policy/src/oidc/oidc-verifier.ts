import { decodeProtectedHeader, errors, type JWTPayload, type JWTVerifyGetKey, jwtVerify } from 'jose';
import { createHttpsFetch, type HttpsFetch, withFailureBackoff } from './https-fetch.js';
import { createJwksCache } from './jwks-cache.js';
import { IdentityConfigError, IdentityError } from './oidc-errors.js';

export interface OidcConfig {
  /** The `iss` tokens must carry; discovery is `<issuer>/.well-known/openid-configuration`. */
  issuer: string;
  /** At least one of these must be in the token's `aud`. */
  audience: string | string[];
  /**
   * Claim holding the groups: an array of strings or one space-separated string. Default `groups`; `false` reads no
   * groups at all (the caller does not use them, so a malformed or missing groups claim is no reason to refuse).
   */
  groupsClaim?: string | false;
  /** Claim naming the user. Default `sub` (always required, whatever this names). */
  usernameClaim?: string;
  /** Skips discovery when set. Must be https. */
  jwksUri?: string;
  /** Allowed signature algorithms. Default RS256 and ES256; `none` and HMAC (HS*) are refused at startup. */
  algorithms?: string[];
  /** Tolerance for exp/nbf, seconds. Default 30, at most 300. */
  clockSkewSeconds?: number;
  /**
   * Longest token lifetime accepted, seconds: exp − iat, or exp − now (less the clock skew) for a token without
   * iat. Default 24 h.
   */
  maxTokenLifetimeSeconds?: number;
  /** Extra CA certificates (PEM) for the identity provider's TLS. */
  ca?: string | Buffer;
  /** Minimum time between JWKS refetches triggered by an unknown `kid` (rate limit). Default 30 s. */
  jwksCooldownMs?: number;
  /** Longest time between JWKS refreshes (a longer Cache-Control max-age is cut to this). Default 5 min. */
  jwksMaxAgeMs?: number;
  /** Shortest time between JWKS refreshes (Cache-Control no-cache or a smaller max-age is raised to this). Default 60 s. */
  jwksMinAgeMs?: number;
  /** While the JWKS endpoint fails, keys fetched this recently keep verifying. Default 10 min. */
  jwksMaxStaleMs?: number;
  /** After a failed discovery or JWKS fetch, the next attempt waits at least this long. Default 5 s. */
  discoveryRetryMs?: number;
  timeoutMs?: number;
  /** What the token is to its holder, in refusals (`password is not a well-formed signed JWT`). Default `token`. */
  credentialName?: string;
  /** Clock for tests. */
  now?: () => Date;
}

/** What a verified token says about its holder. */
export interface VerifiedToken {
  /** The username claim's value (`sub` unless `usernameClaim` names another). */
  user: string;
  /** `sub`: the issuer's stable identifier of the holder, whatever `usernameClaim` names. */
  subject: string;
  groups: string[];
  issuer: string;
  /** The token's `exp`, seconds since the epoch. */
  expiresAt: number;
  /** An ID token's `nonce` (OpenID Connect Core 1.0 §2), which a login compares with the one it sent. */
  nonce?: string;
  /**
   * An ID token's `auth_time` (OpenID Connect Core 1.0 §2): when its holder last authenticated, which a token
   * renewed with a refresh token must repeat (§12.2).
   */
  authTime?: number;
}

/**
 * JWT `typ` values of tokens that report an event rather than identify a caller: OpenID Connect Back-Channel Logout
 * 1.0 (§2.4, `logout+jwt`) and Security Event Tokens (RFC 8417 §2.3, `secevent+jwt`).
 */
const EVENT_TOKEN_TYPES = new Set(['logout+jwt', 'secevent+jwt']);

/** Asymmetric JWS algorithms (RFC 7518 §3.1, RFC 8037): a verifier holding only public keys can check them. */
const ASYMMETRIC = new Set([
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
  'Ed25519',
]);
export const DEFAULT_ALGORITHMS = ['RS256', 'ES256'];
export const DEFAULT_CLOCK_SKEW_S = 30;
export const MAX_CLOCK_SKEW_S = 300;
/**
 * Kubernetes' TokenRequest gives an hour by default and kubelet rotates projected tokens at 80 % of their life;
 * identity providers issue access and ID tokens for minutes to hours. A day admits all of those and refuses the
 * "valid for years" tokens that make a leak permanent.
 */
export const DEFAULT_MAX_TOKEN_LIFETIME_S = 24 * 3600;

export interface OidcVerifier {
  readonly issuer: string;
  verify(token: string): Promise<VerifiedToken>;
}

function validated(cfg: OidcConfig): Required<
  Pick<OidcConfig, 'algorithms' | 'clockSkewSeconds' | 'groupsClaim' | 'maxTokenLifetimeSeconds' | 'credentialName'>
> & {
  audience: string[];
} {
  let issuerUrl: URL;
  try {
    issuerUrl = new URL(cfg.issuer);
  } catch {
    throw new IdentityConfigError(`oidc.issuer "${cfg.issuer}" is not a URL`);
  }
  if (issuerUrl.protocol !== 'https:')
    throw new IdentityConfigError(`oidc.issuer must be https, got ${issuerUrl.protocol}`);
  if (cfg.jwksUri && new URL(cfg.jwksUri).protocol !== 'https:')
    throw new IdentityConfigError('oidc.jwksUri must be https');
  const algorithms = cfg.algorithms?.length ? cfg.algorithms : DEFAULT_ALGORITHMS;
  for (const a of algorithms) {
    // HMAC would make the verification key a shared secret (and invite "public key as HMAC secret" confusion).
    if (!ASYMMETRIC.has(a))
      throw new IdentityConfigError(
        `oidc algorithm "${a}" is not allowed: use asymmetric algorithms (${[...ASYMMETRIC].join(', ')})`,
      );
  }
  const skew = cfg.clockSkewSeconds ?? DEFAULT_CLOCK_SKEW_S;
  if (!Number.isFinite(skew) || skew < 0 || skew > MAX_CLOCK_SKEW_S) {
    throw new IdentityConfigError(`oidc clock skew must be between 0 and ${MAX_CLOCK_SKEW_S} seconds, got ${skew}`);
  }
  const audience = (Array.isArray(cfg.audience) ? cfg.audience : [cfg.audience]).filter((a) => a);
  if (audience.length === 0) throw new IdentityConfigError('oidc.audience is required');
  const maxLifetime = cfg.maxTokenLifetimeSeconds ?? DEFAULT_MAX_TOKEN_LIFETIME_S;
  if (!Number.isFinite(maxLifetime) || maxLifetime < 1)
    throw new IdentityConfigError(`oidc maximum token lifetime must be at least 1 second, got ${maxLifetime}`);
  return {
    algorithms,
    clockSkewSeconds: skew,
    groupsClaim: cfg.groupsClaim === false ? false : cfg.groupsClaim || 'groups',
    credentialName: cfg.credentialName || 'token',
    audience,
    maxTokenLifetimeSeconds: maxLifetime,
  };
}

/** Maps jose's errors onto stable reasons with messages that name the problem and never echo the token. */
function refusal(err: unknown, allowed: string[], audience: string[], credential: string): IdentityError {
  if (err instanceof IdentityError) return err;
  if (err instanceof errors.JWTExpired)
    return new IdentityError('token_expired', 'OIDC token has expired', { cause: err });
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.claim === 'nbf')
      return new IdentityError('token_not_yet_valid', 'OIDC token is not valid yet (nbf is in the future)', {
        cause: err,
      });
    if (err.claim === 'aud')
      return new IdentityError(
        'wrong_audience',
        `OIDC token audience is not ${audience.map((a) => `"${a}"`).join(' or ')}`,
        { cause: err },
      );
    if (err.claim === 'iss')
      return new IdentityError('wrong_issuer', 'OIDC token issuer is not the configured issuer', { cause: err });
    if (err.reason === 'missing')
      return new IdentityError('missing_claim', `OIDC token lacks the required "${err.claim}" claim`, { cause: err });
    return new IdentityError('bad_claim', `OIDC token claim "${err.claim}" is invalid`, { cause: err });
  }
  if (err instanceof errors.JOSEAlgNotAllowed)
    return new IdentityError(
      'alg_not_allowed',
      `OIDC token algorithm is not allowed (allowed: ${allowed.join(', ')})`,
      { cause: err },
    );
  if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) {
    return new IdentityError('unknown_key', 'OIDC token is signed with a key the identity provider does not publish', {
      cause: err,
    });
  }
  if (err instanceof errors.JWSSignatureVerificationFailed)
    return new IdentityError('bad_signature', 'OIDC token signature is invalid', { cause: err });
  if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid || err instanceof errors.JOSENotSupported) {
    return new IdentityError('malformed_token', `${credential} is not a well-formed signed JWT`, { cause: err });
  }
  return new IdentityError('idp_unavailable', 'cannot verify OIDC token: the identity provider keys are unavailable', {
    cause: err,
  });
}

/**
 * The claim `name` names: a top-level claim of that name, else, for a dotted name, the nested member
 * (`realm_access.roles`, Keycloak's realm roles), so a nested claim is not silently read as absent.
 */
function claimAt(payload: JWTPayload, name: string): unknown {
  if (Object.hasOwn(payload, name) || !name.includes('.')) return payload[name];
  let at: unknown = payload;
  for (const part of name.split('.')) {
    if (typeof at !== 'object' || at === null || Array.isArray(at) || !Object.hasOwn(at, part)) return undefined;
    at = (at as Record<string, unknown>)[part];
  }
  return at;
}

function groupsOf(payload: JWTPayload, claim: string | false): string[] {
  if (claim === false) return [];
  const v = claimAt(payload, claim);
  if (v === undefined) {
    // The groups exist but are not in the token: a distributed or aggregated claim (OpenID Connect Core 1.0
    // §5.6.2), which Entra ID sends instead of `groups` for a user in too many groups ("groups overage", also
    // flagged by `hasgroups`). Reading that as "no groups" would let such a user walk past deny rules on groups.
    const names = payload._claim_names;
    if ((typeof names === 'object' && names !== null && Object.hasOwn(names, claim)) || payload.hasgroups === true)
      throw new IdentityError(
        'bad_claim',
        `OIDC token claim "${claim}" is not in the token (the identity provider refers to it elsewhere, e.g. groups overage): it cannot be verified`,
      );
    return [];
  }
  if (typeof v === 'string') return v.split(' ').filter((g) => g);
  if (Array.isArray(v) && v.every((g) => typeof g === 'string')) return v as string[];
  // A malformed groups claim is refused rather than read as "no groups": deny rules may match on groups.
  throw new IdentityError(
    'bad_claim',
    `OIDC token claim "${claim}" must be an array of strings or a space-separated string`,
  );
}

/** `90061` → `1d1h1m1s`: a lifetime as an operator would write it. */
function formatSeconds(total: number): string {
  let s = Math.floor(total);
  if (s < 1) return '0s';
  let out = '';
  for (const [unit, size] of [
    ['d', 86400],
    ['h', 3600],
    ['m', 60],
    ['s', 1],
  ] as const) {
    if (s >= size) {
      out += `${Math.floor(s / size)}${unit}`;
      s %= size;
    }
  }
  return out;
}

/**
 * Verifies OIDC access/ID tokens against the issuer's published keys (OpenID Connect Discovery 1.0 §4). Used by the
 * sidecar (the token is the PostgreSQL password) and the collector (the token is the API's bearer token).
 */
export function createOidcVerifier(cfg: OidcConfig, fetchImpl?: HttpsFetch): OidcVerifier {
  const v = validated(cfg);
  const issuer = cfg.issuer;
  const fetchHttps = fetchImpl ?? createHttpsFetch({ ca: cfg.ca, timeoutMs: cfg.timeoutMs });
  const retryMs = cfg.discoveryRetryMs ?? 5000;
  const jwksFetch = withFailureBackoff(fetchHttps, retryMs);
  let jwks: JWTVerifyGetKey | undefined;
  let pending: Promise<JWTVerifyGetKey> | undefined;
  let failedAt = 0;

  const maxRefreshMs = cfg.jwksMaxAgeMs ?? 300_000;
  const makeJwks = (uri: string) =>
    createJwksCache({
      uri,
      fetch: jwksFetch,
      cooldownMs: cfg.jwksCooldownMs ?? 30_000,
      minRefreshMs: Math.min(cfg.jwksMinAgeMs ?? 60_000, maxRefreshMs),
      maxRefreshMs,
      maxStaleMs: Math.max(cfg.jwksMaxStaleMs ?? 600_000, maxRefreshMs),
      retryMs,
    });

  async function discover(): Promise<JWTVerifyGetKey> {
    if (cfg.jwksUri) return makeJwks(cfg.jwksUri);
    const url = `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
    const res = await fetchHttps(url);
    if (res.status !== 200) throw new Error(`discovery returned HTTP ${res.status}`);
    const doc = (await res.json()) as { issuer?: unknown; jwks_uri?: unknown };
    // OpenID Connect Discovery 1.0 §4.3: the issuer in the document MUST be identical to the one used to fetch it.
    if (doc.issuer !== issuer) throw new Error('discovery document names a different issuer');
    if (typeof doc.jwks_uri !== 'string' || new URL(doc.jwks_uri).protocol !== 'https:')
      throw new Error('discovery document has no https jwks_uri');
    return makeJwks(doc.jwks_uri);
  }

  async function keySet(): Promise<JWTVerifyGetKey> {
    if (jwks) return jwks;
    if (!pending) {
      if (Date.now() - failedAt < retryMs)
        throw new IdentityError(
          'idp_unavailable',
          'cannot verify OIDC token: identity provider discovery failed recently',
        );
      pending = discover().then(
        (set) => {
          jwks = set;
          pending = undefined;
          return set;
        },
        (err) => {
          failedAt = Date.now();
          pending = undefined;
          throw new IdentityError('idp_unavailable', 'cannot verify OIDC token: identity provider discovery failed', {
            cause: err,
          });
        },
      );
    }
    return pending;
  }

  return {
    issuer,
    async verify(token: string): Promise<VerifiedToken> {
      if (!token) throw new IdentityError('no_token', `an OIDC token (JWT) is required as the ${v.credentialName}`);
      let alg: string | undefined;
      let typ: unknown;
      try {
        ({ alg, typ } = decodeProtectedHeader(token));
      } catch (err) {
        throw new IdentityError('malformed_token', `${v.credentialName} is not a well-formed signed JWT`, {
          cause: err,
        });
      }
      // The IdP signs other tokens for the same audience with the same keys: a back-channel logout token, any
      // Security Event Token (RFC 8417) says something happened to a user, it does not say who is asking.
      if (typeof typ === 'string' && EVENT_TOKEN_TYPES.has(typ.toLowerCase().replace(/^application\//, '')))
        throw new IdentityError('bad_claim', `OIDC token of type "${typ.slice(0, 32)}" is not an identity token`);
      // Checked before any key lookup, so `none` or HS256-with-the-public-key never reach a verifier.
      if (!alg || !v.algorithms.includes(alg)) {
        throw new IdentityError(
          'alg_not_allowed',
          `OIDC token algorithm "${String(alg).slice(0, 16)}" is not allowed (allowed: ${v.algorithms.join(', ')})`,
        );
      }
      try {
        const set = await keySet();
        const { payload } = await jwtVerify(token, set, {
          algorithms: v.algorithms,
          issuer,
          audience: v.audience,
          clockTolerance: v.clockSkewSeconds,
          requiredClaims: ['exp', 'sub'],
          currentDate: cfg.now?.(),
        });
        // jose checks iat's type only (its age only with maxTokenAge); a token issued in the future comes from a
        // wrong clock or a forger's, and is refused as nbf would be.
        if (payload.events !== undefined)
          throw new IdentityError('bad_claim', 'OIDC token carries "events": it is a logout or security event token');
        const now = (cfg.now?.() ?? new Date()).getTime() / 1000;
        if (typeof payload.iat === 'number' && payload.iat > now + v.clockSkewSeconds)
          throw new IdentityError('token_not_yet_valid', 'OIDC token is not valid yet (iat is in the future)');
        // A token that lives for years is as good as a password that never changes once it leaks. Without iat the
        // lifetime left is all the verifier can know; the skew covers a token issued a moment ago by a faster clock.
        const exp = payload.exp as number;
        const lifetime = typeof payload.iat === 'number' ? exp - payload.iat : exp - now - v.clockSkewSeconds;
        if (lifetime > v.maxTokenLifetimeSeconds)
          throw new IdentityError(
            'token_lifetime_too_long',
            `OIDC token lifetime ${formatSeconds(lifetime)} (${typeof payload.iat === 'number' ? 'exp - iat' : 'exp - now, no iat'}) exceeds the maximum of ${formatSeconds(v.maxTokenLifetimeSeconds)}: ask the identity provider for a shorter-lived token`,
          );
        const claim = cfg.usernameClaim || 'sub';
        const user = claimAt(payload, claim);
        if (typeof user !== 'string' || user === '')
          throw new IdentityError('missing_claim', `OIDC token lacks the required "${claim}" claim`);
        // An address the identity provider says it has not verified can be anybody's (OpenID Connect Core 1.0
        // §5.1, email_verified): as a user name, rules naming that user would apply to whoever typed it in.
        // Some providers (Amazon Cognito) send the boolean as a string.
        if (claim === 'email' && (payload.email_verified === false || payload.email_verified === 'false'))
          throw new IdentityError('bad_claim', 'OIDC token "email" is not verified (email_verified is false)');
        // The subject is what bindings and four-eyes checks key on, whatever names the user.
        if (typeof payload.sub !== 'string' || payload.sub === '')
          throw new IdentityError('missing_claim', 'OIDC token lacks the required "sub" claim');
        return {
          user,
          subject: payload.sub,
          groups: groupsOf(payload, v.groupsClaim),
          issuer,
          expiresAt: exp,
          ...(typeof payload.nonce === 'string' ? { nonce: payload.nonce } : {}),
          ...(typeof payload.auth_time === 'number' ? { authTime: payload.auth_time } : {}),
        };
      } catch (err) {
        throw refusal(err, v.algorithms, v.audience, v.credentialName);
      }
    },
  };
}
