import { foreignEvents, secondEventFinding } from '../chain/chain-claims.js';
import { headsOf, instanceOf } from '../chain/chain-heads.js';
import {
  type AdvanceResult,
  advance,
  type ChainCursor,
  type ChainEvent,
  type ChainFinding,
  type ChainRules,
  startCursor,
} from '../chain/verify-chain.js';
import { type AuditEvent, indexedFields } from '../event.js';
import { type AuditKeyring, NO_KEYS } from '../signatures/audit-keys.js';
import {
  type CheckpointJudge,
  judgeCheckpoint,
  namespaceOf,
  type SignatureState,
  signatureState,
} from '../signatures/checkpoint-judgement.js';
import { CopyPayload, copyField } from './copy-in.js';
import { CopyRows } from './copy-rows.js';
import { declaredGaps } from './declared-gaps.js';
import type { SqlRunner } from './sql-client.js';

/** The row of `audit_sessions` the writer keeps up to date (chain cursor + aggregates). */
interface SessionRow {
  session_id: string;
  namespace: string | null;
  policy: string | null;
  identity: string | null;
  first_time: string | null;
  last_time: string | null;
  events: number;
  statements: number;
  denied: number;
  max_seq: number;
  verified_seq: number;
  verified_hash: string | null;
  end_seq: number | null;
  status: string;
  /** Signed checkpoints (signatures/checkpoint-judgement.ts): the state and how far valid ones vouch. */
  signature: SignatureState;
  signed_seq: number | null;
  signed_key: string | null;
  /** `source.instance` of the session's first event that has one: the sidecar whose audit.heads count for it. */
  instance: string | null;
}

export interface WriteResult {
  /** Events stored by this call (duplicates of already stored ids excluded), in input order. */
  inserted: AuditEvent[];
  duplicates: number;
  findings: ChainFinding[];
  /** Gap findings healed because the missing events finally arrived. */
  healed: number;
  /** Gap findings resolved for the events that arrived, each followed by an open one for those still missing. */
  narrowed: number;
}

const EVENT_COLUMNS =
  'id, time, session_id, seq, type, namespace, policy, identity, kind, decision, tables, prev_hash, hash, event';
const PARAMS_PER_ROW = 14;
/** Rows per INSERT: 250 × 14 parameters stays far below the protocol's 65,535-parameter limit. */
const ROWS_PER_INSERT = 250;

/** A PostgreSQL array literal of text (https://www.postgresql.org/docs/current/arrays.html#ARRAYS-IO). */
function textArrayLiteral(items: readonly string[]): string {
  if (items.length === 1 && !/["\\]/.test(items[0])) return `{"${items[0]}"}`;
  return `{${items.map((x) => `"${x.replace(/["\\]/g, (c) => `\\${c}`)}"`).join(',')}}`;
}

/**
 * Multi-row INSERT with every value as its own text parameter: PostgreSQL copies text parameters without
 * parsing them, which is what makes this several times cheaper than handing it one JSON document to unpack.
 */
function insertStatement(rows: number): string {
  const tuples: string[] = [];
  for (let r = 0; r < rows; r++) {
    const b = r * PARAMS_PER_ROW;
    const p: string[] = [];
    for (let k = 1; k <= PARAMS_PER_ROW; k++) p.push(`$${b + k}`);
    tuples.push(`(${p.join(',')})`);
  }
  return `INSERT INTO audit_events (${EVENT_COLUMNS}) VALUES ${tuples.join(',')} ON CONFLICT (session_id, seq, time) DO NOTHING RETURNING id`;
}

const statementCache = new Map<number, string>();
const insertSql = (rows: number) => {
  let sql = statementCache.get(rows);
  if (!sql) {
    sql = insertStatement(rows);
    if (statementCache.size < 64) statementCache.set(rows, sql);
  }
  return sql;
};

/** An event with the JSON text it arrived as (stored verbatim). */
export interface IngestItem {
  event: AuditEvent;
  raw: string;
  /**
   * The UTF-8 bytes of `raw`, when `event` was parsed from exactly them: the store then hashes and copies these
   * bytes without encoding the text again (see chain/canonical-utf8.ts for what that guarantee buys).
   */
  utf8?: Uint8Array;
  /** The event's content hash, when computed ahead (AuditStore.prehash); the chain check uses it as is. */
  hash?: string;
}

