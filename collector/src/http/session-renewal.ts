import { createHash } from 'node:crypto';
import type { WebSessionEndReason } from '@pgwarden/policy';
import type { OidcBearer, OidcCaller, SignedIn } from '../auth/oidc-bearer.js';
import type { TokenHolder } from '../auth/token-file.js';
import type { RenewalClaim, WebSessions } from '../auth/web-sessions.js';
import { HttpError } from './json-io.js';
import type { TokenEndpoint } from './token-endpoint.js';

/** After a renewal the identity provider did not answer, the next try waits this long (while the ID token lasts). */
const RETRY_S = 15;
/** How long a request whose session another request is renewing waits for it, once its ID token has expired. */
const WAIT_MS = 15_000;

/** What became of a renewal, for the log: never a token. (An end is told by WebSessions' `ended`.) */
export type RenewalOutcome =
  | { type: 'renewed'; subject: string; rotated: boolean; resealed: boolean }
  | { type: 'retry'; subject: string; why: string };

const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest('base64url');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Keeps web sessions past their ID token with the identity provider's refresh token, server side: when half the ID
 * token's life has passed, the next request that presents the session renews it at the token endpoint
 * (grant_type=refresh_token, RFC 6749 §6), verifies the new ID token as at sign-in (issuer, audience, signature,
 * algorithms, lifetime), requires the same `sub`, and the same `nonce` and `auth_time` where it repeats them (OpenID
 * Connect Core 1.0 §12.2), and binds the session to the entry the new token's claims (username, groups) now give: a
 * person the identity provider dropped from a group acts without it from then on, one no entry binds is signed out.
 * A refusal (revoked, `invalid_grant`) or a token that fails any of that ends the session on every replica; an
 * identity provider that does not answer leaves it until its ID token's `exp`, retried meanwhile, and then ends it
 * (fail closed), saying why.
 */
export class SessionRenewal {
  constructor(
    private readonly oidc: OidcBearer,
    private readonly sessions: WebSessions,
    private readonly endpoint: TokenEndpoint,
    private readonly holderOf: (caller: OidcCaller) => TokenHolder | undefined,
    private readonly onOutcome: (o: RenewalOutcome) => void = () => {},
  ) {}

  /** Who the cookie's session is now (renewed first when due), why it ended, or undefined for no session. */
  async signedIn(cookie: string | undefined): Promise<SignedIn | undefined> {
    for (let waited = 0; ; waited += 200) {
      const s = await this.sessions.lookup(cookie);
      if (!s) return undefined;
      if (s.state === 'ended') return { ended: s.why };
      if (!s.renewDue) return s.caller;
      if (!s.renewing) {
        const claim = await this.sessions.claimRenewal(cookie);
        if (claim) return this.renew(cookie, claim, s.caller);
      }
      // Another request renews it; until its ID token expires the session acts as it is.
      if (!s.expired) return s.caller;
      if (waited >= WAIT_MS)
        throw new HttpError(503, 'session_renewing', 'the sign-in is being renewed and the renewal is slow: try again');
      await sleep(200);
    }
  }

  private async renew(cookie: string | undefined, claim: RenewalClaim, before: OidcCaller): Promise<SignedIn> {
    const end = async (reason: WebSessionEndReason, why: string): Promise<SignedIn> => {
      await this.sessions.end(cookie, reason, why);
      return { ended: why };
    };
    const later = async (why: string): Promise<SignedIn> => {
      if (claim.expired)
        return end('idp_unavailable', `the ID token expired and the identity provider could not renew it (${why})`);
      await this.sessions.renewalFailed(claim, why, RETRY_S);
      this.onOutcome({ type: 'retry', subject: claim.subject, why });
      return before;
    };
    if (claim.refreshToken === undefined)
      return end(
        'key_unknown',
        'its refresh token opens under none of the web session keys (--web-session-key-file, ' +
          '--web-session-previous-key-file): the key it was sealed with was rotated out',
      );
    const answer = await this.endpoint.refresh(claim.refreshToken);
    if (answer.kind === 'unreachable') return later(answer.message);
    if (answer.kind === 'refused')
      return end(
        'refresh_refused',
        `the identity provider refused to renew the sign-in (${answer.error ?? `HTTP ${answer.status}`})`,
      );
    if (!answer.idToken) return end('renewal_invalid', 'the identity provider renewed the sign-in without an ID token');
    const v = await this.oidc.verify(answer.idToken);
    if (!v.ok) {
      if (v.reason === 'idp_unavailable') return later(v.message);
      return end('renewal_invalid', `the renewed ID token was refused: ${v.message} (${v.reason})`);
    }
    if (v.caller.subject !== claim.subject)
      return end('renewal_invalid', 'the renewed ID token names another subject (sub)');
    if (v.nonce !== undefined && (claim.nonceSha256 === null || sha256(v.nonce) !== claim.nonceSha256))
      return end('renewal_invalid', 'the renewed ID token carries a nonce other than the sign-in’s');
    if (claim.authTime !== undefined && v.authTime !== undefined && v.authTime !== claim.authTime)
      return end('renewal_invalid', 'the renewed ID token carries an auth_time other than the sign-in’s');
    let who: TokenHolder | undefined;
    try {
      who = this.holderOf(v.caller);
    } catch (err) {
      if (err instanceof HttpError && err.status === 503) return later(err.message);
      if (err instanceof HttpError) return end('unbound', err.message);
      throw err;
    }
    if (!who)
      return end(
        'unbound',
        `OIDC user ${v.caller.user} at ${v.caller.issuer} is no longer bound to a reader or approver`,
      );
    if (!(await this.sessions.renewed(claim, v.caller, who.name, v.expiresAt, answer.refreshToken))) {
      // The claim lapsed while the identity provider took its time, and another took it: theirs is what counts.
      const now = await this.sessions.lookup(cookie);
      if (!now) return { ended: 'the sign-in ended while it was being renewed' };
      return now.state === 'ended' ? { ended: now.why } : now.caller;
    }
    this.onOutcome({
      type: 'renewed',
      subject: claim.subject,
      rotated: answer.refreshToken !== undefined,
      resealed: claim.reseal,
    });
    return v.caller;
  }
}
