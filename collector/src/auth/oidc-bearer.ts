import { readFileSync } from 'node:fs';
import type { OidcSubject } from '@pgwarden/policy';
import {
  createHttpsFetch,
  createOidcVerifier,
  type HttpsFetch,
  IdentityConfigError,
  IdentityError,
  type IdentityReason,
  type OidcVerifier,
} from '@pgwarden/policy/oidc';
import { CollectorError } from '../errors.js';
import type { SignInRateOptions } from '../http/sign-in-rate.js';
import type { TokenFile, TokenHolder } from './token-file.js';

/** `--oidc-*`: the identity provider whose tokens (JWTs) the API accepts as bearer tokens besides the static ones. */
export interface OidcBearerOptions {
  /** The `iss` tokens carry; discovery is `<issuer>/.well-known/openid-configuration`. https only. */
  issuer: string;
  /** At least one of these must be in the token's `aud`. */
  audience: string[];
  /** PEM file of extra trust anchors for the issuer's TLS (system roots otherwise). */
  caFile?: string;
  /**
   * The claim that names the user, matched against the `subject` of the approvers' and readers' `oidc` bindings.
   * Default `sub`: as the sidecar records users by default, and the one claim an issuer never reassigns.
   */
  usernameClaim?: string;
  /**
   * Where the token's groups are, added to the groups its file entry gives (policies' `approval.approvers.groups`).
   * Absent: the token's groups are ignored, and only the file decides. Groups never stand in for an entry.
   */
  groupsClaim?: string;
  /** Allowed signature algorithms (default RS256, ES256; HMAC and `none` are refused at start-up). */
  algorithms?: string[];
  clockSkewSeconds?: number;
  /** Least time between JWKS refetches for an unknown `kid` (default 30 s). */
  jwksCooldownMs?: number;
  /** After a failed discovery or JWKS fetch, the next attempt waits at least this long (default 5 s). */
  retryMs?: number;
  /**
   * The web UI's sign-in (authorization code + PKCE, http/web-login.ts) as this OAuth client; needs the collector's
   * public URL. Its client id counts as an audience too (an ID token's `aud` is the client id).
   */
  /** `rate`: what is set of the per-client limit on starting sign-ins (sign-in-rate.ts), the defaults for the rest. */
  webLogin?: {
    clientId: string;
    clientSecretFile?: string;
    rate?: Partial<SignInRateOptions>;
    /** `--oidc-offline-access`: ask for `offline_access` (some issuers give refresh tokens only then). */
    offlineAccess?: boolean;
    /**
     * `--web-session-key-file`: 32 bytes, the same on every replica, that seal the refresh tokens kept to renew
     * sessions past their ID token. Without it no refresh token is kept and a session ends with its ID token.
     */
    sessionKeyFile?: string;
    /**
     * `--web-session-previous-key-file`: keys that only open refresh tokens, never seal them (a key being rotated out,
     * or one about to become current); a token one of them opens is sealed again under the current key when its
     * session next renews.
     */
    sessionPreviousKeyFiles?: string[];
    /** `--web-session-max-age` (default 12 h): no session lasts longer, renewed or not. */
    sessionMaxAgeS?: number;
    /** `--web-session-idle-timeout` (default 1 h): a session unused this long ends. */
    sessionIdleS?: number;
  };
}

/** Who a verified token is. */
export interface OidcCaller {
  issuer: string;
  /** `sub`. */
  subject: string;
  /** The username claim's value (`sub` by default). */
  user: string;
  groups: string[];
}

/** Who a web session's cookie stands for, or why it stopped standing for anyone (shown to its browser). */
export type SignedIn = OidcCaller | { ended: string };

export type OidcOutcome =
  | { ok: true; caller: OidcCaller; expiresAt: number; nonce?: string; authTime?: number }
  | { ok: false; reason: IdentityReason; message: string };

/**
 * A compact JWS (RFC 7515 §7.1): three base64url parts (an empty signature too: an `alg: none` token is refused by the verifier, by name). Static tokens are compared first, so a static token of this
 * shape still works; only one no file knows is sent to the identity provider's keys.
 */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

const sameIssuer = (a: string, b: string) => a.replace(/\/+$/, '') === b.replace(/\/+$/, '');

