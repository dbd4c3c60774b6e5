import { createHash } from 'node:crypto';
import type { SqlClient, SqlSession } from '../store/sql-client.js';

/**
 * The right to export one exporter's stream. Replicas sharing a store share its cursor, so only the holder may
 * deliver; the others stand by and try again now and then.
 */
export interface ExportLease {
  /** True from a successful `acquire` until the lease is released or lost. */
  readonly held: boolean;
  /** Takes the lease if nobody holds it; false while another replica does. Rejects when the store cannot be asked. */
  acquire(): Promise<boolean>;
  release(): Promise<void>;
}

/** The embedded store belongs to one process, which is then the only exporter there is. */
export function soleLease(): ExportLease {
  let held = false;
  return {
    get held() {
      return held;
    },
    acquire: async () => (held = true),
    release: async () => {
      held = false;
    },
  };
}

export interface ExportLockSessionOptions {
  /** How often the session is checked while it holds a lease (default 1 s). */
  checkMs?: number;
  /** A check (or any query on the lock connection) not answered within this loses every lease on it (default 3 s). */
  timeoutMs?: number;
}

/**
 * First key of the two-key advisory locks that exporter leases take. The two-int4 key space does not overlap the
 * bigint one the store's migration and ingest locks use (functions-admin.html#FUNCTIONS-ADVISORY-LOCKS).
 */
export const EXPORT_LOCK_CLASS = 7_245_003;

/** `application_name` of a replica's lock connection in pg_stat_activity. */
export const EXPORT_LOCKS_APPLICATION = 'pgwarden-export-locks';

/** Second key: derived from the cursor name, so every replica configured with the same exporter name agrees on it. */
export function exportLockKey(cursorName: string): number {
  return createHash('sha256').update(cursorName).digest().readInt32BE(0);
}

/** One lease's identity on the session; `onLost` is called once each time it is lost without `release`. */
interface Holder {
  onLost?: (err: Error) => void;
}

/**
 * The connection a replica's exporter leases are held on. Session-level advisory locks live as long as the connection
 * that took them, so the leases are held on a connection of their own: when the replica dies or its connection is cut,
 * PostgreSQL releases its locks and standbys take them. All exporters of a replica share it, each lease its own key
 * (one store connection per replica, not one per exporter); `release` unlocks one key and leaves the others held.
 * The session is checked every `checkMs` while it holds a lease, and every lease on it is lost as soon as a check or
 * any other query on it fails or times out, or the connection ends: before the server can notice a silent peer (the
 * keepalives set below: ~11 s), so a holder cut off from the store stops starting batches before anyone else can take
 * over.
 */
export class ExportLockSession {
  private session: SqlSession | null = null;
  private opening: Promise<SqlSession> | null = null;
  /** The session the check loop runs for (one loop, whatever the number of leases). */
  private checking: SqlSession | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly holders = new Map<number, Holder>();
  /** Keys whose lock is being asked for: a second ask on the same session would stack on the first. */
  private readonly taking = new Set<number>();
  private closed = false;

  constructor(
    private readonly db: SqlClient,
    private readonly opts: ExportLockSessionOptions = {},
  ) {}

  /** The lease of the exporter whose cursor is `cursorName`, on this session. */
  lease(cursorName: string, onLost?: (err: Error) => void): ExportLease {
    const key = exportLockKey(cursorName);
    const holder: Holder = { onLost };
    const holders = this.holders;
    return {
      get held() {
        return holders.get(key) === holder;
      },
      acquire: () => this.acquire(key, holder),
      release: () => this.release(key, holder),
    };
  }

  /** Ends the session: every lock on it goes, without calling onLost (nobody lost them). */
  async close(): Promise<void> {
    this.closed = true;
    this.holders.clear();
    this.stopChecks();
    const s = this.session;
    this.session = null;
    await this.opening?.catch(() => {});
    await s?.close();
  }

