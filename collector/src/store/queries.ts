import type { AuditEvent } from '../event.js';
import type { SignatureState } from '../signatures/checkpoint-judgement.js';
import { ISO } from './ingest-writer.js';
import type { SqlRunner } from './sql-client.js';

export interface SessionSummary {
  id: string;
  namespace: string | null;
  policy: string | null;
  identity: string | null;
  firstTime: string | null;
  lastTime: string | null;
  events: number;
  statements: number;
  denied: number;
  maxSeq: number;
  verifiedSeq: number;
  ended: boolean;
  chain: string;
  /** Signed checkpoints as judged at ingest (signatures/checkpoint-judgement.ts). */
  signature: SignatureState;
  signedSeq: number | null;
  /** Name of the key of the checkpoint that vouches for signedSeq. */
  signedBy: string | null;
  /** Events after signedSeq (all of them without a valid checkpoint), not counting the closing checkpoint. */
  unsignedEvents: number;
  /**
   * `ended` (a session.end arrived), `interrupted` (not ended, and its sidecar stopped naming the chain in its
   * audit.heads for three of its refresh periods: killed, or its trail stopped arriving), else `open`.
   */
  state: SessionState;
  /** When the session's sidecar last named its chain in audit.heads (its clock); null when it never did. */
  lastHeard: string | null;
}

export type SessionState = 'open' | 'ended' | 'interrupted';

export interface SessionFilter {
  namespace?: string;
  /** Only sessions in these namespaces (a reader's scope); absent: all. */
  namespaces?: string[];
  policy?: string;
  identity?: string;
  decision?: string;
  chain?: string;
  signature?: string;
  state?: string;
  from?: string;
  to?: string;
  limit: number;
  /** Opaque keyset cursor from a previous page's `next`. */
  cursor?: string;
}

export interface EventFilter {
  table?: string;
  kind?: string;
  decision?: string;
  type?: string;
  session?: string;
  identity?: string;
  namespace?: string;
  /** Only events in these namespaces (a reader's scope); absent: all. */
  namespaces?: string[];
  policy?: string;
  from?: string;
  to?: string;
  limit: number;
  cursor?: string;
}

export interface Page<T> {
  items: T[];
  next: string | null;
}

export interface Finding {
  kind: string;
  seqFrom: number;
  seqTo: number;
  detail: string;
  detectedAt: string;
  resolvedAt: string | null;
  /** Closed by hand (POST /api/v1/findings/{id}/close): who, when and why; null while it is not. */
  closed: FindingClosure | null;
}

export interface FindingClosure {
  at: string;
  /** The approvers entry's name. */
  by: string;
  reason: string;
  /** The verified OIDC token's (or web sign-in's) issuer and `sub`, when the approver came that way. */
  oidc?: { issuer: string; subject: string };
}

/** The closure columns of `audit_chain_findings` (alias `f`), read back by closureOf. */
export const CLOSURE_COLUMNS = `CASE WHEN f.closed_at IS NULL THEN NULL ELSE ${ISO('f.closed_at')} END AS "closedAt",
  f.closed_by AS "closedBy", f.closed_reason AS "closedReason", f.closed_oidc_issuer AS "closedIssuer",
  f.closed_oidc_subject AS "closedSubject"`;

export interface ClosureColumns {
  closedAt: string | null;
  closedBy: string | null;
  closedReason: string | null;
  closedIssuer: string | null;
  closedSubject: string | null;
}

/** A row selected with CLOSURE_COLUMNS, with those folded into `closed`. */
export function closureOf<T extends ClosureColumns>(row: T): Omit<T, keyof ClosureColumns> & Pick<Finding, 'closed'> {
  const { closedAt, closedBy, closedReason, closedIssuer, closedSubject, ...rest } = row;
  const closed: FindingClosure | null =
    closedAt === null
      ? null
      : {
          at: closedAt,
          by: closedBy ?? '',
          reason: closedReason ?? '',
          ...(closedIssuer !== null && closedSubject !== null
            ? { oidc: { issuer: closedIssuer, subject: closedSubject } }
            : {}),
        };
  return { ...rest, closed };
}

/** A session's state (SessionSummary.state), from its row and its sidecar's latest heads (`hd`, SESSION_FROM). */
const SESSION_STATE = `CASE WHEN end_seq IS NOT NULL THEN 'ended'
  WHEN hd.seen_at < now() - make_interval(secs => 3 * hd.refresh_ms / 1000.0) THEN 'interrupted' ELSE 'open' END`;

