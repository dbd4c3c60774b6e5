import { createHash, randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { BlockList } from 'node:net';
import type { OidcBearer, OidcCaller } from '../auth/oidc-bearer.js';
import type { TokenFile, TokenHolder } from '../auth/token-file.js';
import { CLEAR_SESSION_COOKIE, cookieValue, SESSION_COOKIE, type WebSessions } from '../auth/web-sessions.js';
import { CollectorError } from '../errors.js';
import { boundHolder, sessionEnded, storeUnavailable } from './approver-auth.js';
import { clientAddress, rateKey } from './client-address.js';
import { HttpError, type Reply } from './json-io.js';
import { type RenewalOutcome, SessionRenewal } from './session-renewal.js';
import { SignInRate, type SignInRateOptions } from './sign-in-rate.js';
import { TokenEndpoint } from './token-endpoint.js';

/** `--oidc-client-id` and friends: the web UI's sign-in through the identity provider. */
export interface WebLoginOptions {
  clientId: string;
  /** For a confidential client (client_secret_basic); without it the client is public and PKCE alone binds the code. */
  clientSecret?: string;
  /** The collector's address as browsers reach it: the redirect URI is `<publicUrl>/auth/callback`. */
  publicUrl: string;
  /** Sign-ins one client may start (`/auth/login`, `/auth/callback`); default 20 at once, then 10 a minute. */
  rate?: SignInRateOptions;
  /**
   * Who counts them: by default a bucket per client in this process's memory (SignInRate); the collector passes
   * one in its store (SharedSignInRate), so that the limit holds across replicas.
   */
  limiter?: SignInLimiter;
  /** Proxies whose `X-Forwarded-For` names the client (`--trusted-proxy`); without them the peer address counts. */
  trustedProxies?: BlockList;
  /**
   * `--oidc-offline-access`: ask for the `offline_access` scope (with `prompt=consent`, OpenID Connect Core 1.0 §11),
   * which some identity providers want before they issue a refresh token.
   */
  offlineAccess?: boolean;
}

/** Takes one sign-in of a client: 0 when granted, else the seconds until the next one. */
export interface SignInLimiter {
  take(client: string): number | Promise<number>;
}

/** The sign-in in flight: bound to the browser by a cookie, used once, for ten minutes at most. */
const LOGIN_COOKIE = '__Host-pgwarden-login';
const LOGIN_TTL_MS = 10 * 60_000;

const random = () => randomBytes(32).toString('base64url');

/**
 * OpenID Connect authorization code flow with PKCE (RFC 7636, S256) for the web UI: `/auth/login` sends the browser
 * to the issuer's authorization endpoint; `/auth/callback` exchanges the code at its token endpoint (server to
 * server), verifies the ID token as any bearer JWT (OidcBearer) plus its `nonce`, and opens a server-side session
 * whose random id is the only thing the browser gets (HttpOnly, Secure, SameSite=Strict cookie). The ID and access
 * tokens are dropped once verified: never in the page, never stored. A refresh token is kept, sealed, only with a
 * web session key (`renewal` renews the session with it: session-renewal.ts); without one it is dropped too.
 */
export class WebLogin {
  private readonly endpoint: TokenEndpoint;
  private readonly redirectUri: string;
  private readonly rate: SignInLimiter;
  /** Who a session cookie stands for, renewing the session when due (OidcBearer.sessions). */
  readonly renewal: SessionRenewal;

  constructor(
    private readonly oidc: OidcBearer,
    readonly sessions: WebSessions,
    private readonly files: () => (TokenFile | undefined)[],
    private readonly opts: WebLoginOptions,
    onRenewal?: (o: RenewalOutcome) => void,
  ) {
    this.redirectUri = `${opts.publicUrl.replace(/\/+$/, '')}/auth/callback`;
    this.rate = opts.limiter ?? new SignInRate(opts.rate);
    this.endpoint = new TokenEndpoint(oidc, opts);
    this.renewal = new SessionRenewal(oidc, sessions, this.endpoint, (c) => this.holderOf(c), onRenewal);
  }

  static isPath(path: string): boolean {
    return path === '/auth/login' || path === '/auth/callback' || path === '/auth/logout' || path === '/auth/me';
  }

  async answer(req: IncomingMessage, url: URL): Promise<Reply> {
    const source = rateKey(
      clientAddress(req.socket.remoteAddress, req.headers['x-forwarded-for'], this.opts.trustedProxies),
    );
    if (url.pathname === '/auth/login' || url.pathname === '/auth/callback') {
      let wait: number;
      try {
        wait = await this.rate.take(source);
      } catch (err) {
        return storeUnavailable(err);
      }
      if (wait > 0)
        return {
          status: 429,
          body: { error: { code: 'too_many_sign_ins', message: `too many sign-ins from ${source}: try again later` } },
          headers: { 'retry-after': String(wait) },
        };
    }
    return this.route(req, url, source).catch(storeUnavailable);
  }

  private async route(req: IncomingMessage, url: URL, source: string): Promise<Reply> {
    const method = req.method ?? 'GET';
    const path = url.pathname;
    if (path === '/auth/logout') {
      if (method !== 'POST') throw new HttpError(405, 'method_not_allowed', 'sign out with POST');
      await this.sessions.close(req.headers.cookie);
      return { status: 200, body: { signedOut: true }, headers: { 'set-cookie': CLEAR_SESSION_COOKIE } };
    }
    if (method !== 'GET') throw new HttpError(405, 'method_not_allowed', `${method} is not supported on ${path}`);
    if (path === '/auth/me') {
      const caller = await this.renewal.signedIn(req.headers.cookie);
      if (caller && 'ended' in caller) throw sessionEnded(caller.ended);
      const who = caller && this.holderOf(caller);
      // A cookie naming no session (signed out elsewhere, or swept since it ended) is dropped too: the page asks here
      // when it opens, so a stale cookie goes at once.
      const stale = !caller && cookieValue(req.headers.cookie, SESSION_COOKIE) !== undefined;
      if (!who)
        throw new HttpError(401, 'unauthorized', 'not signed in', stale ? { 'set-cookie': CLEAR_SESSION_COOKIE } : {});
      return { status: 200, body: { name: who.name } };
    }
    if (path === '/auth/login') return this.login(url, source);
    return this.callback(req, url);
  }

  private async login(url: URL, source: string): Promise<Reply> {
    const { authorization } = await this.endpoint.discover();
    const nonce = random();
    const verifier = random();
    const state = await this.sessions.begin(
      { nonce, verifier, returnTo: returnPath(url.searchParams.get('return')) },
      LOGIN_TTL_MS,
      source,
    );
    const to = new URL(authorization);
    for (const [k, v] of Object.entries({
      response_type: 'code',
      client_id: this.opts.clientId,
      redirect_uri: this.redirectUri,
      scope: this.opts.offlineAccess ? 'openid profile email offline_access' : 'openid profile email',
      ...(this.opts.offlineAccess ? { prompt: 'consent' } : {}),
      state,
      nonce,
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
    }))
      to.searchParams.set(k, v);
    return {
      status: 302,
      body: {},
      // Lax, not Strict: the identity provider's redirect back is a cross-site navigation, and must carry it.
      headers: {
        location: to.toString(),
        'set-cookie': `${LOGIN_COOKIE}=${state}; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=${LOGIN_TTL_MS / 1000}`,
      },
    };
  }

  private async callback(req: IncomingMessage, url: URL): Promise<Reply> {
    const q = url.searchParams;
    const state = q.get('state') ?? '';
    // The state must be the one this browser was given (login CSRF: someone else's code would sign it in as them).
    // Taken whatever the cookie says: a state seen with the wrong cookie is spent, not left for another try.
    const taken = state ? await this.sessions.consume(state) : undefined;
    const pending = cookieValue(req.headers.cookie, LOGIN_COOKIE) === state ? taken : undefined;
    if (!pending)
      throw new HttpError(
        400,
        'bad_login_state',
        'this sign-in is unknown, expired or from another browser: start again',
      );
    if (q.get('error'))
      throw new HttpError(
        401,
        'login_refused',
        `the identity provider refused the sign-in (${q.get('error')?.slice(0, 64)})`,
      );
    const code = q.get('code');
    if (!code) throw new HttpError(400, 'bad_login_state', 'the identity provider sent no code');
    const tokens = await this.exchange(code, pending.verifier);
    const outcome = await this.oidc.verify(tokens.idToken);
    if (!outcome.ok) {
      if (outcome.reason === 'idp_unavailable') throw new HttpError(503, 'idp_unavailable', outcome.message);
      throw new HttpError(401, 'invalid_token', `${outcome.message} (${outcome.reason})`);
    }
    if (outcome.nonce !== pending.nonce)
      throw new HttpError(401, 'invalid_token', 'the ID token does not carry this sign-in’s nonce');
    const who = this.holderOf(outcome.caller);
    if (!who)
      throw new HttpError(
        403,
        'not_a_reader',
        `OIDC user ${outcome.caller.user} at ${outcome.caller.issuer} is not bound to a reader or approver (oidc)`,
      );
    // Kept only with a key to seal it (WebSessions); the session then lasts as long as it can be renewed.
    const renewal =
      tokens.refreshToken !== undefined && this.sessions.renews
        ? { refreshToken: tokens.refreshToken, nonce: pending.nonce, authTime: outcome.authTime }
        : undefined;
    const id = await this.sessions.open(outcome.caller, who.name, outcome.expiresAt, renewal);
    const { maxAgeS } = this.sessions.limits;
    const maxAge = renewal
      ? maxAgeS
      : Math.max(0, Math.min(maxAgeS, Math.floor(outcome.expiresAt - Date.now() / 1000)));
    return {
      status: 302,
      body: {},
      headers: {
        location: `${this.opts.publicUrl.replace(/\/+$/, '')}${pending.returnTo}`,
        'set-cookie': `${SESSION_COOKIE}=${id}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=${maxAge}`,
      },
    };
  }

  /** A readers or approvers entry binding the caller (throws 403 `ambiguous_oidc_binding`, 503 for a broken file). */
  private holderOf(caller: OidcCaller): TokenHolder | undefined {
    for (const file of this.files()) {
      if (!file) continue;
      try {
        const who = boundHolder(this.oidc, file, caller);
        if (who) return who;
      } catch (err) {
        if (err instanceof CollectorError) throw new HttpError(503, `${file.kind}_unavailable`, err.message);
        throw err;
      }
    }
    return undefined;
  }

  /** The code for tokens at the token endpoint: the ID token, and the refresh token if the issuer gave one. */
  private async exchange(code: string, verifier: string): Promise<{ idToken: string; refreshToken?: string }> {
    const answer = await this.endpoint.exchange(code, verifier, this.redirectUri);
    if (answer.kind === 'unreachable' && answer.status === undefined)
      throw new HttpError(503, 'idp_unavailable', answer.message);
    if (answer.kind !== 'tokens' || answer.idToken === undefined) {
      const status = answer.kind === 'refused' || answer.kind === 'unreachable' ? answer.status : 200;
      const error = answer.kind === 'refused' && answer.error !== undefined ? ` (${answer.error})` : '';
      throw new HttpError(401, 'login_refused', `the token endpoint answered ${status}${error} without an ID token`);
    }
    return {
      idToken: answer.idToken,
      ...(answer.refreshToken !== undefined ? { refreshToken: answer.refreshToken } : {}),
    };
  }
}

/**
 * `/auth/login?return=/path`: where to land after signing in, a path of this collector only (`//host` or `/\\host`
 * would leave it: an open redirect); anything else lands on the home page.
 */
function returnPath(wanted: string | null): string {
  return wanted && wanted.length <= 512 && /^\/(?![/\\])[\x21-\x7e]*$/.test(wanted) ? wanted : '/';
}
