import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import {
  type AuditCheckpoint,
  type AuditFindingRecord,
  type AuditRead,
  type AuditSigner,
  type AuditSource,
  type AuditWebSession,
  formatAuditTime,
  newChain,
  sealEventToJson,
  type UnsealedAuditEvent,
} from '@pgwarden/policy';
import type { ChainFinding } from '../chain/verify-chain.js';
import { CollectorError } from '../errors.js';
import type { DeliveryOutcome } from '../ingest/ingest-queue.js';
import { collectorSession, readEvent } from './read-event.js';

export interface ReadRecorderOptions {
  /** Stores one sealed event (its JSON text) through the ingest path; settles once it is durable or refused. */
  store(json: string): Promise<DeliveryOutcome>;
  /** Names the chain `collector-<instanceId>`; a random UUID per process by default. */
  instanceId?: string;
  /** Signs the chain with `audit.checkpoint` events (`--audit-signing-key`). */
  signer?: AuditSigner;
  /** The least time between two checkpoints (default 1 s). */
  checkpointIntervalMs?: number;
  /** How long a read waits for its event to be stored before `record` gives up on it (default 5 s). */
  timeoutMs?: number;
  /**
   * Identical reads within this long of a read's recorded event are folded into one later event with `repeated`
   * (default 60 s; 0 records every read on its own).
   */
  repeatWindowMs?: number;
  /** Microseconds since the epoch. */
  now?: () => number;
}

export interface ReadRecorderEvents {
  /** A checkpoint could not be stored: the chain's events since the previous one stay unsigned until the next. */
  checkpointFailed: [error: Error];
  /** An event whose read was refused for taking too long was stored after all (its `status` is not what was sent). */
  late: [read: AuditRead, elapsedMs: number];
  /** The event folding repeated reads (already answered) could not be stored. */
  repeatsUnrecorded: [read: AuditRead, repeated: number, error: Error];
  /** A finding's audit.finding event could not be stored (the finding itself is in audit_chain_findings). */
  findingUnrecorded: [finding: AuditFindingRecord, error: Error];
  /** A web sign-in's web.session.end event could not be stored. */
  webSessionUnrecorded: [end: AuditWebSession, error: Error];
}

/** A read recorded within the repeat window, and the identical reads answered since. */
interface RecentRead {
  read: AuditRead;
  /** Settles once the read's own event is stored: a repeat is answered only after that. */
  stored: Promise<void>;
  repeated: number;
  timer: NodeJS.Timeout;
}

const require = createRequire(import.meta.url);
/** The collector package's version, for `source.version`; the events do without one when it cannot be read. */
function packageVersion(): string | undefined {
  try {
    return (require('../../package.json') as { version?: string }).version;
  } catch {
    return undefined;
  }
}

const nowMicros = () => Date.now() * 1000;

/**
 * The collector's own hash chain, `collector-<instance>`: one `audit.read` event per read of the trail, one
 * `audit.finding` per chain finding the collector raises (so exports carry integrity alerts to the SIEM), and one
 * `web.session.end` per web UI sign-in that ends on this replica, sealed in the
 * order reads finish and stored through the same ingest path as every sidecar's chain (so verification, the API and
 * the exports treat it like any other). With a signer, a checkpoint follows the first read at once and then at most
 * one per interval while reads go on, and one at `close`: a collector reads rarely, so signing the leading edge
 * leaves no chain waiting a whole interval for its first signature.
 */
export class ReadRecorder extends EventEmitter<ReadRecorderEvents> {
  readonly sessionId: string;
  private readonly chain = newChain();
  private readonly source: AuditSource;
  private readonly now: () => number;
  private readonly timeoutMs: number;
  private readonly intervalMs: number;
  private unsigned = false;
  private lastSignedAt = Number.NEGATIVE_INFINITY;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly repeatWindowMs: number;
  private readonly recent = new Map<string, RecentRead>();

