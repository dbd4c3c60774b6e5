import { createHash, randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { WebSessionEndReason } from '@pgwarden/policy';
import { CollectorError } from '../errors.js';
import type { SqlRunner } from '../store/sql-client.js';
import type { OidcCaller } from './oidc-bearer.js';
import type { RefreshTokenSeal } from './refresh-token-seal.js';

/** The web UI's session cookie. `__Host-`: Secure, Path=/, no Domain, so no other host or path can set or read it. */
export const SESSION_COOKIE = '__Host-pgwarden-session';

/**
 * The Set-Cookie that makes the browser drop the session cookie: the attributes it was set with (a cookie is replaced
 * only by one of the same name, path and domain; `__Host-` also wants Secure), and Max-Age=0 (RFC 6265 §5.2.2).
 */
export const CLEAR_SESSION_COOKIE = `${SESSION_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0`;

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

/** A sign-in that ended, once, on whichever replica saw it end: for the audit trail and the log, never a token. */
export interface SessionEnd {
  reason: WebSessionEndReason;
  /** The reason in words, as the browser is told. */
  detail: string;
  /** The readers or approvers entry it acted as. */
  entry: string;
  issuer: string;
  subject: string;
}

export interface WebSessionEvents {
  ended: [end: SessionEnd];
}

/** What the end of a session is told with: the row's who, as `… RETURNING ${WHO}` gives it. */
const WHO = 'entry, issuer, subject';
type Who = { entry: string; issuer: string; subject: string };

/** A renewal claimed by one request: the refresh token and what the renewed ID token must match. */
export interface RenewalClaim {
  id: string;
  by: string;
  refreshToken: string | undefined;
  /** Its refresh token opened under a previous key only: sealed again under the current one once renewed. */
  reseal: boolean;
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
 *
 * Every end of a session is told once (`ended`), by the replica whose statement ended it: one UPDATE or DELETE whose
 * condition is that it had not ended yet, so two replicas that see it end at once do not both tell it.
 */
export class WebSessions extends EventEmitter<WebSessionEvents> {
  constructor(
    private readonly db: SqlRunner,
    private readonly maxPending = MAX_PENDING,
    readonly limits: SessionLimits = DEFAULT_LIMITS,
  ) {
    super();
  }

  private told(rows: Who[], reason: WebSessionEndReason, detail: string): void {
    for (const r of rows) this.emit('ended', { reason, detail, entry: r.entry, issuer: r.issuer, subject: r.subject });
  }

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
    const evicted = await this.query<Who & { ended: string | null }>(
      `DELETE FROM collector_web_sessions WHERE id_sha256 IN
         (SELECT id_sha256 FROM collector_web_sessions ORDER BY created_at DESC OFFSET $1)
       RETURNING ${WHO}, ended`,
      [MAX_SESSIONS],
    );
    this.told(
      evicted.filter((r) => r.ended === null),
      'evicted',
      `pushed out by newer sign-ins (at most ${MAX_SESSIONS} are kept)`,
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
    if (row.aged)
      return this.ends(id, 'max_age', `the sign-in reached its maximum age (${hours(this.limits.maxAgeS)})`);
    if (row.idle) return this.ends(id, 'idle', `the sign-in was unused for ${hours(this.limits.idleS)}`);
    const renewable = row.renewable && this.renews;
    if (row.expired && !renewable)
      return row.failure
        ? this.ends(
            id,
            'idp_unavailable',
            `the sign-in expired with its ID token: it could not be renewed (${row.failure})`,
          )
        : this.ends(id, 'expired', 'the sign-in expired with its ID token');
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
   * A session found past its end: marked ended (so that the next request, on any replica, is told the same without
   * telling it again), and the end told by whoever marked it.
   */
  private async ends(id: string, reason: WebSessionEndReason, why: string): Promise<SessionState> {
    await this.endById(id, reason, why);
    return { state: 'ended', why };
  }

  private async endById(id: string, reason: WebSessionEndReason, why: string): Promise<void> {
    const detail = why.slice(0, 512);
    const rows = await this.query<Who>(
      `UPDATE collector_web_sessions SET ended = $2, ends_at = least(ends_at, now()), refresh_sealed = NULL,
         renewing_by = NULL, renewing_until = NULL
       WHERE id_sha256 = $1 AND ended IS NULL RETURNING ${WHO}`,
      [digest(id), detail],
    );
    this.told(rows, reason, detail);
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
    const opened = this.limits.seal.unseal(Buffer.from(row.sealed), id);
    return {
      id,
      by,
      refreshToken: opened?.token,
      reseal: opened !== undefined && !opened.current,
      subject: row.subject,
      nonceSha256: row.nonce_sha256,
      authTime: row.auth_time === null ? undefined : Number(row.auth_time),
      expired: row.expired,
    };
  }

  /**
   * The renewal done: the session acts as the renewed ID token says until its `exp`, with the new refresh token if
   * the identity provider rotated it, else with the same one (sealed again under the current key if a previous key
   * sealed it: after a key rotation every session that renews leaves the old key behind). Only while the claim is
   * still this one's (a claim that lapsed may have been taken and used by another).
   */
  async renewed(
    claim: RenewalClaim,
    caller: OidcCaller,
    entry: string,
    expiresAt: number,
    refreshToken?: string,
  ): Promise<boolean> {
    const keep = refreshToken ?? (claim.reseal ? claim.refreshToken : undefined);
    const sealed = keep !== undefined ? this.limits.seal?.seal(keep, claim.id) : undefined;
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
  async end(cookieHeader: string | undefined, reason: WebSessionEndReason, why: string): Promise<void> {
    const id = cookieValue(cookieHeader, SESSION_COOKIE);
    if (id) await this.endById(id, reason, why);
  }

  /** Ends the session the cookie names (sign-out), on every replica. */
  async close(cookieHeader: string | undefined): Promise<void> {
    const id = cookieValue(cookieHeader, SESSION_COOKIE);
    if (!id) return;
    const rows = await this.query<Who & { ended: string | null }>(
      `DELETE FROM collector_web_sessions WHERE id_sha256 = $1 RETURNING ${WHO}, ended`,
      [digest(id)],
    );
    // One that had ended already was told then; signing out of it ends nothing.
    this.told(
      rows.filter((r) => r.ended === null),
      'signed_out',
      'signed out',
    );
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
    // One that was ended early stays 10 minutes, so that its browser's next request learns why. One that ran out
    // unseen (its browser never came back) ends here, and is told here.
    const s = await this.query<Who & { reason: WebSessionEndReason | null }>(
      `DELETE FROM collector_web_sessions
       WHERE CASE WHEN ended IS NOT NULL THEN ends_at <= now() - interval '10 minutes'
             ELSE ends_at <= now() OR last_seen_at <= now() - make_interval(secs => $1)
               OR (expires_at <= now() AND (refresh_sealed IS NULL OR NOT $2)) END
       RETURNING ${WHO},
         CASE WHEN ended IS NOT NULL THEN NULL WHEN ends_at <= now() THEN 'max_age'
              WHEN last_seen_at <= now() - make_interval(secs => $1) THEN 'idle' ELSE 'expired' END AS reason`,
      [this.limits.idleS, this.renews],
    );
    const said = (reason: WebSessionEndReason) =>
      reason === 'max_age'
        ? `the sign-in reached its maximum age (${hours(this.limits.maxAgeS)})`
        : reason === 'idle'
          ? `the sign-in was unused for ${hours(this.limits.idleS)}`
          : 'the sign-in expired with its ID token';
    for (const r of s) if (r.reason) this.told([r], r.reason, said(r.reason));
    const l = await this.query('DELETE FROM collector_web_logins WHERE expires_at <= now() RETURNING 1');
    return s.length + l.length;
  }
}

const hours = (s: number) => (s % 3600 === 0 ? `${s / 3600}h` : s % 60 === 0 ? `${s / 60}m` : `${s}s`);
