import { hashOfCanonicalText } from '../chain/canonical-text.js';
import { hashOfCanonicalUtf8 } from '../chain/canonical-utf8.js';
import { type CommittedHead, headFindings, missingTailDetail } from '../chain/chain-heads.js';
import { schemaV1Rules } from '../chain/chain-rules.js';
import { type ChainFinding, type ChainRules, type FullReport, verifySession } from '../chain/verify-chain.js';
import { requiredSignatureFinding } from '../chain/verify-events.js';
import { CollectorError } from '../errors.js';
import { type AuditEvent, indexedFields } from '../event.js';
import { type AuditKeyring, NO_KEYS } from '../signatures/audit-keys.js';
import { CopyRows } from './copy-rows.js';
import {
  fileStoredDeclarations,
  INGEST_LOCK_KEY,
  type IngestItem,
  ISO,
  insertFindings,
  isDuplicateError,
  type WriteResult,
  writeBatch,
} from './ingest-writer.js';
import { migrate } from './migrations.js';
import { dayKey, PartitionManager } from './partitions.js';
import { connectPostgres, openPglite, type SqlClient } from './sql-client.js';

export interface StoreOptions {
  /** postgres://... ; when absent the embedded PGlite store is used. */
  url?: string;
  /** PGlite data directory; in memory when absent. Ignored with `url`. */
  dataDir?: string;
  rules: ChainRules;
  /** Signed checkpoints: without this, checkpoints are stored and reported `unverified`, never judged. */
  signatures?: SignatureOptions;
}

export interface SignatureOptions {
  /** The audit keys as they stand now (the caller re-reads their file); asked once per batch and per verification. */
  keyring(): AuditKeyring;
  /**
   * `--require-signed-audit`: a full verification fails an ended session that is not `signed`, and any session of
   * a namespace a key covers that has no valid checkpoint (finding `audit.unsigned`).
   */
  requireSigned?: boolean;
  /** Sessions whose newest event arrived within this time are not held to `requireSigned` yet (default 30 s). */
  graceMs?: number;
}

export interface IngestOutcome extends WriteResult {
  rejected: number;
  /** Events PostgreSQL refused as data; kept in audit_rejected. */
  rejectedEvents: AuditEvent[];
}

/** The ingest transaction's lock, taken with its BEGIN (one round trip fewer than a statement of its own). */
const WITH_INGEST_LOCK = { lock: INGEST_LOCK_KEY };

/** The audit store: events partitioned by day, sessions with their chain state, findings, cursors. */
export class AuditStore {
  readonly partitions: PartitionManager;
  readonly rules: ChainRules;
  readonly signatures: SignatureOptions | undefined;
  /** Batches left to write with INSERT … ON CONFLICT before COPY is tried again (see `write`). */
  private insertOnly = 0;

  private constructor(
    readonly db: SqlClient,
    rules: ChainRules,
    signatures: SignatureOptions | undefined,
  ) {
    this.rules = rules;
    this.signatures = signatures;
    this.partitions = new PartitionManager(db);
  }

  private keyring(): AuditKeyring {
    return this.signatures?.keyring() ?? NO_KEYS;
  }

  /**
   * Computes the chain hashes of items about to be ingested (into `item.hash`); CPU work the ingest queue overlaps
   * with I/O. Items are hashed from the bytes or text they arrived as when that is provably the canonical encoding
   * (schema v1 only), else by re-encoding the event.
   */
  prehash(items: readonly IngestItem[]): void {
    const fromText = this.rules === schemaV1Rules;
    for (const x of items) {
      if (x.hash !== undefined) continue;
      const e = x.event;
      try {
        const h = !fromText ? undefined : x.utf8 ? hashOfCanonicalUtf8(x.utf8, e.hash) : hashOfCanonicalText(x.raw, e);
        x.hash = h ?? this.rules.hashOf(e);
      } catch {
        // An unhashable event is reported by the chain check itself.
      }
    }
  }

  /**
   * An empty CopyRows for a batch about to be ingested, to fill as its items are ready and hand to `ingest` with
   * exactly those items; undefined when the next write will not be a COPY (embedded store, INSERT after a
   * redelivery), so nothing is built in vain.
   */
  copyRows(): CopyRows | undefined {
    return this.db.kind === 'postgres' && this.insertOnly === 0 ? new CopyRows() : undefined;
  }

