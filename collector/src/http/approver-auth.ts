import type { IncomingMessage } from 'node:http';
import { jwtOf, type OidcBearer, type OidcCaller } from '../auth/oidc-bearer.js';
import type { TokenFile, TokenHolder } from '../auth/token-file.js';
import { CLEAR_SESSION_COOKIE, cookieValue, SESSION_COOKIE } from '../auth/web-sessions.js';
import { CollectorError } from '../errors.js';
import { HttpError } from './json-io.js';
import type { ReaderNote } from './read-routes.js';

/**
 * The OIDC caller whose JWT the request's `Authorization` carries, or whose web sign-in its session cookie names;
 * undefined for neither (or when no issuer is set up).
 * 401 `invalid_token` for a token the issuer's keys do not vouch for (expired, wrong audience or issuer, bad
 * signature, forbidden algorithm, unknown key), with the verifier's reason and never the token; 503
 * `idp_unavailable` when the issuer's keys cannot be had, which says nothing about the token, and nothing about the
 * static tokens either, which keep working.
 */
export async function oidcCallerOf(
  oidc: OidcBearer | undefined,
  req: IncomingMessage,
): Promise<OidcCaller | undefined> {
  if (!oidc) return undefined;
  const authorization = req.headers.authorization;
  const jwt = jwtOf(authorization);
  // The web UI's sign-in (web-login.ts): a session cookie, only when no bearer credential was given.
  if (!jwt) {
    if (authorization || !oidc.sessions) return undefined;
    const s = await oidc.sessions.signedIn(req.headers.cookie).catch(storeUnavailable);
    if (s && 'ended' in s) throw sessionEnded(s.ended);
    return s;
  }
  const outcome = await oidc.verify(jwt);
  if (outcome.ok) return outcome.caller;
  if (outcome.reason === 'idp_unavailable') throw new HttpError(503, 'idp_unavailable', outcome.message);
  throw new HttpError(401, 'invalid_token', `${outcome.message} (${outcome.reason})`);
}

/**
 * 401 for a cookie whose session ended, saying why, so that the page can tell its user (not just "sign in"); the
 * browser is told to drop the cookie, which names nothing any more.
 */
export function sessionEnded(why: string): HttpError {
  return new HttpError(401, 'session_ended', `signed out: ${why}; sign in again`, {
    'set-cookie': CLEAR_SESSION_COOKIE,
  });
}

/**
 * 401 for a request no credential stands for. Where its only credential was a web session cookie (oidcCallerOf found
 * it naming no session: signed out elsewhere, or swept since it ended), the browser is told to drop it too, as for an
 * ended session, rather than send it with every request until it expires.
 */
export function unauthorized(oidc: OidcBearer | undefined, req: IncomingMessage, message: string): HttpError {
  const stale =
    oidc?.sessions !== undefined &&
    !req.headers.authorization &&
    cookieValue(req.headers.cookie, SESSION_COOKIE) !== undefined;
  return new HttpError(401, 'unauthorized', message, stale ? { 'set-cookie': CLEAR_SESSION_COOKIE } : {});
}

/**
 * A web session the store cannot look up is not a signed-out one: 503, so the page says to retry rather than to sign
 * in again. The store's own message is not passed on (it may name the server).
 */
export function storeUnavailable(err: unknown): never {
  if (err instanceof CollectorError && err.code === 'COLLECTOR_STORE')
    throw new HttpError(503, 'store_unavailable', 'web sign-in unavailable: the store does not answer');
  throw err;
}

/** The holder `file` binds the caller to; 403 `ambiguous_oidc_binding` when several entries bind them. */
export function boundHolder(oidc: OidcBearer, file: TokenFile, caller: OidcCaller): TokenHolder | undefined {
  const holder = oidc.holderIn(file, caller);
  if (holder === 'ambiguous')
    throw new HttpError(
      403,
      'ambiguous_oidc_binding',
      `OIDC user ${caller.user} at ${caller.issuer} is bound to several ${file.kind} file entries: bind them to one`,
    );
  return holder;
}

/**
 * The approver whose bearer token `req` carries, told to `note` for the request's `audit.read` event: a static
 * token of the approvers file, else an OIDC token (JWT) whose holder an approvers entry binds (`oidc`). 501 without
 * an approvers file (nobody can authenticate), 401 for a missing or unknown static token or an invalid JWT, 403 for
 * a valid JWT no approver is bound to, 503 while the file on disk is invalid (every token is refused until it is
 * fixed) or while the identity provider's keys cannot be had (for JWTs only).
 */
export async function requireApprover(
  approvers: TokenFile | undefined,
  oidc: OidcBearer | undefined,
  req: IncomingMessage,
  note: ReaderNote,
): Promise<TokenHolder> {
  if (!approvers)
    throw new HttpError(501, 'no_approvers', 'no approvers configured: start the collector with --approvers-file');
  const unavailable = (err: unknown): never => {
    if (err instanceof CollectorError) throw new HttpError(503, 'approvers_unavailable', err.message);
    throw err;
  };
  let who: TokenHolder | undefined;
  try {
    who = approvers.authenticate(req.headers.authorization);
  } catch (err) {
    unavailable(err);
  }
  if (!who) {
    const caller = await oidcCallerOf(oidc, req);
    if (caller && oidc) {
      note.oidc = { issuer: caller.issuer, subject: caller.subject };
      try {
        who = boundHolder(oidc, approvers, caller);
      } catch (err) {
        if (err instanceof HttpError) throw err;
        unavailable(err);
      }
      if (!who)
        throw new HttpError(
          403,
          'not_an_approver',
          `OIDC user ${caller.user} at ${caller.issuer} is not bound to an approver (approvers file, oidc)`,
        );
    }
  }
  if (!who) throw unauthorized(oidc, req, 'missing or unknown approver bearer token');
  note.reader = who.name;
  if (who.namespaces) note.namespaces = who.namespaces;
  return who;
}