  constructor(private readonly opts: ReadRecorderOptions) {
    super();
    const instance = opts.instanceId ?? randomUUID();
    this.sessionId = collectorSession(instance);
    const version = packageVersion();
    this.source = { instance, ...(version ? { version } : {}) };
    this.now = opts.now ?? nowMicros;
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.intervalMs = opts.checkpointIntervalMs ?? 1000;
    this.repeatWindowMs = opts.repeatWindowMs ?? 60_000;
  }

  /** The signer's key id, when the chain is signed. */
  get keyId(): string | undefined {
    return this.opts.signer?.keyId;
  }

  /**
   * Seals the read into the chain and resolves once it is stored. Rejects (COLLECTOR_READ_UNRECORDED) when it was
   * refused, not stored within the timeout, or the recorder is closed; the caller decides what the reader gets then.
   * An event that times out stays queued and is stored when the store recovers: taking it back would leave a hole.
   */
  async record(read: AuditRead): Promise<void> {
    if (this.closed) throw unrecorded('the collector is stopping');
    if (this.repeatWindowMs <= 0) return this.recordOne(read);
    // A dashboard polls (the web UI's approvals every 5 s, its session list on every new session): one event per
    // poll would swamp the chain with identical reads. The first is recorded at once and answered only once stored;
    // identical ones within the window wait for that same event and are counted into one `repeated` event after it.
    const key = JSON.stringify([
      read.reader,
      read.route,
      read.query ?? null,
      read.namespaces ?? null,
      read.oidc ?? null,
      read.status,
      read.items ?? null,
      read.reason ?? null,
    ]);
    const seen = this.recent.get(key);
    if (seen) {
      await seen.stored;
      seen.repeated++;
      return;
    }
    const entry: RecentRead = {
      read,
      stored: this.recordOne(read),
      repeated: 0,
      timer: setTimeout(() => this.flushRepeats(key), this.repeatWindowMs),
    };
    entry.timer.unref();
    this.recent.set(key, entry);
    try {
      await entry.stored;
    } catch (err) {
      // Not recorded: nothing to fold repeats into, so the next identical read is recorded on its own again.
      clearTimeout(entry.timer);
      if (this.recent.get(key) === entry) this.recent.delete(key);
      throw err;
    }
  }

  /** Ends a read's repeat window: the identical reads answered in it become one event with `repeated`. */
  private flushRepeats(key: string): void {
    const entry = this.recent.get(key);
    if (!entry) return;
    this.recent.delete(key);
    clearTimeout(entry.timer);
    if (entry.repeated === 0) return;
    const read = { ...entry.read, repeated: entry.repeated };
    this.recordOne(read).catch((err: Error) => this.emit('repeatsUnrecorded', entry.read, entry.repeated, err));
  }

