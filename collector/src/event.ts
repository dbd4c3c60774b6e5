import { CollectorError } from './errors.js';

/**
 * The fields of an audit event (schema v1, DESIGN §5) that the collector indexes and verifies.
 * The full event is stored verbatim (jsonb); everything else is carried through untouched.
 */
export interface AuditEvent {
  v: number;
  type: string;
  id: string;
  time: string;
  session: { id: string; seq: number };
  identity?: {
    namespace?: string;
    serviceAccount?: string;
    pod?: string;
    node?: string;
    /** OIDC subject (authentication mode oidc). */
    user?: string;
    groups?: string[];
    issuer?: string;
  };
  statement?: { text?: string; fingerprint?: string; kind?: string; tables?: string[] };
  decision?: { action?: string; rule?: string; reason?: string };
  policy?: { name?: string; hash?: string };
  prevHash?: string | null;
  hash: string;
  [k: string]: unknown;
}

/** The columns an event is indexed by (DESIGN §5: session, time, identity, table). */
export interface IndexedFields {
  namespace: string | null;
  policy: string | null;
  identity: string | null;
  kind: string | null;
  decision: string | null;
  tables: string[];
}

const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

/**
 * Checks the envelope the collector relies on (id, time, session, hash). Full schema validation is the
 * producer's contract; a collector must still refuse what it cannot index or chain.
 */
export function parseEvent(raw: unknown): AuditEvent {
  const fail = (why: string): never => {
    throw new CollectorError('COLLECTOR_BAD_EVENT', `invalid audit event: ${why}`);
  };
  if (!isObj(raw)) return fail('not a JSON object');
  if (typeof raw.id !== 'string' || raw.id.length === 0 || raw.id.length > 200) fail('id must be a non-empty string');
  if (typeof raw.type !== 'string' || raw.type.length === 0) fail('type must be a string');
  if (typeof raw.time !== 'string' || Number.isNaN(Date.parse(raw.time))) fail('time must be an RFC 3339 timestamp');
  const s = raw.session;
  if (!isObj(s) || typeof s.id !== 'string' || s.id.length === 0) fail('session.id must be a string');
  if (!isObj(s) || !Number.isSafeInteger(s.seq) || (s.seq as number) < 0)
    fail('session.seq must be a non-negative integer');
  if (typeof raw.hash !== 'string' || raw.hash.length === 0) fail('hash must be a string');
  if (raw.prevHash !== undefined && raw.prevHash !== null && typeof raw.prevHash !== 'string')
    fail('prevHash must be a string or null');
  return raw as AuditEvent;
}

/** The identity an event is filed under: the OIDC subject when there is one, else the workload's service account. */
export function identityOf(e: AuditEvent): string | null {
  const id = e.identity;
  if (!id) return null;
  if (typeof id.user === 'string' && id.user) return id.user;
  if (id.serviceAccount) return `system:serviceaccount:${id.namespace ?? ''}:${id.serviceAccount}`;
  return id.pod ?? null;
}

export function indexedFields(e: AuditEvent): IndexedFields {
  const tables = Array.isArray(e.statement?.tables)
    ? e.statement.tables.filter((t): t is string => typeof t === 'string')
    : [];
  return {
    namespace: e.identity?.namespace ?? null,
    policy: e.policy?.name ?? null,
    identity: identityOf(e),
    kind: e.statement?.kind ?? null,
    decision: e.decision?.action ?? null,
    tables,
  };
}
