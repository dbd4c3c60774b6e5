import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import { HttpError } from './json-io.js';

/**
 * Which `Host` names the API answers to. DNS rebinding (a web page whose own name is made to resolve to the
 * collector's address, 127.0.0.1 included) reaches the API from the operator's browser with the attacker's name in
 * `Host` and `Origin`: the browser thinks it talks to the attacker's site, so the same-origin policy lets the page
 * read every answer, an open read API's included. Refusing names the collector was not told it is reached by
 * closes that; IP literals stay accepted because a page served from an address cannot have that address re-pointed
 * (rebinding needs a name), and probes and scrapers reach a pod by its IP.
 */
export interface HostPolicy {
  /** Lower-case names accepted besides IP literals and `localhost`. */
  names: ReadonlySet<string>;
  /** `*` was configured: every name is accepted (no rebinding protection). */
  any: boolean;
}

/** The names a collector listening on `listenHost` accepts: `allowed`, the listen host if it is a name, `publicUrl`'s. */
export function hostPolicy(
  listenHost: string | undefined,
  allowed: readonly string[] = [],
  publicUrl?: string,
): HostPolicy {
  const names = new Set<string>();
  let any = false;
  for (const raw of allowed) {
    const name = normalName(raw);
    if (name === '*') any = true;
    else if (name) names.add(name);
  }
  if (listenHost && isIP(listenHost) === 0) names.add(normalName(listenHost));
  if (publicUrl) {
    try {
      names.add(normalName(new URL(publicUrl).hostname));
    } catch {
      // resolveApprovalNotifications refuses a bad public URL with a message of its own.
    }
  }
  names.delete('');
  return { names, any };
}

const normalName = (name: string) => name.trim().toLowerCase().replace(/\.$/, '');

/** `host` of a `Host` header value (`name:port`, `[v6]:port`), lower-case, without a trailing dot or brackets. */
function hostOf(header: string): string {
  const m = /^\[([^\]]*)\](?::\d*)?$/.exec(header);
  if (m) return m[1].toLowerCase();
  const i = header.lastIndexOf(':');
  return normalName(i === -1 ? header : header.slice(0, i));
}

function accepted(policy: HostPolicy, host: string): boolean {
  return policy.any || isIP(host) !== 0 || host === 'localhost' || policy.names.has(host);
}

const STATE_CHANGING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/**
 * Throws 421 `bad_host` for a `Host` name the collector does not answer to, and 403 `bad_origin` for a
 * state-changing request whose `Origin` is another site (a form or `fetch(…, {mode: 'no-cors'})` from any page the
 * operator visits can POST to a loopback address; the answer stays unreadable, the effect would not). A request
 * without `Host` (HTTP/1.0) or without `Origin` does not come from a browser and is left to the routes' own checks.
 */
export function checkHostAndOrigin(policy: HostPolicy, req: IncomingMessage): void {
  const host = req.headers.host;
  if (host !== undefined && !accepted(policy, hostOf(host)))
    throw new HttpError(
      421,
      'bad_host',
      `this collector does not answer to the name ${JSON.stringify(hostOf(host))}: reach it by an address, localhost, or a name given with --allowed-host`,
    );
  const origin = req.headers.origin;
  if (origin === undefined || !STATE_CHANGING.has(req.method ?? 'GET')) return;
  let site: URL | undefined;
  try {
    site = new URL(origin);
  } catch {
    site = undefined;
  }
  // Same origin is what the web UI sends (its scheme may differ behind a TLS-terminating ingress); a configured name
  // is a site the operator named. An address in Origin is not enough here: any site can be served from one.
  const ok = site && (site.host === host || policy.names.has(normalName(site.hostname)));
  if (!ok)
    throw new HttpError(
      403,
      'bad_origin',
      `a ${req.method} from the web page at ${JSON.stringify(origin)} is refused: only this collector's own pages may change anything`,
    );
}