  private async recordOne(read: AuditRead): Promise<void> {
    const json = this.seal(
      readEvent(read, { time: formatAuditTime(this.now()), session: this.sessionId, source: this.source }),
    );
    const started = Date.now();
    const stored = this.opts.store(json);
    this.afterAppend();
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        timedOut = true;
        reject(unrecorded(`its audit.read event was not stored within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
    });
    try {
      const outcome = await Promise.race([stored, deadline]);
      if (outcome === 'rejected') throw unrecorded('the store refused its audit.read event (kept in audit_rejected)');
    } catch (err) {
      if (err instanceof CollectorError && err.code === 'COLLECTOR_READ_UNRECORDED') throw err;
      throw unrecorded(`storing its audit.read event failed: ${(err as Error).message}`, err);
    } finally {
      clearTimeout(timer);
      if (timedOut)
        stored.then(
          (o) => o !== 'rejected' && this.emit('late', read, Date.now() - started),
          () => {},
        );
    }
  }

  /**
   * Records a chain finding as an `audit.finding` event. Nobody waits for it: a failure is reported through
   * `findingUnrecorded`, and the finding itself is already in the store's findings table.
   */
  finding(f: ChainFinding): void {
    // audit.unsigned exists only in verification reports (never stored): not an event either.
    if (f.kind === 'audit.unsigned') return;
    const finding: AuditFindingRecord = {
      kind: f.kind,
      session: f.sessionId,
      seqFrom: Math.max(0, f.seqFrom),
      seqTo: Math.max(0, f.seqTo),
      detail: f.detail,
    };
    if (this.closed) {
      this.emit('findingUnrecorded', finding, new Error('the collector is stopping'));
      return;
    }
    this.appendUnawaited({ type: 'audit.finding', finding }, (err) => this.emit('findingUnrecorded', finding, err));
    this.afterAppend();
  }

  /**
   * Records the end of a web UI sign-in as a `web.session.end` event. Nobody waits for it: ending a sign-in releases
   * nothing (unlike a read), and the person is told why whether or not the event is stored; a failure is reported
   * through `webSessionUnrecorded`.
   */
  webSessionEnded(end: AuditWebSession): void {
    const webSession: AuditWebSession = {
      reader: end.reader,
      oidc: { issuer: end.oidc.issuer, subject: end.oidc.subject },
      reason: end.reason,
      detail: end.detail,
    };
    if (this.closed) {
      this.emit('webSessionUnrecorded', webSession, new Error('the collector is stopping'));
      return;
    }
    this.appendUnawaited({ type: 'web.session.end', webSession }, (err) =>
      this.emit('webSessionUnrecorded', webSession, err),
    );
    this.afterAppend();
  }

  /**
   * Seals one of the collector's own events (no workload identity: it acts for nobody) into the chain and stores it
   * with nobody waiting for it; `failed` hears of a refusal or an error.
   */
  private appendUnawaited(
    body: Pick<UnsealedAuditEvent, 'type' | 'finding' | 'checkpoint' | 'webSession'>,
    failed: (err: Error) => void,
  ): void {
    const json = this.seal({
      v: 1,
      time: formatAuditTime(this.now()),
      session: { id: this.sessionId },
      source: this.source,
      identity: { groups: [] },
      ...body,
    });
    this.opts.store(json).then((o) => o === 'rejected' && failed(new Error('the store refused it')), failed);
  }

  /** Stops signing after one last checkpoint over whatever is unsigned; reads recorded from now on are refused. */
  close(): void {
    this.closed = true;
    // Repeats already answered are recorded before the last checkpoint, so it covers them.
    for (const key of [...this.recent.keys()]) this.flushRepeats(key);
    clearTimeout(this.timer);
    this.timer = undefined;
    this.sign();
  }

  private seal(event: UnsealedAuditEvent): string {
    return sealEventToJson(event, this.chain).json;
  }

  private afterAppend(): void {
    if (!this.opts.signer) return;
    this.unsigned = true;
    if (this.timer) return;
    const wait = this.lastSignedAt + this.intervalMs - Date.now();
    if (wait <= 0) {
      this.sign();
      return;
    }
    // Unref'd like the sidecar's sweep: a pending checkpoint never keeps the process alive; close() signs instead.
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.sign();
    }, wait);
    this.timer.unref();
  }

  /** Appends a checkpoint over the chain's latest event, if any event is not covered by one yet. */
  private sign(): void {
    const signer = this.opts.signer;
    if (!signer || !this.unsigned || this.chain.prevHash === null) return;
    this.unsigned = false;
    this.lastSignedAt = Date.now();
    const checkpoint: AuditCheckpoint = signer.checkpoint(this.sessionId, this.chain.seq, this.chain.prevHash);
    this.appendUnawaited({ type: 'audit.checkpoint', checkpoint }, (err) => this.emit('checkpointFailed', err));
  }
}

const unrecorded = (why: string, cause?: unknown) =>
  new CollectorError('COLLECTOR_READ_UNRECORDED', `the read could not be recorded in the audit trail: ${why}`, {
    cause,
  });