const UPSERT_SESSIONS = `
INSERT INTO audit_sessions AS s (session_id, namespace, policy, identity, first_time, last_time, events, statements, denied,
  max_seq, verified_seq, verified_hash, end_seq, status, signature, signed_seq, signed_key, instance, updated_at)
SELECT r.session_id, r.namespace, r.policy, r.identity, r.first_time, r.last_time, r.events, r.statements, r.denied,
  r.max_seq, r.verified_seq, r.verified_hash, r.end_seq, r.status, r.signature, r.signed_seq, r.signed_key, r.instance, now()
FROM jsonb_to_recordset($1::jsonb) AS r(session_id text, namespace text, policy text, identity text, first_time timestamptz,
  last_time timestamptz, events bigint, statements bigint, denied bigint, max_seq bigint, verified_seq bigint,
  verified_hash text, end_seq bigint, status text, signature text, signed_seq bigint, signed_key text, instance text)
ON CONFLICT (session_id) DO UPDATE SET namespace = EXCLUDED.namespace, policy = EXCLUDED.policy, identity = EXCLUDED.identity,
  first_time = EXCLUDED.first_time, last_time = EXCLUDED.last_time, events = EXCLUDED.events, statements = EXCLUDED.statements,
  denied = EXCLUDED.denied, max_seq = EXCLUDED.max_seq, verified_seq = EXCLUDED.verified_seq,
  verified_hash = EXCLUDED.verified_hash, end_seq = EXCLUDED.end_seq, status = EXCLUDED.status,
  signature = EXCLUDED.signature, signed_seq = EXCLUDED.signed_seq, signed_key = EXCLUDED.signed_key,
  instance = EXCLUDED.instance, updated_at = now()`;

/**
 * An open gap finding another one starting at the same seq reaches past covers both (see insertFindings). One closed
 * by hand stays as it was closed.
 */
const WIDEN_OPEN_GAP = `DO UPDATE SET seq_to = EXCLUDED.seq_to, detail = f.detail || '; ' || EXCLUDED.detail
  WHERE f.kind = 'audit.gap' AND f.resolved_at IS NULL AND f.closed_at IS NULL AND EXCLUDED.seq_to > f.seq_to`;

/**
 * Upserts the sessions and settles their open `audit.gap` findings against the verified points just written, in
 * one statement (no round trip more per batch; the lookup is an index probe per session of the batch). Whatever
 * recorded the gap (the sweep's hole or tail, a sidecar's declaration), its events may come later: redelivery, another
 * stream, a spool drained after a restart, a declaration ingested before the events it names. A finding the chain has
 * verified through is resolved; one verified partway is resolved and followed by an open finding for the rest, with
 * its detail (those of all it continues, when several meet at one seq), so the history (what was reported, when it
 * healed) stays readable. Runs under the ingest lock,
 * so replicas sharing the store and a restarted collector see the same findings and verified points.
 */
const UPSERT_SESSIONS_SETTLING_GAPS = `
WITH up AS (${UPSERT_SESSIONS} RETURNING s.session_id, s.verified_seq),
settled AS (
  UPDATE audit_chain_findings f SET resolved_at = now() FROM up
  WHERE f.session_id = up.session_id AND f.kind = 'audit.gap' AND f.resolved_at IS NULL AND f.closed_at IS NULL
    AND f.seq_from <= up.verified_seq
  RETURNING f.session_id, f.seq_to, f.detail, up.verified_seq),
rest AS (
  INSERT INTO audit_chain_findings AS f (session_id, kind, seq_from, seq_to, detail)
  SELECT session_id, 'audit.gap', verified_seq + 1, max(seq_to), string_agg(DISTINCT detail, '; ')
  FROM settled WHERE seq_to > verified_seq GROUP BY session_id, verified_seq
  ON CONFLICT (session_id, kind, seq_from) ${WIDEN_OPEN_GAP}
  RETURNING 1)
SELECT (SELECT count(*) FROM settled WHERE seq_to <= verified_seq)::int AS healed,
       (SELECT count(*) FROM settled WHERE seq_to > verified_seq)::int AS narrowed`;

/**
 * Keeps, per session and per sidecar instance, the highest head an audit.heads event recorded, and when the sidecar
 * last named the chain at all (a refresh names the same head again).
 */