/** Sessions with what their own sidecar's heads last said of them (same instance and namespace: chain-heads.ts). */
const SESSION_FROM = `audit_sessions s LEFT JOIN LATERAL (
  SELECT h.seen_at, h.refresh_ms FROM audit_chain_heads h
  WHERE h.session_id = s.session_id AND h.instance = s.instance AND h.namespace = coalesce(s.namespace, '')
) hd ON true`;

const SESSION_COLUMNS = `session_id AS id, namespace, policy, identity, ${ISO('first_time')} AS "firstTime", ${ISO('last_time')} AS "lastTime",
  events::int, statements::int, denied::int, max_seq::int AS "maxSeq", verified_seq::int AS "verifiedSeq", end_seq IS NOT NULL AS ended, status AS chain,
  signature, signed_seq::int AS "signedSeq", signed_key AS "signedBy",
  (CASE WHEN signed_seq IS NULL THEN greatest(max_seq, 0) ELSE greatest(max_seq - signed_seq - 1, 0) END)::int AS "unsignedEvents",
  ${SESSION_STATE} AS state, CASE WHEN hd.seen_at IS NULL THEN NULL ELSE ${ISO('hd.seen_at')} END AS "lastHeard"`;

const encodeCursor = (parts: unknown[]) => Buffer.from(JSON.stringify(parts)).toString('base64url');
function decodeCursor(c: string): [string, string] {
  let parts: unknown;
  try {
    parts = JSON.parse(Buffer.from(c, 'base64url').toString('utf8'));
  } catch {
    throw new Error('bad cursor');
  }
  if (!Array.isArray(parts) || parts.length !== 2 || !parts.every((p) => typeof p === 'string'))
    throw new Error('bad cursor');
  return parts as [string, string];
}

/** Builds `AND`-joined conditions with positional parameters; values never reach the SQL text. */
class Where {
  readonly params: unknown[] = [];
  private readonly parts: string[] = [];
  add(sql: (p: string) => string, value: unknown): void {
    if (value === undefined || value === '') return;
    this.params.push(value);
    this.parts.push(sql(`$${this.params.length}`));
  }
  /** A condition over a list; an empty list is a condition too (it matches nothing). */
  addList(sql: (p: string) => string, values: readonly string[] | undefined): void {
    if (values === undefined) return;
    this.params.push(values);
    this.parts.push(sql(`$${this.params.length}`));
  }
  /** A condition with no value. */
  raw(sql: string): void {
    this.parts.push(sql);
  }
  /** A condition over two values (keyset pagination). */
  add2(sql: (a: string, b: string) => string, a: unknown, b: unknown): void {
    this.params.push(a, b);
    this.parts.push(sql(`$${this.params.length - 1}`, `$${this.params.length}`));
  }
  get sql(): string {
    return this.parts.length > 0 ? `WHERE ${this.parts.join(' AND ')}` : '';
  }
}

/** Sessions, newest first, keyset-paged on (first_time, session_id). */
export async function listSessions(db: SqlRunner, f: SessionFilter): Promise<Page<SessionSummary>> {
  const w = new Where();
  w.add((p) => `namespace = ${p}`, f.namespace);
  w.addList((p) => `namespace = ANY(${p}::text[])`, f.namespaces);
  w.add((p) => `policy = ${p}`, f.policy);
  w.add((p) => `identity = ${p}`, f.identity);
  w.add((p) => `status = ${p}`, f.chain);
  w.add((p) => `signature = ${p}`, f.signature);
  w.add((p) => `${SESSION_STATE} = ${p}`, f.state);
  w.add((p) => `last_time >= ${p}::timestamptz`, f.from);
  w.add((p) => `first_time < ${p}::timestamptz`, f.to);
  w.add(
    (p) => `EXISTS (SELECT 1 FROM audit_events e WHERE e.session_id = s.session_id AND e.decision = ${p})`,
    f.decision,
  );
  if (f.cursor) {
    const [t, id] = decodeCursor(f.cursor);
    w.add2((a, b) => `(first_time, session_id) < (${a}::timestamptz, ${b})`, t, id);
  }
  const rows = await db.query<SessionSummary>(
    `SELECT ${SESSION_COLUMNS} FROM ${SESSION_FROM} ${w.sql} ORDER BY first_time DESC, session_id DESC LIMIT ${f.limit + 1}`,
    w.params,
  );
  const items = rows.slice(0, f.limit);
  const last = items[items.length - 1];
  return { items, next: rows.length > f.limit && last ? encodeCursor([last.firstTime, last.id]) : null };
}