  static async open(opts: StoreOptions): Promise<AuditStore> {
    const db = opts.url ? await connectPostgres(opts.url) : await openPglite(opts.dataDir);
    const store = new AuditStore(db, opts.rules, opts.signatures);
    try {
      await migrate(db);
    } catch (err) {
      await db.close().catch(() => {});
      throw err;
    }
    return store;
  }

  close(): Promise<void> {
    return this.db.close();
  }

  /**
   * Stores a batch durably (one transaction). Events PostgreSQL refuses as data (class 22, e.g. a NUL character
   * jsonb cannot hold) are recorded in `audit_rejected` one by one so one bad event never blocks the stream.
   * `rows`: the COPY rows of exactly `input`, built ahead (see `copyRows`).
   */
  async ingest(input: readonly (AuditEvent | IngestItem)[], rows?: CopyRows): Promise<IngestOutcome> {
    const items: IngestItem[] = input.map((x) => (isItem(x) ? x : { event: x, raw: JSON.stringify(x) }));
    const events = items.map((i) => i.event);
    this.prehash(items);
    if (events.length === 0) {
      rows?.discard();
      return { inserted: [], duplicates: 0, findings: [], healed: 0, narrowed: 0, rejected: 0, rejectedEvents: [] };
    }
    await this.partitions.ensure(new Set(events.map((e) => dayKey(e.time))));
    try {
      return {
        ...(await this.write(items, rows)),
        rejected: 0,
        rejectedEvents: [],
      };
    } catch (err) {
      if (!isDataError(err) || events.length === 0)
        throw new CollectorError(
          'COLLECTOR_STORE',
          `storing ${events.length} events failed: ${(err as Error).message}`,
          { cause: err },
        );
    }
    const total: IngestOutcome = {
      inserted: [],
      duplicates: 0,
      findings: [],
      healed: 0,
      narrowed: 0,
      rejected: 0,
      rejectedEvents: [],
    };
    for (const item of items) {
      const e = item.event;
      try {
        const r = await this.db.transaction((tx) => writeBatch(tx, [item], this.rules, { keyring: this.keyring() }));
        total.inserted.push(...r.inserted);
        total.duplicates += r.duplicates;
        total.findings.push(...r.findings);
        total.healed += r.healed;
        total.narrowed += r.narrowed;
      } catch (err) {
        if (!isDataError(err))
          throw new CollectorError('COLLECTOR_STORE', `storing event failed: ${(err as Error).message}`, {
            cause: err,
          });
        await this.reject('ingest', (err as Error).message, item.raw);
        total.rejected += 1;
        total.rejectedEvents.push(e);
      }
    }
    return total;
  }

  /**
   * COPY first; a batch holding an already stored event (redelivery) fails it with 23505 and is redone with the
   * idempotent INSERT. Redeliveries come in runs (a restart, an ack timeout), so after one the next batches go
   * straight to INSERT for a while instead of paying for a failed COPY each.
   */
  private async write(items: readonly IngestItem[], rows: CopyRows | undefined): Promise<WriteResult> {
    const keyring = this.keyring();
    if (this.insertOnly > 0) {
      this.insertOnly--;
      rows?.discard();
    } else {
      try {
        return await this.db.transaction(
          (tx) => writeBatch(tx, items, this.rules, { copy: true, rows, locked: true, keyring }),
          WITH_INGEST_LOCK,
        );
      } catch (err) {
        if (!isDuplicateError(err)) throw err;
        this.insertOnly = 16;
      }
    }
    return this.db.transaction((tx) => writeBatch(tx, items, this.rules, { locked: true, keyring }), WITH_INGEST_LOCK);
  }

  /** Keeps what could not be parsed or stored, for an operator to inspect; never silently dropped. */
  async reject(source: string, reason: string, raw: string): Promise<void> {
    // NUL cannot be stored in text either; escape it so the evidence survives.
    await this.db.query('INSERT INTO audit_rejected (source, reason, raw) VALUES ($1, $2, $3)', [
      source,
      reason,
      raw.replaceAll('\u0000', '\\u0000'),
    ]);
  }