const UPSERT_HEADS = `
INSERT INTO audit_chain_heads AS h (session_id, instance, seq, hash, event_id, namespace, seen_at, refresh_ms)
SELECT r.session_id, r.instance, r.seq, r.hash, r.event_id, r.namespace, r.seen_at, r.refresh_ms
FROM jsonb_to_recordset($1::jsonb) AS r(session_id text, instance text, seq bigint, hash text, event_id text, namespace text,
  seen_at timestamptz, refresh_ms integer)
ON CONFLICT (session_id, instance, namespace) DO UPDATE SET
  seq = greatest(h.seq, EXCLUDED.seq),
  hash = CASE WHEN EXCLUDED.seq > h.seq THEN EXCLUDED.hash ELSE h.hash END,
  event_id = CASE WHEN EXCLUDED.seq > h.seq THEN EXCLUDED.event_id ELSE h.event_id END,
  received_at = CASE WHEN EXCLUDED.seq > h.seq THEN now() ELSE h.received_at END,
  seen_at = greatest(h.seen_at, EXCLUDED.seen_at),
  refresh_ms = coalesce(EXCLUDED.refresh_ms, h.refresh_ms)`;

/** Renders a timestamptz column as RFC 3339 UTC with microseconds, independent of the session's DateStyle/TimeZone. */
export const ISO = (col: string) => `to_char(${col} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

export const INGEST_LOCK_KEY = 7_245_002; // serialises ingest commits across collectors so ingest_seq order = commit order

const COPY_EVENTS = `COPY audit_events (${EVENT_COLUMNS}) FROM STDIN`;
const COPY_EVENTS_BINARY = `${COPY_EVENTS} (FORMAT binary)`;

/**
 * The fast path: one COPY of the whole batch (no per-row conflict check, no RETURNING, one protocol message).
 * COPY has no ON CONFLICT, so an event already stored fails the whole statement with unique_violation (23505)
 * and the caller redoes the batch with `insertEvents`. Repeats within the batch are dropped first (CopyRows).
 * Binary format unless `binary` is false or a row has a value only PostgreSQL's text input may judge. `built`
 * holds the rows when they were built ahead from these items.
 */
async function copyEvents(
  tx: SqlRunner & Required<Pick<SqlRunner, 'copyIn'>>,
  items: readonly IngestItem[],
  binary: boolean,
  built: CopyRows | undefined,
): Promise<Set<string>> {
  const { rows, binary: bin } =
    (binary && built?.claim(items.length)) || CopyRows.of(items, binary).claim(items.length)!;
  if (bin) {
    await tx.copyIn(COPY_EVENTS_BINARY, bin);
    return rows.ids;
  }
  const payload = new CopyPayload(rows.size);
  for (const it of rows.rows) {
    writeRowPrefix(payload, it.event);
    // `raw` is read only without bytes: an item may decode it on demand.
    if (it.utf8) payload.bytes(it.utf8);
    else payload.text(copyField(it.raw));
    payload.endRow();
  }
  await tx.copyIn(COPY_EVENTS, payload);
  return rows.ids;
}

/** The columns before `event` of one COPY row, each followed by its tab. */
function writeRowPrefix(payload: CopyPayload, e: AuditEvent): void {
  const f = indexedFields(e);
  payload.field(e.id);
  payload.field(e.time);
  payload.field(e.session.id);
  payload.field(String(e.session.seq));
  payload.field(e.type);
  payload.field(f.namespace);
  payload.field(f.policy);
  payload.field(f.identity);
  payload.field(f.kind);
  payload.field(f.decision);
  payload.field(textArrayLiteral(f.tables));
  payload.field(e.prevHash ?? null);
  payload.field(e.hash);
}

/** The idempotent path: multi-row INSERT … ON CONFLICT DO NOTHING RETURNING id. Returns the ids stored now. */
async function insertEvents(tx: SqlRunner, items: readonly IngestItem[]): Promise<Set<string>> {
  const ids = new Set<string>();
  for (let i = 0; i < items.length; i += ROWS_PER_INSERT) {
    const chunk = items.slice(i, i + ROWS_PER_INSERT);
    const params: unknown[] = [];
    for (const { event: e, raw } of chunk) {
      const f = indexedFields(e);
      params.push(
        e.id,
        e.time,
        e.session.id,
        e.session.seq,
        e.type,
        f.namespace,
        f.policy,
        f.identity,
        f.kind,
        f.decision,
        textArrayLiteral(f.tables),
        e.prevHash ?? null,
        e.hash,
        raw,
      );
    }
    // Full chunks reuse one prepared statement: parsing a 3,500-parameter INSERT is a large part of its cost.
    const name = chunk.length === ROWS_PER_INSERT ? `pgwarden_ingest_${ROWS_PER_INSERT}` : undefined;
    for (const r of await tx.query<{ id: string }>(insertSql(chunk.length), params, name)) ids.add(r.id);
  }
  return ids;
}

export interface WriteOptions {
  /** Use COPY (fails with 23505 if any event is already stored); ignored where the runner has no copyIn. */
  copy?: boolean;
  /** COPY in binary format where every row allows it (default true); false forces the text format. */
  binary?: boolean;
  /** The COPY rows of exactly these items, built ahead (AuditStore.copyRows); used by one COPY at most. */
  rows?: CopyRows;
  /** The transaction already holds INGEST_LOCK_KEY (taken with its BEGIN). */
  locked?: boolean;
  /** The keys checkpoints are judged against (default none: they are counted as unverified). */
  keyring?: AuditKeyring;
}

/** True for the error `copy: true` raises when the batch holds an already stored event. */
export const isDuplicateError = (err: unknown) => (err as { code?: unknown }).code === '23505';

/**
 * Stores a batch in one transaction: the events (idempotent on id), then each touched session's chain cursor and
 * aggregates, then any findings. The caller acknowledges the source messages only after this resolves.
 */
export async function writeBatch(
  tx: SqlRunner,
  items: readonly IngestItem[],
  baseRules: ChainRules,
  opts: WriteOptions = {},
): Promise<WriteResult> {
  if (!opts.locked) await tx.query('SELECT pg_advisory_xact_lock($1)', [INGEST_LOCK_KEY]);
  const events = items.map((i) => i.event);
  const ids =
    opts.copy && tx.copyIn
      ? await copyEvents(tx as SqlRunner & Required<Pick<SqlRunner, 'copyIn'>>, items, opts.binary ?? true, opts.rows)
      : await insertEvents(tx, items);
  const rules = withKnownHashes(baseRules, items);
  const inserted: AuditEvent[] = [];
  const repeated: AuditEvent[] = [];
  for (const e of events) {
    // A batch may itself contain the same event twice (redelivery): keep the first.
    if (ids.delete(e.id)) inserted.push(e);
    else repeated.push(e);
  }
  const conflicts = repeated.length > 0 ? await conflictingRepeats(tx, repeated, rules) : [];
  // Unattributed declarations are no range of any chain: the chain verified at ingest neither drops nor settles them.
  const { ranges: declared, unattributed } = declaredGaps(inserted);
  const result: WriteResult = {
    inserted,
    duplicates: events.length - inserted.length,
    findings: [...declared, ...unattributed, ...conflicts],
    healed: 0,
    narrowed: 0,
  };
  if (inserted.length === 0) {
    if (conflicts.length > 0) await markTampered(tx, conflicts);
    return result;
  }

  const bySession = new Map<string, AuditEvent[]>();
  for (const e of inserted) {
    const list = bySession.get(e.session.id);
    if (list) list.push(e);
    else bySession.set(e.session.id, [e]);
  }
  const existing = await tx.query<SessionRow>(
    `SELECT session_id, namespace, policy, identity, ${ISO('first_time')} AS first_time, ${ISO('last_time')} AS last_time, events::int, statements::int,
            denied::int, max_seq::int, verified_seq::int, verified_hash, end_seq::int, status,
            signature, signed_seq::int, signed_key, instance
     FROM audit_sessions WHERE session_id = ANY(SELECT jsonb_array_elements_text($1::jsonb)) FOR UPDATE`,
    [JSON.stringify([...bySession.keys()])],
  );
  const rowsById = new Map(existing.map((r) => [r.session_id, r]));
  const updated: SessionRow[] = [];
  for (const [sid, evs] of bySession) {
    const row = rowsById.get(sid) ?? emptyRow(sid, rules);
    const cursor: ChainCursor =
      row.verified_seq >= rules.firstSeq
        ? { verifiedSeq: row.verified_seq, verifiedHash: row.verified_hash }
        : startCursor(rules);
    const namespace = row.events > 0 ? row.namespace : filedNamespace(evs);
    const judge = judgeFor(namespace, opts.keyring ?? NO_KEYS);
    // Checked before the chain walk, which passes over positions it has verified already.
    const claims = [
      ...foreignEvents(namespace, evs),
      ...evs
        .filter((e) => e.session.seq <= cursor.verifiedSeq)
        .map((e) => secondEventFinding(e, 'that seq was verified before it came')),
      ...conflicts.filter((f) => f.sessionId === sid),
    ];
    let step: AdvanceResult = advance(cursor, evs, rules, judge);
    if (step.holeAt !== undefined || row.max_seq > cursor.verifiedSeq) {
      // Out of order: events beyond the verified point are already stored (earlier batches); walk them too.
      const stored = await tx.query<{ event: string }>(
        'SELECT event FROM audit_events WHERE session_id = $1 AND seq > $2 ORDER BY seq',
        [sid, cursor.verifiedSeq],
      );
      step = advance(
        cursor,
        stored.map((r) => JSON.parse(r.event) as AuditEvent),
        rules,
        judge,
      );
    }
    const findings = [...claims, ...step.findings];
    // The batch's conflicts are in result.findings already; here they only mark their session.
    result.findings.push(...findings.filter((f) => !conflicts.includes(f)));
    updated.push(aggregate(row, namespace, evs, { ...step, findings }, rules));
  }
  const [settled] = await tx.query<{ healed: number; narrowed: number }>(UPSERT_SESSIONS_SETTLING_GAPS, [
    JSON.stringify(updated),
  ]);
  result.healed += settled?.healed ?? 0;
  result.narrowed += settled?.narrowed ?? 0;
  const declarations = new Set<ChainFinding>(unattributed);
  if (declared.length > 0) {
    const rest = await unverifiedDeclarations(tx, declared);
    for (const f of rest) declarations.add(f);
    result.findings = [...rest, ...result.findings.filter((f) => !declared.includes(f))];
  }
  const untouched = conflicts.filter((f) => !bySession.has(f.sessionId));
  if (untouched.length > 0) await markTampered(tx, untouched);
  await recordHeads(tx, inserted);
  if (result.findings.length > 0) {
    const fresh = new Set(await insertFindings(tx, result.findings, true));
    // A declaration already on file (a range declared before, a restarted sidecar declaring the same loss again) is
    // that finding, not a new one: reported once, like the sweep's.
    result.findings = result.findings.filter((f) => !declarations.has(f) || fresh.has(f)).map(withoutDeclaration);
  }
  return result;
}

/** A finding as reported (live stream, audit.finding, logs): the declaration's fingerprint is the store's business. */
function withoutDeclaration(f: ChainFinding & { declaration?: string }): ChainFinding {
  if (f.declaration === undefined) return f;
  const { declaration: _, ...rest } = f;
  return rest;
}

/**
 * The findings the store lacks for the `audit.gap` events it holds, created now: gap events stored before declared
 * gaps became findings, or before they were keyed as they are. Declarations keep their keys, so running it again
 * (every start-up does) creates nothing twice. Unattributed findings filed before they carried their declaration get
 * it first, so that a later re-declaration of the same loss finds them.
 */
export async function fileStoredDeclarations(tx: SqlRunner): Promise<ChainFinding[]> {
  const rows = await tx.query<{ event: string }>(
    `SELECT event FROM audit_events WHERE type = 'audit.gap' ORDER BY ingest_seq`,
  );
  if (rows.length === 0) return [];
  const { ranges, unattributed } = declaredGaps(rows.map((r) => JSON.parse(r.event) as AuditEvent));
  const unkeyed = await tx.query(
    `SELECT 1 FROM audit_chain_findings WHERE kind = 'audit.gap.unattributed' AND declaration IS NULL LIMIT 1`,
  );
  for (const u of unkeyed.length > 0 ? unattributed : [])
    await tx.query(
      `UPDATE audit_chain_findings SET declaration = $4
       WHERE session_id = $1 AND kind = $2 AND seq_from = $3 AND declaration IS NULL
         AND NOT EXISTS (SELECT 1 FROM audit_chain_findings d WHERE d.declaration = $4)`,
      [u.sessionId, u.kind, u.seqFrom, u.declaration],
    );
  const findings = [...(ranges.length > 0 ? await unverifiedDeclarations(tx, ranges) : []), ...unattributed];
  if (findings.length === 0) return [];
  return (await insertFindings(tx, findings, true)).map(withoutDeclaration);
}

/** Stores what the batch's audit.heads events recorded (AuditStore.sweepGaps and verify hold sessions to it). */
async function recordHeads(tx: SqlRunner, events: readonly AuditEvent[]): Promise<void> {
  // One row per (session, instance) per statement: ON CONFLICT cannot touch the same row twice in one INSERT.
  const top = new Map<
    string,
    {
      session_id: string;
      instance: string;
      seq: number;
      hash: string;
      event_id: string;
      namespace: string;
      seen_at: string;
      refresh_ms: number | null;
    }
  >();
  for (const e of events) {
    for (const { sessionId, head } of headsOf(e)) {
      if (head.instance === null) continue;
      const key = `${sessionId}\n${head.instance}\n${head.namespace}`;
      const there = top.get(key);
      const refresh = (e.heads as { refreshMs?: unknown } | undefined)?.refreshMs;
      const refreshMs = Number.isSafeInteger(refresh) && (refresh as number) > 0 ? (refresh as number) : null;
      if (there === undefined || head.seq > there.seq)
        top.set(key, {
          session_id: sessionId,
          instance: head.instance,
          seq: head.seq,
          hash: head.hash,
          event_id: head.by,
          namespace: head.namespace,
          seen_at: there === undefined ? e.time : later(there.seen_at, e.time),
          refresh_ms: refreshMs ?? there?.refresh_ms ?? null,
        });
      else there.seen_at = later(there.seen_at, e.time);
    }
  }
  if (top.size > 0) await tx.query(UPSERT_HEADS, [JSON.stringify([...top.values()])]);
}

/**
 * The namespace a new session is filed under: that of its lowest-seq event naming one. Later batches keep it, so an
 * event naming another cannot move the session (and its trail) into that namespace's readers' view.
 */
function filedNamespace(evs: readonly AuditEvent[]): string | null {
  let best: AuditEvent | undefined;
  for (const e of evs) if (namespaceOf(e) !== null && (!best || e.session.seq < best.session.seq)) best = e;
  return best ? namespaceOf(best) : null;
}

/**
 * Events whose primary key was stored already (not stored now) but which are not the stored event: the same
 * position and time with other content, or a content that does not match its own hash. A redelivery repeats the
 * stored event exactly; anything else is a replacement attempt, dropped by the primary key without a trace unless
 * reported here. Runs only for batches with repeats.
 */
async function conflictingRepeats(
  tx: SqlRunner,
  repeated: readonly AuditEvent[],
  rules: ChainRules,
): Promise<ChainFinding[]> {
  const stored = await tx.query<{ session_id: string; seq: number; hash: string }>(
    `SELECT session_id, seq::int AS seq, hash FROM audit_events
     WHERE (session_id, seq) IN (SELECT * FROM unnest($1::text[], $2::bigint[]))`,
    [repeated.map((e) => e.session.id), repeated.map((e) => e.session.seq)],
  );
  const hashes = new Map<string, Set<string>>();
  for (const r of stored) {
    const key = `${r.session_id}\u0000${r.seq}`;
    const set = hashes.get(key);
    if (set) set.add(r.hash);
    else hashes.set(key, new Set([r.hash]));
  }
  const out = new Map<string, ChainFinding>();
  for (const e of repeated) {
    const key = `${e.session.id}\u0000${e.session.seq}`;
    const there = hashes.get(key);
    if (there === undefined || out.has(key)) continue;
    let why: string | undefined;
    if (!there.has(e.hash)) why = 'another event is stored at that position and time; this one was not stored';
    else if (there.size > 1) why = 'two events are stored for it';
    else {
      let recomputed: string | undefined;
      try {
        recomputed = rules.hashOf(e);
      } catch {
        recomputed = undefined;
      }
      if (recomputed !== e.hash) why = 'it carries the stored event’s hash but not its content; it was not stored';
    }
    if (why) out.set(key, secondEventFinding(e, why));
  }
  return [...out.values()];
}

/** Sessions a batch stored nothing for but found replacement attempts in (their status is otherwise untouched). */
async function markTampered(tx: SqlRunner, findings: readonly ChainFinding[]): Promise<void> {
  await tx.query(
    `UPDATE audit_sessions SET status = 'tampered', updated_at = now()
     WHERE session_id = ANY(SELECT jsonb_array_elements_text($1::jsonb)) AND status <> 'tampered'`,
    [JSON.stringify([...new Set(findings.map((f) => f.sessionId))])],
  );
}

/**
 * Judges a session's checkpoints against the namespace the session is filed under and each checkpoint's own.
 */
function judgeFor(sessionNamespace: string | null, keyring: AuditKeyring): CheckpointJudge {
  return (e) => {
    const own = namespaceOf(e);
    return judgeCheckpoint(e, keyring, own === sessionNamespace ? [own] : [sessionNamespace, own]);
  };
}

/** `rules` answering hashOf from the hashes computed ahead for this batch's events (a map dropped with the batch). */
function withKnownHashes(rules: ChainRules, items: readonly IngestItem[]): ChainRules {
  const known = new Map<ChainEvent, string>();
  for (const it of items) if (it.hash !== undefined) known.set(it.event, it.hash);
  if (known.size === 0) return rules;
  return { ...rules, hashOf: (e) => known.get(e) ?? rules.hashOf(e) };
}

/**
 * Declared ranges (or their starts) the chain has verified already are no gap: their events arrived and link (an `fsync_failed`
 * declaration names events a failed fdatasync may have lost, and the page cache often still delivered them). The
 * `audit.gap` event itself stays in the sidecar's chain as the record that the disk failed. Returns what is left.
 */
async function unverifiedDeclarations(tx: SqlRunner, declared: readonly ChainFinding[]): Promise<ChainFinding[]> {
  const rows = await tx.query<{ session_id: string; verified_seq: number }>(
    'SELECT session_id, verified_seq::int FROM audit_sessions WHERE session_id = ANY(SELECT jsonb_array_elements_text($1::jsonb))',
    [JSON.stringify([...new Set(declared.map((f) => f.sessionId))])],
  );
  const verified = new Map(rows.map((r) => [r.session_id, r.verified_seq]));
  return declared.flatMap((f) => {
    const v = verified.get(f.sessionId);
    if (v === undefined || v < f.seqFrom) return [f];
    // What is verified arrived; only the rest may be missing.
    return v >= f.seqTo ? [] : [{ ...f, seqFrom: v + 1 }];
  });
}

/**
 * Stores findings, once per (session, kind, first seq), and a sidecar's unattributed declaration once per loss it
 * declares (DeclaredFinding); returns those not stored before. With `widen` (the findings of an ingested batch, a
 * sidecar's declarations among them), an open `audit.gap` that one starting at the same seq reaches past (the sweep's
 * hole, then a declaration naming more) is widened to cover both, with both details, and returned again: kept as it
 * was, the rest would go unreported. The sweep's own findings do not widen (a tail whose head grows is the same
 * finding, reported once). A finding within one closed by hand (same session and kind) is not raised again: whoever
 * closed it has looked at those events already.
 */
export async function insertFindings(
  tx: SqlRunner,
  findings: readonly (ChainFinding & { declaration?: string })[],
  widen = false,
): Promise<ChainFinding[]> {
  // One row per key and statement (ON CONFLICT DO UPDATE cannot touch a row twice): the first finding of a kind, for a
  // gap the widest; one per declaration (its unique index).
  const rows = new Map<string, ChainFinding & { declaration?: string }>();
  const declarations = new Set<string>();
  for (const f of findings) {
    if (f.declaration !== undefined) {
      if (declarations.has(f.declaration)) continue;
      declarations.add(f.declaration);
    }
    const key = `${f.sessionId}\n${f.kind}\n${f.seqFrom}`;
    const there = rows.get(key);
    if (there === undefined) rows.set(key, f);
    else if (f.kind === 'audit.gap' && f.seqTo > there.seqTo)
      rows.set(key, { ...there, seqTo: f.seqTo, detail: `${there.detail}; ${f.detail}` });
  }
  const stored = await tx.query<{ session_id: string; kind: string; seq_from: number }>(
    `INSERT INTO audit_chain_findings AS f (session_id, kind, seq_from, seq_to, detail, declaration)
     SELECT r.session_id, r.kind, r.seq_from, r.seq_to, r.detail, r.declaration
     FROM jsonb_to_recordset($1::jsonb)
       AS r(session_id text, kind text, seq_from bigint, seq_to bigint, detail text, declaration text)
     WHERE NOT EXISTS (SELECT 1 FROM audit_chain_findings d WHERE d.declaration = r.declaration)
       AND NOT EXISTS (SELECT 1 FROM audit_chain_findings c WHERE c.session_id = r.session_id AND c.kind = r.kind
         AND c.closed_at IS NOT NULL AND c.seq_from <= r.seq_from AND r.seq_to <= c.seq_to)
     ON CONFLICT (session_id, kind, seq_from) ${widen ? WIDEN_OPEN_GAP : 'DO NOTHING'}
     RETURNING session_id, kind, seq_from::int`,
    [
      JSON.stringify(
        [...rows.values()].map((f) => ({
          session_id: f.sessionId,
          kind: f.kind,
          seq_from: f.seqFrom,
          seq_to: f.seqTo,
          detail: f.detail,
          declaration: f.declaration ?? null,
        })),
      ),
    ],
  );
  const fresh = new Set(stored.map((r) => `${r.session_id}\n${r.kind}\n${r.seq_from}`));
  // Each stored row is reported once, as the finding that made it.
  const reported = new Set<string>();
  return findings.filter((f) => {
    const key = `${f.sessionId}\n${f.kind}\n${f.seqFrom}`;
    if (!fresh.has(key) || reported.has(key)) return false;
    reported.add(key);
    return true;
  });
}

function emptyRow(sid: string, rules: ChainRules): SessionRow {
  return {
    session_id: sid,
    namespace: null,
    policy: null,
    identity: null,
    first_time: null,
    last_time: null,
    events: 0,
    statements: 0,
    denied: 0,
    max_seq: rules.firstSeq - 1,
    verified_seq: rules.firstSeq - 1,
    verified_hash: null,
    end_seq: null,
    status: 'ok',
    signature: 'unsigned',
    signed_seq: null,
    signed_key: null,
    instance: null,
  };
}

/** Schema v1 times are fixed-width UTC ("...T12:00:00.000000Z"), which compare correctly as strings. */
const fixedUtc = (a: string, b: string) => a.length === b.length && a.endsWith('Z') && b.endsWith('Z');
const before = (a: string, b: string) => (fixedUtc(a, b) ? a < b : Date.parse(a) < Date.parse(b));
const earlier = (a: string | null, b: string) => (a === null || before(b, a) ? b : a);
const later = (a: string | null, b: string) => (a === null || before(a, b) ? b : a);

function aggregate(
  row: SessionRow,
  namespace: string | null,
  evs: readonly AuditEvent[],
  step: AdvanceResult,
  rules: ChainRules,
): SessionRow {
  const next: SessionRow = { ...row, namespace };
  for (const e of evs) {
    // The session's policy and identity come from its first event that has them: once both are set, the indexed
    // fields (an object and an identity string per event) are not computed again.
    if (next.policy === null || next.identity === null) {
      const f = indexedFields(e);
      next.policy ??= f.policy;
      next.identity ??= f.identity;
    }
    next.instance ??= instanceOf(e);
    next.first_time = earlier(next.first_time, e.time);
    next.last_time = later(next.last_time, e.time);
    next.events += 1;
    if (e.type === 'statement') next.statements += 1;
    if (e.decision?.action === 'deny') next.denied += 1;
    next.max_seq = Math.max(next.max_seq, e.session.seq);
    if (e.type === 'session.end') next.end_seq = e.session.seq;
  }
  const vouched = step.checkpoints.vouched;
  if (vouched && (next.signed_seq === null || vouched.seq > next.signed_seq)) {
    next.signed_seq = vouched.seq;
    next.signed_key = vouched.key;
  }
  next.signature = signatureState(next.signed_seq, next.max_seq, step.checkpoints, row.signature);
  next.verified_seq = Math.max(step.cursor.verifiedSeq, rules.firstSeq - 1);
  next.verified_hash = step.cursor.verifiedHash;
  const tampered = row.status === 'tampered' || step.findings.some((f) => f.kind === 'audit.tampered');
  // 'pending': a hole the sweep will call a gap if it is not filled within the grace period.
  next.status = tampered
    ? 'tampered'
    : next.verified_seq < next.max_seq
      ? row.status === 'gap'
        ? 'gap'
        : 'pending'
      : 'ok';
  return next;
}