/** One session's summary, without its events: what deciding about the session needs. */
/** The `control.applied` events of one control action (its id) recorded since `since`, oldest first. */
export async function getControlApplications(db: SqlRunner, id: string, since: Date): Promise<AuditEvent[]> {
  const rows = await db.query<{ event: string }>(
    `SELECT event FROM audit_events
     WHERE type = 'control.applied' AND time >= $2 AND (event::jsonb -> 'control' ->> 'id') = $1
     ORDER BY time, id`,
    [id, since.toISOString()],
  );
  return rows.map((r) => JSON.parse(r.event) as AuditEvent);
}

export async function getSessionSummary(db: SqlRunner, id: string): Promise<SessionSummary | null> {
  const [session] = await db.query<SessionSummary>(
    `SELECT ${SESSION_COLUMNS} FROM ${SESSION_FROM} WHERE s.session_id = $1`,
    [id],
  );
  return session ?? null;
}

export async function getSession(
  db: SqlRunner,
  id: string,
): Promise<{ session: SessionSummary; events: AuditEvent[]; findings: Finding[] } | null> {
  const session = await getSessionSummary(db, id);
  if (!session) return null;
  const events = await db.query<{ event: string }>(
    'SELECT event FROM audit_events WHERE session_id = $1 ORDER BY seq, time',
    [id],
  );
  const findings = await db.query<Omit<Finding, 'closed'> & ClosureColumns>(
    `SELECT f.kind, f.seq_from::int AS "seqFrom", f.seq_to::int AS "seqTo", f.detail, ${ISO('f.detected_at')} AS "detectedAt",
            CASE WHEN f.resolved_at IS NULL THEN NULL ELSE ${ISO('f.resolved_at')} END AS "resolvedAt", ${CLOSURE_COLUMNS}
     FROM audit_chain_findings f WHERE f.session_id = $1 ORDER BY f.id`,
    [id],
  );
  return {
    session,
    events: events.map((r) => JSON.parse(r.event) as AuditEvent),
    findings: findings.map(closureOf),
  };
}

/** Event search, newest first, keyset-paged on (time, id). */
export async function searchEvents(db: SqlRunner, f: EventFilter): Promise<Page<AuditEvent>> {
  const w = new Where();
  w.add((p) => `tables @> ARRAY[${p}::text]`, f.table);
  w.add((p) => `kind = ${p}`, f.kind);
  w.add((p) => `decision = ${p}`, f.decision);
  w.add((p) => `type = ${p}`, f.type);
  w.add((p) => `session_id = ${p}`, f.session);
  w.add((p) => `identity = ${p}`, f.identity);
  w.add((p) => `namespace = ${p}`, f.namespace);
  w.addList((p) => `namespace = ANY(${p}::text[])`, f.namespaces);
  w.add((p) => `policy = ${p}`, f.policy);
  w.add((p) => `time >= ${p}::timestamptz`, f.from);
  w.add((p) => `time < ${p}::timestamptz`, f.to);
  if (f.cursor) {
    const [t, id] = decodeCursor(f.cursor);
    w.add2((a, b) => `(time, id) < (${a}::timestamptz, ${b})`, t, id);
  }
  const rows = await db.query<{ event: string; id: string; t: string }>(
    `SELECT event, id, ${ISO('time')} AS t FROM audit_events ${w.sql} ORDER BY time DESC, id DESC LIMIT ${f.limit + 1}`,
    w.params,
  );
  const items = rows.slice(0, f.limit);
  const last = rows[f.limit - 1];
  return {
    items: items.map((r) => JSON.parse(r.event) as AuditEvent),
    next: rows.length > f.limit && last ? encodeCursor([last.t, last.id]) : null,
  };
}

/** Events stored after an ingest position, in ingest order: what an exporter has not delivered yet. */
/**
 * The next `limit` stored events after ingest position `position`, each with `ageMs`: how long ago it was stored, by
 * the store's clock (an age, not a time, so that the collector's clock need not agree with the database's).
 */
export async function eventsAfter(
  db: SqlRunner,
  position: number,
  limit: number,
): Promise<{ position: number; ageMs: number; event: AuditEvent }[]> {
  const rows = await db.query<{ p: string; age: string; event: string }>(
    `SELECT ingest_seq::text AS p, (extract(epoch FROM now() - received_at) * 1000)::bigint::text AS age, event
       FROM audit_events WHERE ingest_seq > $1 ORDER BY ingest_seq LIMIT $2`,
    [position, limit],
  );
  return rows.map((r) => ({
    position: Number(r.p),
    ageMs: Math.max(0, Number(r.age)),
    event: JSON.parse(r.event) as AuditEvent,
  }));
}

export async function getCursor(db: SqlRunner, name: string): Promise<number | null> {
  const [row] = await db.query<{ p: string }>('SELECT position::text AS p FROM collector_cursors WHERE name = $1', [
    name,
  ]);
  return row ? Number(row.p) : null;
}