  private async acquire(key: number, holder: Holder): Promise<boolean> {
    const now = this.holders.get(key);
    if (now === holder) return true;
    // Two exporters of one name share a cursor: one of them at a time here too.
    if (now || this.taking.has(key) || this.closed) return false;
    this.taking.add(key);
    try {
      const s = await this.open();
      try {
        const [row] = await s.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS ok', [
          EXPORT_LOCK_CLASS,
          key,
        ]);
        if (!row?.ok) return false;
      } catch (err) {
        // The server may have granted a lock whose answer was lost: only closing the session surely frees it.
        this.lost(s, err as Error);
        throw err;
      }
      if (this.session !== s) return false; // the connection ended while the lock was being taken
      this.holders.set(key, holder);
      this.startChecks(s);
      return true;
    } finally {
      this.taking.delete(key);
    }
  }

  private async release(key: number, holder: Holder): Promise<void> {
    if (this.holders.get(key) !== holder) return;
    this.holders.delete(key);
    const s = this.session;
    if (!s) return;
    try {
      await s.query('SELECT pg_advisory_unlock($1, $2)', [EXPORT_LOCK_CLASS, key]);
    } catch (err) {
      // Unanswered, the lock may still be held: only closing the session surely frees it, with the others' leases.
      this.lost(s, err as Error);
    }
  }

  private open(): Promise<SqlSession> {
    if (this.session) return Promise.resolve(this.session);
    this.opening ??= this.connect().finally(() => {
      this.opening = null;
    });
    return this.opening;
  }

  private async connect(): Promise<SqlSession> {
    if (!this.db.session) throw new TypeError('advisory export leases need a PostgreSQL store');
    const s = oneAtATime(
      await this.db.session({ applicationName: EXPORT_LOCKS_APPLICATION, queryTimeoutMs: this.opts.timeoutMs ?? 3000 }),
    );
    s.ended.then((err) => this.lost(s, err));
    // The server only drops a holder that vanished without closing its socket (node loss, partition) once TCP says
    // the peer is gone; by default that takes hours. These make it ~11 s for this session alone (runtime-config-
    // connection.html#GUC-TCP-KEEPALIVES-IDLE); a server that refuses them keeps its own settings.
    await s
      .query(
        'SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3; SET tcp_user_timeout = 10000',
      )
      .catch(() => {});
    if (this.closed) {
      await s.close();
      throw new Error('export lock session closed');
    }
    this.session = s;
    return s;
  }

  private startChecks(s: SqlSession): void {
    if (this.checking === s) return;
    this.stopChecks();
    this.checking = s;
    this.timer = setTimeout(() => void this.check(s), this.opts.checkMs ?? 1000);
  }

  private stopChecks(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.checking = null;
  }

  private async check(s: SqlSession): Promise<void> {
    this.timer = null;
    if (this.checking !== s) return;
    if (this.session !== s || this.holders.size === 0) {
      this.checking = null;
      return;
    }
    try {
      await s.query('SELECT 1');
    } catch (err) {
      this.lost(s, err as Error);
      return;
    }
    if (this.checking === s) this.timer = setTimeout(() => void this.check(s), this.opts.checkMs ?? 1000);
  }

  /** The connection failed: every lease on it is gone (PostgreSQL frees their locks once it notices). */
  private lost(s: SqlSession, err: Error): void {
    if (this.session !== s) return;
    this.session = null;
    if (this.checking === s) this.stopChecks();
    void s.close();
    const lost = [...this.holders.values()];
    this.holders.clear();
    for (const h of lost) h.onLost?.(err);
  }
}

/**
 * The session's queries one after another: the leases ask concurrently (standbys try together, the check runs
 * meanwhile), and node-postgres deprecates queuing queries on a busy client. Each still gets its whole timeout.
 */
function oneAtATime(s: SqlSession): SqlSession {
  let tail: Promise<unknown> = Promise.resolve();
  return {
    ended: s.ended,
    close: () => s.close(),
    query<T>(text: string, params?: unknown[]): Promise<T[]> {
      const run = tail.then(() => s.query<T>(text, params));
      tail = run.catch(() => {});
      return run;
    },
  };
}
