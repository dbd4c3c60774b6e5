import { createHash, randomBytes } from 'node:crypto';
import { CollectorError } from '../errors.js';
import type { SqlRunner } from '../store/sql-client.js';
import type { OidcCaller } from './oidc-bearer.js';

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

/**
 * People signed in to the web UI through the identity provider (http/web-login.ts), and sign-ins in flight, kept in
 * the collector's store (tables `collector_web_sessions`, `collector_web_logins`) so that every replica on the store
 * sees them and a restart keeps them. A random id in an HttpOnly cookie is all the browser gets; the store keeps its
 * SHA-256, so reading the table gives no usable cookie, and never a token. Expiry is judged by the store's clock,
 * the one clock all replicas share. A session ends with the ID token it was opened with (its `exp`) or at sign-out,
 * on every replica at once; which entry the caller acts as is looked up in the files at every request, so a binding
 * removed from the approvers or readers file takes effect at once.
 */
export class WebSessions {
  constructor(
    private readonly db: SqlRunner,
    private readonly maxPending = MAX_PENDING,
  ) {}

  /** Store failures as COLLECTOR_STORE, so the HTTP layer answers 503, never "signed out" (401) nor 500. */
  private async query<T = Record<string, unknown>>(text: string, params?: unknown[]): Promise<T[]> {
    try {
      return await this.db.query<T>(text, params);
    } catch (err) {
      throw new CollectorError('COLLECTOR_STORE', `web sessions: ${(err as Error).message}`, { cause: err });
    }
  }

  /** A new session for `caller`, bound to `entry` now, until `expiresAt` (epoch s); returns its id, for the cookie only. */
  async open(caller: OidcCaller, entry: string, expiresAt: number): Promise<string> {
    const id = random();
    await this.query(
      `INSERT INTO collector_web_sessions (id_sha256, entry, issuer, subject, username, groups, expires_at)
       VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7))`,
      [digest(id), entry, caller.issuer, caller.subject, caller.user, caller.groups, expiresAt],
    );
    await this.query(
      `DELETE FROM collector_web_sessions WHERE id_sha256 IN
         (SELECT id_sha256 FROM collector_web_sessions ORDER BY created_at DESC OFFSET $1)`,
      [MAX_SESSIONS],
    );
    return id;
  }

  /** The caller whose session the request's cookie names, while it lasts. */
  async callerOf(cookieHeader: string | undefined): Promise<OidcCaller | undefined> {
    const id = cookieValue(cookieHeader, SESSION_COOKIE);
    if (!id) return undefined;
    const [row] = await this.query<{ issuer: string; subject: string; username: string; groups: string[] }>(
      `SELECT issuer, subject, username, groups FROM collector_web_sessions
       WHERE id_sha256 = $1 AND expires_at > now()`,
      [digest(id)],
    );
    return row && { issuer: row.issuer, subject: row.subject, user: row.username, groups: [...row.groups] };
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
    const s = await this.query('DELETE FROM collector_web_sessions WHERE expires_at <= now() RETURNING 1');
    const l = await this.query('DELETE FROM collector_web_logins WHERE expires_at <= now() RETURNING 1');
    return s.length + l.length;
  }
}
