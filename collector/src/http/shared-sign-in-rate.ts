import { CollectorError } from '../errors.js';
import type { SqlRunner } from '../store/sql-client.js';
import { DEFAULT_SIGN_IN_RATE, SignInRate, type SignInRateOptions } from './sign-in-rate.js';

/** The bucket of the row being updated, refilled up to now (in SET every `b.` is the row as it was). */
const REFILLED = 'least($2::float8, b.tokens + greatest(0, extract(epoch FROM now() - b.at)::float8) * $3::float8)';

/** Clients the table keeps at most besides those with a full bucket (which the sweep forgets first). */
const MAX_CLIENTS = 100_000;

/**
 * The sign-in limit of one client across every replica on the store: a token bucket per client key in
 * `collector_sign_in_buckets`, taken by one `INSERT … ON CONFLICT DO UPDATE`. PostgreSQL locks the row for the
 * update, so concurrent takes (on one replica or several) apply one after another, each to the bucket the previous
 * one left: N replicas allow a client the limit once, not N times. Time is the store's clock, the one all replicas
 * share; a statement whose `now()` (its transaction's start) is older than the row's is counted as no time passed.
 *
 * A per-replica bucket in memory (SignInRate, same limits) answers first: a client it refuses was refused by the
 * shared bucket too (every request that reached this replica also reached the store's), so a flood past the limit
 * costs the store nothing, and what reaches it is at most the limit per replica.
 */
export class SharedSignInRate {
  private readonly local: SignInRate;

  constructor(
    private readonly db: SqlRunner,
    private readonly opts: SignInRateOptions = DEFAULT_SIGN_IN_RATE,
  ) {
    this.local = new SignInRate(opts);
  }

  /** Takes one token for `key`: 0 when granted, else the seconds until the next one. COLLECTOR_STORE on failure. */
  async take(key: string): Promise<number> {
    const wait = this.local.take(key);
    if (wait > 0) return wait;
    const perS = this.opts.perMinute / 60;
    let rows: { tokens: number; granted: boolean }[];
    try {
      rows = await this.db.query<{ tokens: number; granted: boolean }>(
        `INSERT INTO collector_sign_in_buckets AS b (client, tokens, at, granted)
         VALUES ($1, $2::float8 - 1, now(), true)
         ON CONFLICT (client) DO UPDATE SET
           tokens = ${REFILLED} - CASE WHEN ${REFILLED} >= 1 THEN 1 ELSE 0 END,
           granted = ${REFILLED} >= 1,
           at = greatest(b.at, now())
         RETURNING tokens, granted`,
        [key, this.opts.burst, perS],
      );
    } catch (err) {
      throw new CollectorError('COLLECTOR_STORE', `sign-in rate: ${(err as Error).message}`, { cause: err });
    }
    const [row] = rows;
    if (!row || row.granted) return 0;
    return Math.max(1, Math.ceil((1 - Number(row.tokens)) / perS));
  }

  /** Forgets clients whose bucket has refilled (they would start full anyway), and the oldest past the cap. */
  async sweep(): Promise<number> {
    const full = await this.db.query(
      `DELETE FROM collector_sign_in_buckets
       WHERE tokens + greatest(0, extract(epoch FROM now() - at)::float8) * $2::float8 >= $1::float8 RETURNING 1`,
      [this.opts.burst, this.opts.perMinute / 60],
    );
    const old = await this.db.query(
      `DELETE FROM collector_sign_in_buckets WHERE client IN
         (SELECT client FROM collector_sign_in_buckets ORDER BY at DESC OFFSET $1) RETURNING 1`,
      [MAX_CLIENTS],
    );
    return full.length + old.length;
  }
}