export async function setCursor(db: SqlRunner, name: string, position: number): Promise<void> {
  await db.query(
    `INSERT INTO collector_cursors (name, position) VALUES ($1, $2)
     ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()`,
    [name, position],
  );
}

/**
 * Saves an export cursor that only ever moves forward, and returns it as stored: a replica that lost its export
 * lease while delivering saves its batch late, after the replica that took over may have saved more.
 */
export async function advanceCursor(db: SqlRunner, name: string, position: number): Promise<number> {
  const [row] = await db.query<{ p: string }>(
    `INSERT INTO collector_cursors (name, position) VALUES ($1, $2)
     ON CONFLICT (name) DO UPDATE SET position = GREATEST(collector_cursors.position, EXCLUDED.position), updated_at = now()
     RETURNING position::text AS p`,
    [name, position],
  );
  return Number(row.p);
}

/** The newest ingest position (0 when empty): a new exporter configured with `from: now` starts here. */
export async function lastIngestPosition(db: SqlRunner): Promise<number> {
  const [row] = await db.query<{ p: string | null }>('SELECT max(ingest_seq)::text AS p FROM audit_events');
  return row?.p ? Number(row.p) : 0;
}

export const FINDING_STATES = ['open', 'resolved', 'closed', 'all'] as const;

export interface FindingFilter {
  /** `open` (default): neither resolved nor closed; `resolved`: settled by the events; `closed`: by hand; `all`. */
  state?: (typeof FINDING_STATES)[number];
  kind?: string;
  session?: string;
  namespace?: string;
  /** Only findings of sessions in these namespaces (a reader's scope); absent: all. */
  namespaces?: string[];
  limit: number;
  cursor?: string;
}

export interface FindingRow extends Finding {
  id: number;
  sessionId: string;
  /** The session's namespace; for a chain deleted whole, that of the sidecar whose heads named it. */
  namespace: string | null;
  /** False when the store holds no record of the session (a chain deleted whole, or never received). */
  sessionKnown: boolean;
}

/** A finding's namespace: its session's, else (a chain deleted whole) that of the sidecar whose heads named it. */
const FINDING_NAMESPACE =
  "coalesce(s.namespace, (SELECT min(nullif(h.namespace, '')) FROM audit_chain_heads h WHERE h.session_id = f.session_id))";

/** Findings (`f`) as FindingRow, before closureOf; callers add the WHERE. */
export const FINDING_ROW_SELECT = `SELECT f.id::int, f.session_id AS "sessionId", ${FINDING_NAMESPACE} AS namespace,
  s.session_id IS NOT NULL AS "sessionKnown", f.kind, f.seq_from::int AS "seqFrom", f.seq_to::int AS "seqTo", f.detail,
  ${ISO('f.detected_at')} AS "detectedAt",
  CASE WHEN f.resolved_at IS NULL THEN NULL ELSE ${ISO('f.resolved_at')} END AS "resolvedAt", ${CLOSURE_COLUMNS}
  FROM audit_chain_findings f LEFT JOIN audit_sessions s ON s.session_id = f.session_id`;

/**
 * Chain findings across sessions, newest first, keyset-paged on id: what an operator looks at to see everything
 * wrong with the trail at once, including chains deleted whole, which have no session to open.
 */
export async function listFindings(db: SqlRunner, f: FindingFilter): Promise<Page<FindingRow>> {
  const w = new Where();
  const state = f.state ?? 'open';
  if (state === 'open') w.raw('f.resolved_at IS NULL AND f.closed_at IS NULL');
  else if (state === 'resolved') w.raw('f.resolved_at IS NOT NULL');
  else if (state === 'closed') w.raw('f.closed_at IS NOT NULL');
  w.add((p) => `f.kind = ${p}`, f.kind);
  w.add((p) => `f.session_id = ${p}`, f.session);
  const ns = FINDING_NAMESPACE;
  w.add((p) => `${ns} = ${p}`, f.namespace);
  w.addList((p) => `${ns} = ANY(${p}::text[])`, f.namespaces);
  if (f.cursor) {
    const [, id] = decodeCursor(f.cursor);
    w.add((p) => `f.id < ${p}::bigint`, id);
  }
  const rows = await db.query<Omit<FindingRow, 'closed'> & ClosureColumns>(
    `${FINDING_ROW_SELECT} ${w.sql} ORDER BY f.id DESC LIMIT ${f.limit + 1}`,
    w.params,
  );
  const items = rows.slice(0, f.limit).map(closureOf);
  const last = items[items.length - 1];
  return { items, next: rows.length > f.limit && last ? encodeCursor(['finding', String(last.id)]) : null };
}
