import type { Connection } from 'pg';

/**
 * `COPY … FROM STDIN` of an in-memory payload as a node-postgres submittable (the driver's hook for custom
 * protocol flows): Query, then on CopyInResponse one CopyData and CopyDone, then CommandComplete "COPY n"
 * (https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-COPY). The payload is already in memory,
 * so a stream (pg-copy-streams) would only add machinery.
 */
export class CopyIn {
  callback?: (err: Error | null, rows?: number) => void;
  private rows = 0;

  constructor(
    readonly text: string,
    private readonly data: Buffer,
  ) {}

  submit(connection: Connection): void {
    connection.query(this.text);
  }

  handleCopyInResponse(connection: Connection & { sendCopyFromChunk(b: Buffer): void; endCopyFrom(): void }): void {
    connection.sendCopyFromChunk(this.data);
    connection.endCopyFrom();
  }

  handleCommandComplete(msg: { text: string }): void {
    this.rows = Number(/^COPY (\d+)/.exec(msg.text)?.[1] ?? 0);
  }

  handleReadyForQuery(): void {
    this.callback?.(null, this.rows);
  }

  /** The driver clears the active query before this, so ReadyForQuery after an error never reaches us. */
  handleError(err: Error): void {
    this.callback?.(err);
  }

  // COPY FROM sends none of these; present because the driver calls whatever the active query offers.
  handleRowDescription(): void {}
  handleDataRow(): void {}
  handleEmptyQuery(): void {}
  handleCopyData(): void {}
}

const SPECIAL = /[\\\n\r\t]/;
const SPECIAL_ALL = /[\\\n\r\t]/g;
const ESCAPES: Record<string, string> = { '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/**
 * One column value in COPY's text format: `\N` for NULL; backslash, newline, carriage return and tab escaped
 * (https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.2), so no value can end a row or the data.
 */
export function copyField(v: string | number | null): string {
  if (v === null) return '\\N';
  if (typeof v === 'number') return String(v);
  return SPECIAL.test(v) ? v.replace(SPECIAL_ALL, (c) => ESCAPES[c]) : v;
}
