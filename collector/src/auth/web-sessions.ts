import { createHash, randomBytes } from 'node:crypto';
import type { OidcCaller } from './oidc-bearer.js';

/** The web UI's session cookie. `__Host-`: Secure, Path=/, no Domain, so no other host or path can set or read it. */
export const SESSION_COOKIE = '__Host-pgwarden-session';

const MAX_SESSIONS = 10_000;

const digest = (id: string) => createHash('sha256').update(id, 'utf8').digest('base64url');

/** The value of cookie `name` in a `Cookie` header. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

/**
 * People signed in to the web UI through the identity provider (http/web-login.ts): a random session id in an
 * HttpOnly cookie, the caller it stands for here, never the token. Kept as the id's SHA-256, so a dump of this map
 * holds no usable cookie. A session ends with the ID token it was opened with (its `exp`), at sign-out, or at a
 * restart; which entry the caller acts as is looked up at every request, so a binding removed from the approvers or
 * readers file takes effect at once.
 */
export class WebSessions {
  private readonly byDigest = new Map<string, { caller: OidcCaller; expiresAt: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  /** A new session for `caller` until `expiresAt` (epoch ms); returns its id, for the cookie only. */
  open(caller: OidcCaller, expiresAt: number): string {
    this.sweep();
    // The oldest go first when too many are open: a flood of sign-ins cannot grow the map without bound.
    while (this.byDigest.size >= MAX_SESSIONS) {
      const oldest = this.byDigest.keys().next().value;
      if (oldest === undefined) break;
      this.byDigest.delete(oldest);
    }
    const id = randomBytes(32).toString('base64url');
    this.byDigest.set(digest(id), { caller, expiresAt });
    return id;
  }

  /** The caller whose session the request's cookie names, while it lasts. */
  callerOf(cookieHeader: string | undefined): OidcCaller | undefined {
    const id = cookieValue(cookieHeader, SESSION_COOKIE);
    if (!id) return undefined;
    const key = digest(id);
    const s = this.byDigest.get(key);
    if (!s) return undefined;
    if (s.expiresAt <= this.now()) {
      this.byDigest.delete(key);
      return undefined;
    }
    return s.caller;
  }

  /** Ends the session the cookie names (sign-out). */
  close(cookieHeader: string | undefined): void {
    const id = cookieValue(cookieHeader, SESSION_COOKIE);
    if (id) this.byDigest.delete(digest(id));
  }

  get size(): number {
    return this.byDigest.size;
  }

  private sweep(): void {
    const now = this.now();
    for (const [k, s] of this.byDigest) if (s.expiresAt <= now) this.byDigest.delete(k);
  }
}