  /**
   * Files the findings the stored `audit.gap` events call for and the store lacks (events stored by a collector that
   * did not file them yet); the collector runs it at start-up. Under the ingest lock, as an ingest: a replica starting
   * while another ingests files each once. Returns the findings filed now.
   */
  async fileStoredDeclarations(): Promise<ChainFinding[]> {
    return this.db.transaction((tx) => fileStoredDeclarations(tx), WITH_INGEST_LOCK);
  }

  /**
   * Turns holes older than `graceMs` into `audit.gap` findings. A hole is normal for a moment (redelivery, a
   * spool draining out of order); one that stays is evidence that events were lost.
   */
  async sweepGaps(graceMs: number): Promise<ChainFinding[]> {
    return this.db.transaction(async (tx) => {
      const rows = await tx.query<{ session_id: string; from: number; next: number | null }>(
        `SELECT s.session_id, s.verified_seq::int + 1 AS "from",
                (SELECT min(seq)::int FROM audit_events e WHERE e.session_id = s.session_id AND e.seq > s.verified_seq) AS next
         FROM audit_sessions s WHERE s.status = 'pending' AND s.updated_at < now() - make_interval(secs => $1) FOR UPDATE`,
        [graceMs / 1000],
      );
      const findings: ChainFinding[] = rows.map((r) => ({
        kind: 'audit.gap',
        sessionId: r.session_id,
        seqFrom: r.from,
        seqTo: (r.next ?? r.from) - 1,
        detail: `events ${r.from}..${(r.next ?? r.from) - 1} did not arrive within ${Math.round(graceMs / 1000)}s`,
      }));
      // Tails: a chain whose sidecar recorded a head beyond the last event stored (or that has no events at all),
      // for longer than the grace period. No hole shows there; only the sidecar's own chain says it was longer.
      const short = await tx.query<{ session_id: string; from: number; seq: number; event_id: string; known: boolean }>(
        `SELECT h.session_id, coalesce(s.max_seq, 0)::int + 1 AS "from", h.seq::int, h.event_id,
                s.session_id IS NOT NULL AS known
         FROM audit_chain_heads h LEFT JOIN audit_sessions s ON s.session_id = h.session_id
         WHERE h.received_at < now() - make_interval(secs => $1)
           AND (s.session_id IS NULL OR (h.instance = s.instance AND h.namespace = coalesce(s.namespace, '')
                AND h.seq > s.max_seq AND s.status NOT IN ('gap', 'tampered')))`,
        [graceMs / 1000],
      );
      for (const r of short) {
        findings.push({
          kind: 'audit.gap',
          sessionId: r.session_id,
          seqFrom: r.from,
          seqTo: r.seq,
          detail: missingTailDetail(r.from, r.seq, r.event_id, r.known),
        });
      }
      if (findings.length === 0) return findings;
      // A finding already recorded for the same start is not reported again (a chain missing whole stays so).
      const fresh = await insertFindings(tx, findings);
      await tx.query(
        `UPDATE audit_sessions SET status = 'gap' WHERE session_id = ANY(SELECT jsonb_array_elements_text($1::jsonb))`,
        [JSON.stringify([...rows.map((r) => r.session_id), ...short.filter((r) => r.known).map((r) => r.session_id)])],
      );
      return fresh;
    });
  }

  /**
   * Sessions newly found interrupted: not ended, and their sidecar has not named them in `audit.heads` for three of
   * its refresh periods (it was killed with them open, or its trail stopped arriving). Each is returned once.
   */
  async sweepInterrupted(): Promise<{ sessionId: string; namespace: string | null; lastHeard: string }[]> {
    return this.db.query(
      `UPDATE audit_sessions s SET interrupted_at = now()
       FROM audit_chain_heads h
       WHERE s.end_seq IS NULL AND s.interrupted_at IS NULL AND h.session_id = s.session_id AND h.instance = s.instance
         AND h.namespace = coalesce(s.namespace, '')
         AND h.seen_at < now() - make_interval(secs => 3 * h.refresh_ms / 1000.0)
       RETURNING s.session_id AS "sessionId", s.namespace, ${ISO('h.seen_at')} AS "lastHeard"`,
    );
  }

