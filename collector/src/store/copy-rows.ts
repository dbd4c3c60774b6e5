import { BinaryCopyPayload } from './copy-binary.js';
import type { IngestItem } from './ingest-writer.js';

/**
 * The rows one `COPY audit_events` of a batch sends: repeats of a row's primary key within the batch dropped, and
 * the binary payload, if every row has a binary form (copy-binary.ts), written as the rows are added. Pure CPU work
 * with no connection involved, so the ingest queue builds it part by part as it parses a batch, while the previous
 * batch is still in PostgreSQL, and the transaction then only sends it.
 */
export class CopyRows {
  /** Ids of the rows kept, in the order added. */
  readonly ids = new Set<string>();
  readonly rows: IngestItem[] = [];
  /** An upper estimate of the text payload's size (for the text format's buffer). */
  size = 0;
  private readonly keys = new Set<string>();
  private binary: BinaryCopyPayload | null;
  private added = 0;
  private claimed = false;

  /** `binary` false: the rows go in COPY's text format whatever they hold. */
  constructor(binary = true, sizeHint = 0) {
    this.binary = binary ? new BinaryCopyPayload(sizeHint) : null;
  }

  /** The rows of `items`, built at once (what a transaction does when nothing was built ahead). */
  static of(items: readonly IngestItem[], binary: boolean): CopyRows {
    let hint = 0;
    for (const it of items) hint += (it.utf8?.length ?? it.raw.length) + 256;
    const rows = new CopyRows(binary, hint);
    rows.add(items);
    return rows;
  }

  /** Appends the next items of the batch, in batch order. */
  add(items: readonly IngestItem[]): void {
    this.added += items.length;
    for (const it of items) {
      const e = it.event;
      // The primary key, as the conflict target of the INSERT path (same text of time; an equal instant written
      // differently still conflicts in PostgreSQL, and then the INSERT path takes over).
      const key = `${e.session.id}\u0000${e.session.seq}\u0000${e.time}`;
      if (this.keys.has(key)) continue;
      this.keys.add(key);
      this.ids.add(e.id);
      this.rows.push(it);
      // `raw` is read only without bytes: an item may decode it on demand.
      this.size += (it.utf8?.length ?? it.raw.length) + 256;
      if (this.binary && !this.binary.row(e, it.utf8 ? undefined : it.raw, it.utf8)) {
        this.binary.release();
        this.binary = null;
      }
    }
  }

  /**
   * Hands the rows to the one COPY that sends them: the binary payload is sent from its buffer and that buffer is
   * reused once written, so a second COPY (a retried transaction) must build its own. Undefined when already
   * claimed, or when built from a different number of items than `count` (not this batch).
   */
  claim(count: number): { rows: CopyRows; binary: BinaryCopyPayload | null } | undefined {
    if (this.claimed || count !== this.added) return undefined;
    this.claimed = true;
    this.binary?.finish();
    return { rows: this, binary: this.binary };
  }

  /** Gives the payload's buffer back when no COPY will send it (the batch went another way). */
  discard(): void {
    if (this.claimed) return;
    this.claimed = true;
    this.binary?.release();
  }
}
