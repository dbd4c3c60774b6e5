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

export interface AdvisoryLeaseOptions {
  /** How often the holder checks that its lock connection still answers (default 1 s). */
  checkMs?: number;
  /** A check (or any query on the lock connection) not answered within this counts as a lost lease (default 3 s). */
  timeoutMs?: number;
  /** Called once each time a held lease is lost without `release` (connection terminated, check failed). */
  onLost?: (err: Error) => void;
}

/**
 * First key of the two-key advisory locks that exporter leases take. The two-int4 key space does not overlap the
 * bigint one the store's migration and ingest locks use (functions-admin.html#FUNCTIONS-ADVISORY-LOCKS).
 */
export const EXPORT_LOCK_CLASS = 7_245_003;

/** Second key: derived from the cursor name, so every replica configured with the same exporter name agrees on it. */
export function exportLockKey(cursorName: string): number {
  return createHash('sha256').update(cursorName).digest().readInt32BE(0);
}

/**
 * Session-level advisory locks live as long as the connection that took them, so the lease is held on a connection
 * of its own: when the holder dies or its connection is cut, PostgreSQL releases the lock and a standby takes it.
 * The holder checks its connection every `checkMs` and stops counting itself the holder as soon as a check fails
 * or times out, which is before the server can notice a silent peer (the keepalives set below: ~11 s), so a
 * holder cut off from the store stops starting batches before anyone else can take over.
 */
export class AdvisoryLease implements ExportLease {
  private session: SqlSession | null = null;
  private timer: NodeJS.Timeout | null = null;
  private isHeld = false;
  private readonly key: number;

  constructor(
    private readonly db: SqlClient,
    private readonly cursorName: string,
    private readonly opts: AdvisoryLeaseOptions = {},
  ) {
    this.key = exportLockKey(cursorName);
  }

  get held(): boolean {
    return this.isHeld;
  }

  async acquire(): Promise<boolean> {
    if (this.isHeld) return true;
    if (!this.session) this.session = await this.open();
    const s = this.session;
    try {
      const [row] = await s.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS ok', [
        EXPORT_LOCK_CLASS,
        this.key,
      ]);
      if (!row?.ok) return false;
    } catch (err) {
      // The server may have granted a lock whose answer was lost: only closing the session surely frees it.
      this.drop(s);
      throw err;
    }
    if (this.session !== s) return false; // the connection ended while the lock was being taken
    this.isHeld = true;
    this.timer = setTimeout(() => void this.check(s), this.opts.checkMs ?? 1000);
    return true;
  }

  async release(): Promise<void> {
    this.isHeld = false;
    if (this.timer) clearTimeout(this.timer);
    const s = this.session;
    this.session = null;
    // Closing the session releases the lock with it, even one an unanswered query may have left behind.
    await s?.close();
  }

  private async open(): Promise<SqlSession> {
    if (!this.db.session) throw new TypeError('advisory export leases need a PostgreSQL store');
    const timeoutMs = this.opts.timeoutMs ?? 3000;
    const s = await this.db.session({
      applicationName: `pgwarden-export ${this.cursorName}`.slice(0, 63),
      queryTimeoutMs: timeoutMs,
    });
    s.ended.then((err) => this.lost(s, err));
    // The server only drops a holder that vanished without closing its socket (node loss, partition) once TCP says
    // the peer is gone; by default that takes hours. These make it ~11 s for this session alone (runtime-config-
    // connection.html#GUC-TCP-KEEPALIVES-IDLE); a server that refuses them keeps its own settings.
    await s
      .query(
        'SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3; SET tcp_user_timeout = 10000',
      )
      .catch(() => {});
    return s;
  }

  private async check(s: SqlSession): Promise<void> {
    if (this.session !== s || !this.isHeld) return;
    try {
      await s.query('SELECT 1');
    } catch (err) {
      this.lost(s, err as Error);
      return;
    }
    if (this.session === s && this.isHeld) this.timer = setTimeout(() => void this.check(s), this.opts.checkMs ?? 1000);
  }

  private lost(s: SqlSession, err: Error): void {
    if (this.session !== s) return;
    const wasHeld = this.isHeld;
    this.drop(s);
    if (wasHeld) this.opts.onLost?.(err);
  }

  private drop(s: SqlSession): void {
    this.isHeld = false;
    if (this.timer) clearTimeout(this.timer);
    if (this.session === s) this.session = null;
    void s.close();
  }
}