  /**
   * Whether a session's newest event was stored within the grace period: its closing checkpoint may still be on
   * its way (a sidecar signs at most once a second). Measured on the store's clock, not the sidecar's.
   */
  private async arrivedRecently(sessionId: string): Promise<boolean> {
    const [row] = await this.db.query<{ recent: boolean }>(
      `SELECT coalesce(max(received_at) > now() - make_interval(secs => $2), false) AS recent
       FROM audit_events WHERE session_id = $1`,
      [sessionId, (this.signatures?.graceMs ?? 30_000) / 1000],
    );
    return row?.recent === true;
  }

  /** Session ids in the store (from events and from the sessions table, so a deleted side still shows). */
  async sessionIds(): Promise<string[]> {
    const rows = await this.db.query<{ id: string }>(
      `SELECT session_id AS id FROM audit_sessions UNION SELECT DISTINCT session_id FROM audit_events
       UNION SELECT DISTINCT session_id FROM audit_chain_heads ORDER BY 1`,
    );
    return rows.map((r) => r.id);
  }

  /**
   * Full re-verification from stored events only: recomputes every hash and link, judges every checkpoint against
   * the keys as they stand now, checks the indexed columns against the event they came from, and compares with the
   * last sequence number recorded at ingest.
   */
  async verify(sessionIds?: readonly string[]): Promise<FullReport[]> {
    const ids = sessionIds ?? (await this.sessionIds());
    const keyring = this.keyring();
    const requireSigned = this.signatures?.requireSigned === true;
    const reports: FullReport[] = [];
    for (const sid of ids) {
      const readMeta = async () =>
        (
          await this.db.query<{ max_seq: number }>('SELECT max_seq::int FROM audit_sessions WHERE session_id = $1', [
            sid,
          ])
        )[0];
      // The last seq recorded at ingest is read first: a live chain (a sidecar's, the collector's own) may gain
      // events in between, which then show up as rows beyond it rather than as a tail gone missing.
      let meta = await readMeta();
      const rows = await this.db.query<{
        event: string;
        seq: number;
        type: string;
        identity: string | null;
        decision: string | null;
        kind: string | null;
        t: string;
      }>(
        `SELECT event, seq::int, type, identity, decision, kind, ${ISO('time')} AS t FROM audit_events WHERE session_id = $1 ORDER BY seq`,
        [sid],
      );
      // A chain whose first event was stored in between has its record by now.
      if (!meta && rows.length > 0) meta = await readMeta();
      const parsed = rows.map((r) => JSON.parse(r.event) as AuditEvent);
      const report = verifySession(sid, parsed, this.rules, meta?.max_seq, keyring);
      const heads = await this.db.query<CommittedHead>(
        'SELECT instance, namespace, seq::int, hash, event_id AS by FROM audit_chain_heads WHERE session_id = $1',
        [sid],
      );
      report.findings.push(...headFindings(sid, parsed, heads));
      for (const [i, r] of rows.entries()) {
        const ev = parsed[i];
        const f = indexedFields(ev);
        const sameTime = Date.parse(r.t) === Date.parse(ev.time);
        if (
          r.seq !== ev.session.seq ||
          r.type !== ev.type ||
          r.identity !== f.identity ||
          r.decision !== f.decision ||
          r.kind !== f.kind ||
          !sameTime
        ) {
          report.findings.push({
            kind: 'audit.tampered',
            sessionId: sid,
            seqFrom: r.seq,
            seqTo: r.seq,
            detail: `indexed columns of event ${ev.id} disagree with the event`,
          });
        }
      }
      if (requireSigned && parsed.length > 0 && !(await this.arrivedRecently(sid))) {
        const f = requiredSignatureFinding(report, parsed, keyring, this.rules.firstSeq);
        if (f) report.findings.push(f);
      }
      if (!meta && parsed.length > 0)
        report.findings.push({
          kind: 'audit.gap',
          sessionId: sid,
          seqFrom: 0,
          seqTo: 0,
          detail: 'session record missing from audit_sessions',
        });
      report.ok = report.findings.length === 0;
      reports.push(report);
    }
    return reports;
  }
}

function isItem(x: AuditEvent | IngestItem): x is IngestItem {
  // `in`, not a read of `raw`: an item may decode its text only when asked for it (ingest-queue's ReceivedItem).
  return 'raw' in x && typeof (x as IngestItem).event === 'object' && x.event !== null;
}

function isDataError(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && code.startsWith('22');
}
