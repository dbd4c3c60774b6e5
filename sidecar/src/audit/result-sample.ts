import { type AuditResultSample, DETECTOR_NAMES, scrubSecrets } from '@pgwarden/policy';
import type { RowField, RowTransformer, StatementResult, Verdict } from '../proxy/hooks.js';
import type { StatementResultExtras } from './audit-recorder.js';

/** The policy's `audit.captureResults`: none (no result block), summary (tag/rows/bytes), rows (plus a sample). */
export type CaptureResults = 'none' | 'summary' | 'rows';

/**
 * The first rows of one result set, as the client received them. It sees a DataRow body only after the inner
 * transformer (masking) has run, so a masked column's raw value is never in the sample. Values are decoded up to
 * `maxBytes` (UTF-8 bytes of the recorded values); after that rows are only counted, so a big result costs one
 * comparison per row.
 */
class ResultSampler {
  rows: (string | null)[][] = [];
  /** Rows seen since the last take(). */
  seen = 0;
  private bytes = 0;
  private full = false;

  constructor(
    readonly columns: string[],
    private readonly binary: boolean[],
    private readonly maxBytes: number,
  ) {}

  add(body: Buffer): void {
    this.seen++;
    if (this.full) return;
    const row = decodeDataRow(body, this.binary);
    if (row === undefined) {
      this.full = true; // a body this code cannot walk: stop sampling rather than guess
      return;
    }
    let size = 0;
    for (const v of row) if (v !== null) size += Buffer.byteLength(v);
    if (this.bytes + size > this.maxBytes) {
      this.full = true;
      return;
    }
    this.bytes += size;
    this.rows.push(row);
  }

  /** The sample so far; a portal resumed by a later Execute starts a fresh one. */
  take(): AuditResultSample {
    const sample = { columns: this.columns, rows: this.rows, truncated: this.rows.length < this.seen };
    this.rows = [];
    this.seen = 0;
    this.bytes = 0;
    this.full = false;
    return sample;
  }
}

/**
 * DataRow body: Int16 column count, then per column Int32 length (-1 = NULL) and the value bytes
 * (https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-DATAROW).
 * Text values are scrubbed by every content detector: audit storage has more readers than the agent's session.
 */
function decodeDataRow(body: Buffer, binary: boolean[]): (string | null)[] | undefined {
  if (body.length < 2) return undefined;
  const n = body.readInt16BE(0);
  const row: (string | null)[] = [];
  let at = 2;
  for (let i = 0; i < n; i++) {
    if (at + 4 > body.length) return undefined;
    const len = body.readInt32BE(at);
    at += 4;
    if (len === -1) {
      row.push(null);
      continue;
    }
    if (len < 0 || at + len > body.length) return undefined;
    row.push(
      binary[i]
        ? `\\x${body.toString('hex', at, at + len)}`
        : scrubSecrets(body.toString('utf8', at, at + len), DETECTOR_NAMES),
    );
    at += len;
  }
  return row;
}

/** Max samplers remembered per verdict: a prepared statement re-run many times must not grow without bound. */
const MAX_PENDING = 16;

/**
 * Per session: wraps planRows' transformer with a sampler and hands the samples to the statement's results when
 * statementDone reports them. Samplers are keyed by verdict (the proxy passes the same verdict object to planRows
 * and in the StatementRecord).
 */
export class ResultSamples {
  private readonly pending = new WeakMap<Verdict, ResultSampler[]>();

  /** Returns the transformer the proxy uses: `inner` first (masking), then the sampler on its output. */
  plan(fields: RowField[], verdict: Verdict, inner: RowTransformer | undefined, maxBytes: number): RowTransformer {
    const sampler = new ResultSampler(
      fields.map((f) => f.name),
      fields.map((f) => f.format === 1),
      maxBytes,
    );
    let list = this.pending.get(verdict);
    if (!list) {
      list = [];
      this.pending.set(verdict, list);
    }
    list.push(sampler);
    if (list.length > MAX_PENDING) list.shift();
    const register = () => {
      const l = this.pending.get(verdict);
      if (l && !l.includes(sampler)) l.push(sampler);
    };
    if (inner === undefined)
      return (body) => {
        if (sampler.seen === 0) register();
        sampler.add(body);
        return body;
      };
    return (body) => {
      const out = inner(body);
      if (sampler.seen === 0) register();
      sampler.add(out);
      return out;
    };
  }

  /**
   * Attaches samples to the results that returned rows, in order (each RowDescription starts one result set, and
   * results are reported in the order PostgreSQL completed them). Results without rows get no sample.
   */
  attach(verdict: Verdict, results: StatementResult[]): void {
    const list = this.pending.get(verdict);
    if (!list) return;
    const withRows = list.filter((s) => s.seen > 0);
    // Samplers without rows yet may belong to a portal whose Execute has not run: keep them.
    this.pending.set(
      verdict,
      list.filter((s) => s.seen === 0),
    );
    let j = 0;
    for (const r of results) {
      if (r.rows === 0 || j >= withRows.length) continue;
      (r as StatementResultExtras).sample = withRows[j++].take();
    }
  }
}
