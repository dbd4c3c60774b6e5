import { createHash, randomBytes } from 'node:crypto';
import { CollectorError } from '../errors.js';
import type { SqlRunner } from '../store/sql-client.js';
import type { OidcCaller } from './oidc-bearer.js';
import type { RefreshTokenSeal } from './refresh-token-seal.js';

/** The web UI's session cookie. `__Host-`: Secure, Path=/, no Domain, so no other host or path can set or read it. */
export const SESSION_COOKIE = '__Host-pgwarden-session';

/**
 * A flood of sign-ins cannot grow the tables without bound: past these the oldest sessions go first, and the
 * sign-ins in flight of whoever holds the most (begin).
 */
const MAX_SESSIONS = 10_000;
const MAX_PENDING = 1000;

const digest = (id: string) => createHash('sha256').update(id, 'utf8').digest('base64url');
const random = () => randomBytes(32).toString('base64url');

/** The value of cookie `name` in a `Cookie` header. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

/** A sign-in between the redirect to the identity provider and its callback. */
export interface PendingLogin {
  /** The PKCE code verifier (RFC 7636): only this collector's store and the token endpoint ever see it. */
  verifier: string;
  nonce: string;
  /** Where the browser goes once signed in: a path of this collector. */
  returnTo: string;
}

/** What a session may be renewed with (a refresh token) and what a renewed ID token must repeat (§12.2). */
export interface Renewal {
  refreshToken: string;
  /** The sign-in's nonce; kept as its SHA-256. */
  nonce: string;
  authTime?: number;
}

/** How long a session may last whatever its tokens say (`--web-session-max-age`, `--web-session-idle-timeout`). */
export interface SessionLimits {
  maxAgeS: number;
  idleS: number;
  /** The refresh tokens' key (`--web-session-key-file`); without it none is kept, and no session is renewed. */
  seal?: RefreshTokenSeal;
}

export const DEFAULT_LIMITS: SessionLimits = { maxAgeS: 12 * 3600, idleS: 3600 };

/** A session the cookie names, as the store sees it now. */
export type SessionState =
  | {
      state: 'live';
      caller: OidcCaller;
      /** Its refresh token is due: renew before (or, past `expired`, instead of) letting it act. */
      renewDue: boolean;
      /** Its ID token's exp has passed: without a renewal it acts no more. */
      expired: boolean;
      /** Another request is renewing it (on this replica or another), until the claim lapses. */
      renewing: boolean;
    }
  | { state: 'ended'; why: string };

/** A renewal claimed by one request: the refresh token and what the renewed ID token must match. */
export interface RenewalClaim {
  id: string;
  by: string;
  refreshToken: string | undefined;
  subject: string;
  nonceSha256: string | null;
  authTime: number | undefined;
  expired: boolean;
}

/**
 * A renewal in progress is someone's for this long; a replica that died mid-way holds it no longer. Longer than a
 * renewal can take: each of its requests to the identity provider (token endpoint, then at most discovery and JWKS)
 * is cut off after 5 s (policy/oidc/https-fetch.ts), so a claim never lapses under a renewal still running.
 */
const CLAIM_S = 30;

/**
 * People signed in to the web UI through the identity provider (http/web-login.ts), and sign-ins in flight, kept in
 * the collector's store (tables `collector_web_sessions`, `collector_web_logins`) so that every replica on the store
 * sees them and a restart keeps them. A random id in an HttpOnly cookie is all the browser gets; the store keeps its
 * SHA-256, so reading the table gives no usable cookie, and never a token in clear: a refresh token is kept only
 * sealed (auth/refresh-token-seal.ts) with the session's id, which only the browser holds. Expiry is judged by the
 * store's clock, the one clock all replicas share. A session acts until its ID token's `exp` (renewed with the
 * refresh token when there is one: http/session-renewal.ts), never past its maximum age nor once idle longer than
 * the idle timeout, and ends at sign-out, on every replica at once; which entry the caller acts as is looked up in
 * the files at every request, so a binding removed from the approvers or readers file takes effect at once.
 */