/** The bearer credential of an `Authorization` header when it is shaped like a JWT. */
export function jwtOf(authorization: string | undefined): string | undefined {
  const m = /^Bearer +(\S+) *$/i.exec(authorization ?? '');
  return m && COMPACT_JWS.test(m[1]) ? m[1] : undefined;
}

/**
 * Verifies OIDC tokens for the collector's API (@pgwarden/policy/oidc, as the sidecar verifies its JWT passwords)
 * and finds the approvers or readers file entry a token's holder is bound to.
 */
export class OidcBearer {
  private readonly verifier: OidcVerifier;
  readonly issuer: string;
  /** HTTPS to the identity provider with its CA (the web sign-in's discovery and code exchange use it too). */
  readonly fetch: HttpsFetch;
  /** The web UI's signed-in people, when its sign-in is set up (http/web-login.ts). */
  sessions?: { signedIn(cookieHeader: string | undefined): Promise<SignedIn | undefined> };

  constructor(
    private readonly opts: OidcBearerOptions,
    fetchImpl?: HttpsFetch,
  ) {
    let ca: Buffer | undefined;
    if (opts.caFile) {
      try {
        ca = readFileSync(opts.caFile);
      } catch (err) {
        throw new CollectorError(
          'COLLECTOR_BAD_CONFIG',
          `OIDC CA file ${opts.caFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        );
      }
    }
    this.fetch = fetchImpl ?? createHttpsFetch({ ca });
    try {
      this.verifier = createOidcVerifier(
        {
          issuer: opts.issuer,
          audience: opts.webLogin ? [...opts.audience, opts.webLogin.clientId] : opts.audience,
          ca,
          usernameClaim: opts.usernameClaim || 'sub',
          groupsClaim: opts.groupsClaim || false,
          algorithms: opts.algorithms,
          clockSkewSeconds: opts.clockSkewSeconds,
          jwksCooldownMs: opts.jwksCooldownMs,
          discoveryRetryMs: opts.retryMs,
          credentialName: 'bearer token',
        },
        this.fetch,
      );
    } catch (err) {
      if (err instanceof IdentityConfigError) throw new CollectorError('COLLECTOR_BAD_CONFIG', err.message);
      throw err;
    }
    this.issuer = opts.issuer;
  }

  /** Refusals carry the verifier's stable reason and a message that never holds the token. */
  async verify(token: string): Promise<OidcOutcome> {
    try {
      const t = await this.verifier.verify(token);
      return {
        ok: true,
        caller: { issuer: t.issuer, subject: t.subject, user: t.user, groups: t.groups },
        expiresAt: t.expiresAt,
        ...(t.nonce !== undefined ? { nonce: t.nonce } : {}),
        ...(t.authTime !== undefined ? { authTime: t.authTime } : {}),
      };
    } catch (err) {
      if (err instanceof IdentityError) return { ok: false, reason: err.reason, message: err.message };
      return { ok: false, reason: 'idp_unavailable', message: 'cannot verify OIDC token: internal error' };
    }
  }

  /**
   * The entry of `file` whose `oidc` binding is the caller (same issuer, `subject` equal to the username claim), as
   * the holder the request acts as: `undefined` when none is, `ambiguous` when several are (nobody then: which
   * entry's namespaces and groups would apply cannot be told). Throws while the file is invalid, as authenticate().
   * The holder's `oidc` gains the caller's own subject and user name, so that four-eyes checks see whoever the
   * token says asked, not only what the file binds.
   */
  holderIn(file: TokenFile, caller: OidcCaller): TokenHolder | 'ambiguous' | undefined {
    const found = file.boundTo((b) => sameIssuer(b.issuer, caller.issuer) && b.subject === caller.user);
    if (found.length > 1) return 'ambiguous';
    const holder = found[0];
    if (!holder) return undefined;
    const own: OidcSubject[] = [{ issuer: caller.issuer, subject: caller.subject }];
    if (caller.user !== caller.subject) own.push({ issuer: caller.issuer, subject: caller.user });
    return {
      ...holder,
      groups: this.opts.groupsClaim ? [...new Set([...holder.groups, ...caller.groups])] : holder.groups,
      oidc: [...(holder.oidc ?? []), ...own],
    };
  }
}
