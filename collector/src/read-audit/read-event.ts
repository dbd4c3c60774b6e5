import type { AuditRead, AuditSource, UnsealedAuditEvent } from '@pgwarden/policy';

/**
 * Query keys whose values may be credentials: the API takes none in the URL, but a client may still send one
 * (RFC 6750 §2.3's `access_token`), and the trail must not keep what it was handed by mistake.
 */
const SECRET_KEY = /pass|token|secret|key|auth/i;

/** The query parameters to record: the first value of each (what the routes read), secret-looking ones redacted. */
export function readQuery(params: URLSearchParams): Record<string, string> | undefined {
  const out: Record<string, string> = {};
  let any = false;
  for (const [k, v] of params) {
    if (Object.hasOwn(out, k)) continue;
    out[k] = SECRET_KEY.test(k) ? '***' : v;
    any = true;
  }
  return any ? out : undefined;
}

/** The session id of one collector process's chain, as the sidecar's is `sidecar-<instance>`. */
export const collectorSession = (instance: string) => `collector-${instance}`;

/** An `audit.read` event before it is sealed into the collector's chain. */
export function readEvent(
  read: AuditRead,
  at: { time: string; session: string; source: AuditSource },
): UnsealedAuditEvent {
  return {
    v: 1,
    type: 'audit.read',
    time: at.time,
    session: { id: at.session },
    source: at.source,
    // No workload identity and no groups: the collector acts for nobody; who read is `read.reader`.
    identity: { groups: [] },
    read: {
      reader: read.reader,
      route: read.route,
      ...(read.query ? { query: read.query } : {}),
      ...(read.namespaces ? { namespaces: [...read.namespaces] } : {}),
      ...(read.oidc ? { oidc: { issuer: read.oidc.issuer, subject: read.oidc.subject } } : {}),
      status: read.status,
      ...(read.items !== undefined ? { items: read.items } : {}),
      ...(read.reason !== undefined ? { reason: read.reason } : {}),
      ...(read.repeated ? { repeated: read.repeated } : {}),
    },
  };
}
