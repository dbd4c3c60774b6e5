import type { SqlRunner } from './sql-client.js';

const DAY_MS = 86_400_000;

/** UTC day key (YYYYMMDD) of an instant: partitions are whole UTC days. */
export function dayKey(time: string | number | Date): string {
  // Fast path for the schema's own format (UTC, "Z"): the day is the first ten characters.
  if (typeof time === 'string' && time.length >= 20 && time.endsWith('Z') && time[10] === 'T')
    return time.slice(0, 4) + time.slice(5, 7) + time.slice(8, 10);
  return new Date(time).toISOString().slice(0, 10).replaceAll('-', '');
}

export function partitionName(day: string): string {
  return `audit_events_p${day}`;
}

function dayStart(day: string): Date {
  return new Date(`${day.slice(0, 4)}-${day.slice(4, 6)}-${day.slice(6, 8)}T00:00:00Z`);
}

/**
 * Creates the day partitions `days` need, remembering which exist. Runs outside the ingest transaction: creating
 * a partition locks the parent (https://www.postgresql.org/docs/current/sql-createtable.html#SQL-CREATETABLE-PARTITION),
 * and a short transaction of its own keeps that lock brief.
 */
export class PartitionManager {
  private readonly known = new Set<string>();

  constructor(private readonly db: SqlRunner) {}

  async ensure(days: Iterable<string>): Promise<void> {
    for (const day of days) {
      if (this.known.has(day)) continue;
      if (!/^\d{8}$/.test(day)) throw new Error(`bad partition day ${day}`);
      const from = dayStart(day);
      const to = new Date(from.getTime() + DAY_MS);
      try {
        await this.db.query(
          `CREATE TABLE IF NOT EXISTS ${partitionName(day)} PARTITION OF audit_events FOR VALUES FROM ('${from.toISOString()}') TO ('${to.toISOString()}')`,
        );
      } catch (err) {
        // Another collector created it between our IF NOT EXISTS check and the create (42P07 duplicate_table).
        if ((err as { code?: string }).code !== '42P07') throw err;
      }
      this.known.add(day);
    }
  }

  /** Lists existing day partitions (oldest first). */
  async list(): Promise<string[]> {
    const rows = await this.db.query<{ name: string }>(
      `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
       WHERE i.inhparent = 'audit_events'::regclass ORDER BY c.relname`,
    );
    return rows.map((r) => r.name).filter((n) => /^audit_events_p\d{8}$/.test(n));
  }

  /**
   * Retention: drops every partition whose whole day ends before `now - retentionDays`. Dropping a partition is
   * the cheap, lock-light way to delete a day of events (no VACUUM debt).
   */
  async dropOlderThan(retentionDays: number, now = Date.now()): Promise<string[]> {
    const cutoff = now - retentionDays * DAY_MS;
    const dropped: string[] = [];
    for (const name of await this.list()) {
      const day = name.slice('audit_events_p'.length);
      if (dayStart(day).getTime() + DAY_MS <= cutoff) {
        await this.db.query(`DROP TABLE IF EXISTS ${name}`);
        this.known.delete(day);
        dropped.push(name);
      }
    }
    return dropped;
  }
}