export class WebSessions {
  constructor(
    private readonly db: SqlRunner,
    private readonly maxPending = MAX_PENDING,
    readonly limits: SessionLimits = DEFAULT_LIMITS,
  ) {}

  /** Store failures as COLLECTOR_STORE, so the HTTP layer answers 503, never "signed out" (401) nor 500. */
  private async query<T = Record<string, unknown>>(text: string, params?: unknown[]): Promise<T[]> {
    try {
      return await this.db.query<T>(text, params);
    } catch (err) {
      throw new CollectorError('COLLECTOR_STORE', `web sessions: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Whether sessions opened now keep a refresh token (a key is set). */
  get renews(): boolean {
    return this.limits.seal !== undefined;
  }

  /**
   * A new session for `caller`, bound to `entry` now, until `expiresAt` (epoch s) or, with a `renewal` and a key,
   * until its maximum age; returns its id, for the cookie only.
   */
  async open(caller: OidcCaller, entry: string, expiresAt: number, renewal?: Renewal): Promise<string> {
    const id = random();
    const sealed = renewal && this.limits.seal?.seal(renewal.refreshToken, id);
    await this.query(
      `INSERT INTO collector_web_sessions (id_sha256, entry, issuer, subject, username, groups, expires_at,
         ends_at, refresh_sealed, nonce_sha256, auth_time, renew_after)
       VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7), now() + make_interval(secs => $8), $9, $10, $11,
         CASE WHEN $9::bytea IS NULL THEN NULL ELSE now() + (to_timestamp($7) - now()) / 2 END)`,
      [
        digest(id),
        entry,
        caller.issuer,
        caller.subject,
        caller.user,
        caller.groups,
        expiresAt,
        this.limits.maxAgeS,
        sealed ?? null,
        sealed && renewal ? digest(renewal.nonce) : null,
        sealed ? (renewal?.authTime ?? null) : null,
      ],
    );
    await this.query(
      `DELETE FROM collector_web_sessions WHERE id_sha256 IN
         (SELECT id_sha256 FROM collector_web_sessions ORDER BY created_at DESC OFFSET $1)`,
      [MAX_SESSIONS],
    );
    return id;
  }

  /** The caller whose session the request's cookie names, while its ID token lasts; no renewal. */
  async callerOf(cookieHeader: string | undefined): Promise<OidcCaller | undefined> {
    const s = await this.lookup(cookieHeader);
    return s?.state === 'live' && !s.expired ? s.caller : undefined;
  }

  /**
   * The session the cookie names (undefined: none, or gone), with whether it is due for renewal; a live one is
   * marked used (at most once a minute: the idle timeout counts from there).
   */
  async lookup(cookieHeader: string | undefined): Promise<SessionState | undefined> {
    const id = cookieValue(cookieHeader, SESSION_COOKIE);
    if (!id) return undefined;
    const [row] = await this.query<{
      issuer: string;
      subject: string;
      username: string;
      groups: string[];
      ended: string | null;
      aged: boolean;
      idle: boolean;
      expired: boolean;
      renewable: boolean;
      due: boolean;
      renewing: boolean;
      failure: string | null;
      seen: boolean;
    }>(
      `SELECT issuer, subject, username, groups, ended, ends_at <= now() AS aged,
              last_seen_at <= now() - make_interval(secs => $2) AS idle, expires_at <= now() AS expired,
              refresh_sealed IS NOT NULL AS renewable, renew_after <= now() AS due,
              coalesce(renewing_by IS NOT NULL AND renewing_until > now(), false) AS renewing, renew_failure AS failure,
              last_seen_at > now() - make_interval(secs => least(60, $2::float8 / 10)) AS seen
       FROM collector_web_sessions WHERE id_sha256 = $1`,
      [digest(id), this.limits.idleS],
    );
    if (!row) return undefined;
    if (row.ended) return { state: 'ended', why: row.ended };
    if (row.aged) return { state: 'ended', why: `the sign-in reached its maximum age (${hours(this.limits.maxAgeS)})` };
    if (row.idle) return { state: 'ended', why: `the sign-in was unused for ${hours(this.limits.idleS)}` };
    const renewable = row.renewable && this.renews;
    if (row.expired && !renewable)
      return {
        state: 'ended',
        why: row.failure
          ? `the sign-in expired with its ID token: it could not be renewed (${row.failure})`
          : 'the sign-in expired with its ID token',
      };
    if (!row.seen)
      await this.query('UPDATE collector_web_sessions SET last_seen_at = now() WHERE id_sha256 = $1', [digest(id)]);
    return {
      state: 'live',
      caller: { issuer: row.issuer, subject: row.subject, user: row.username, groups: [...row.groups] },
      renewDue: renewable && row.due === true,
      expired: row.expired,
      renewing: row.renewing,
    };
  }

  /**
   * Takes the renewal of the session the cookie names: one UPDATE whose condition is that nobody holds it, so of two
   * requests (on one replica or two) exactly one gets it, and a refresh token is never spent twice. Undefined when
   * another holds it or it is not due (any more). After a failed try the next waits (renewalFailed), except once the
   * ID token has expired: then one more try decides at once whether the session goes on.
   */
  async claimRenewal(cookieHeader: string | undefined): Promise<RenewalClaim | undefined> {
    const id = cookieValue(cookieHeader, SESSION_COOKIE);
    if (!id || !this.limits.seal) return undefined;
    const by = random();
    const [row] = await this.query<{
      sealed: Uint8Array;
      subject: string;
      nonce_sha256: string | null;
      auth_time: string | null;
      expired: boolean;
    }>(
      `UPDATE collector_web_sessions SET renewing_by = $2, renewing_until = now() + make_interval(secs => $3)
       WHERE id_sha256 = $1 AND refresh_sealed IS NOT NULL AND ended IS NULL AND ends_at > now()
         AND renew_after <= now()
         AND (renewing_until IS NULL OR renewing_until <= now() OR (renewing_by IS NULL AND expires_at <= now()))
       RETURNING refresh_sealed AS sealed, subject, nonce_sha256, auth_time, expires_at <= now() AS expired`,
      [digest(id), by, CLAIM_S],
    );
    if (!row) return undefined;
    return {
      id,
      by,
      refreshToken: this.limits.seal.open(Buffer.from(row.sealed), id),
      subject: row.subject,
      nonceSha256: row.nonce_sha256,
      authTime: row.auth_time === null ? undefined : Number(row.auth_time),
      expired: row.expired,
    };
  }

  /**
   * The renewal done: the session acts as the renewed ID token says until its `exp`, with the new refresh token if
   * the identity provider rotated it. Only while the claim is still this one's (a claim that lapsed may have been
   * taken and used by another).
   */
  async renewed(
    claim: RenewalClaim,
    caller: OidcCaller,
    entry: string,
    expiresAt: number,
    refreshToken?: string,
  ): Promise<boolean> {
    const sealed = refreshToken !== undefined ? this.limits.seal?.seal(refreshToken, claim.id) : undefined;
    const rows = await this.query(
      `UPDATE collector_web_sessions SET entry = $3, username = $4, groups = $5, expires_at = to_timestamp($6),
         renew_after = now() + (to_timestamp($6) - now()) / 2, refresh_sealed = coalesce($7, refresh_sealed),
         renewing_by = NULL, renewing_until = NULL, renew_failure = NULL
       WHERE id_sha256 = $1 AND renewing_by = $2 AND ended IS NULL RETURNING 1`,
      [digest(claim.id), claim.by, entry, caller.user, caller.groups, expiresAt, sealed ?? null],
    );
    return rows.length > 0;
  }

  /** A renewal that could not be done now (the identity provider did not answer): the next try waits `retryS`. */
  async renewalFailed(claim: RenewalClaim, why: string, retryS: number): Promise<void> {
    await this.query(
      `UPDATE collector_web_sessions SET renewing_by = NULL, renewing_until = now() + make_interval(secs => $3),
         renew_failure = $4
       WHERE id_sha256 = $1 AND renewing_by = $2`,
      [digest(claim.id), claim.by, retryS, why.slice(0, 512)],
    );
  }

  /**
   * Ends the session the cookie names on every replica, saying why (shown to its browser until the row is swept);
   * its refresh token is dropped at once.
   */
  async end(cookieHeader: string | undefined, why: string): Promise<void> {
    const id = cookieValue(cookieHeader, SESSION_COOKIE);
    if (!id) return;
    await this.query(
      `UPDATE collector_web_sessions SET ended = $2, ends_at = least(ends_at, now()), refresh_sealed = NULL,
         renewing_by = NULL, renewing_until = NULL
       WHERE id_sha256 = $1 AND ended IS NULL`,
      [digest(id), why.slice(0, 512)],
    );
  }

  /** Ends the session the cookie names (sign-out), on every replica. */
  async close(cookieHeader: string | undefined): Promise<void> {
    const id = cookieValue(cookieHeader, SESSION_COOKIE);
    if (id) await this.query('DELETE FROM collector_web_sessions WHERE id_sha256 = $1', [digest(id)]);
  }

  /**
   * A new sign-in lasting `ttlMs`, started by `source` (the client's address, http/client-address.ts); returns its
   * `state`, which names it in the login cookie and the callback. Past the cap the rows go by their rank within
   * their source, newest first: the 1000th sign-in of one client goes before anyone's 2nd, and a client's only
   * sign-in goes only when more than the cap of distinct sources each have one in flight. A flood from one address
   * thus evicts nothing but its own.
   */
  async begin(login: PendingLogin, ttlMs: number, source: string): Promise<string> {
    const state = random();
    await this.query(
      `INSERT INTO collector_web_logins (state_sha256, verifier, nonce, return_to, source, expires_at)
       VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))`,
      [digest(state), login.verifier, login.nonce, login.returnTo, source, ttlMs / 1000],
    );
    await this.query(
      `DELETE FROM collector_web_logins WHERE state_sha256 IN
         (SELECT state_sha256 FROM
            (SELECT state_sha256, expires_at,
                    row_number() OVER (PARTITION BY source ORDER BY expires_at DESC, state_sha256) AS rank
             FROM collector_web_logins) ranked
          ORDER BY rank, expires_at DESC, state_sha256 OFFSET $1)`,
      [this.maxPending],
    );
    return state;
  }

  /**
   * The sign-in `state` names, taken: one DELETE … RETURNING, so of two callbacks with the same state (a replay, on
   * this replica or another) exactly one gets it. Undefined when unknown, used or expired.
   */
  async consume(state: string): Promise<PendingLogin | undefined> {
    const [row] = await this.query<{ verifier: string; nonce: string; return_to: string; live: boolean }>(
      `DELETE FROM collector_web_logins WHERE state_sha256 = $1
       RETURNING verifier, nonce, return_to, expires_at > now() AS live`,
      [digest(state)],
    );
    return row?.live ? { verifier: row.verifier, nonce: row.nonce, returnTo: row.return_to } : undefined;
  }

  /** Removes expired sessions and sign-ins (rows nobody can use any more); returns how many. */
  async sweep(): Promise<number> {
    // One that was ended early stays 10 minutes, so that its browser's next request learns why.
    const s = await this.query(
      `DELETE FROM collector_web_sessions
       WHERE CASE WHEN ended IS NOT NULL THEN ends_at <= now() - interval '10 minutes'
             ELSE ends_at <= now() OR last_seen_at <= now() - make_interval(secs => $1)
               OR (expires_at <= now() AND (refresh_sealed IS NULL OR NOT $2)) END
       RETURNING 1`,
      [this.limits.idleS, this.renews],
    );
    const l = await this.query('DELETE FROM collector_web_logins WHERE expires_at <= now() RETURNING 1');
    return s.length + l.length;
  }
}

const hours = (s: number) => (s % 3600 === 0 ? `${s / 3600}h` : s % 60 === 0 ? `${s / 60}m` : `${s}s`);
