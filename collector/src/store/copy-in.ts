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

/** Whether a string holds a character COPY's text format must escape. */
export const needsCopyEscape = (s: string) => SPECIAL.test(s);

const BACKSLASH = 0x5c;
const NEWLINE = 0x0a;
const RETURN = 0x0d;
const TAB = 0x09;
const BYTE_ESCAPES: Record<number, number> = { [BACKSLASH]: BACKSLASH, [NEWLINE]: 0x6e, [RETURN]: 0x72, [TAB]: 0x74 };

/**
 * A COPY text-format payload written straight into one growing buffer: text parts are UTF-8 encoded in place,
 * and byte fields that need no escaping (the usual event JSON) are copied as they are, never decoded.
 */
export class CopyPayload {
  private buf: Buffer;
  private len = 0;

  constructor(sizeHint: number) {
    this.buf = Buffer.allocUnsafe(Math.max(1024, sizeHint));
  }

  /** Appends text that is already in COPY's text format (escaped fields, tabs, `\N`). */
  text(s: string): void {
    this.reserve(s.length * 3);
    this.len += this.buf.write(s, this.len);
  }

  /** Appends UTF-8 bytes as one field, escaped as `copyField` escapes text. */
  bytes(b: Uint8Array): void {
    const clean =
      b.indexOf(BACKSLASH) === -1 && b.indexOf(NEWLINE) === -1 && b.indexOf(RETURN) === -1 && b.indexOf(TAB) === -1;
    this.reserve(clean ? b.length : b.length * 2);
    if (clean) {
      this.buf.set(b, this.len);
      this.len += b.length;
      return;
    }
    const out = this.buf;
    let n = this.len;
    for (let i = 0; i < b.length; i++) {
      const c = b[i];
      const e = BYTE_ESCAPES[c];
      if (e === undefined) out[n++] = c;
      else {
        out[n++] = BACKSLASH;
        out[n++] = e;
      }
    }
    this.len = n;
  }

  endRow(): void {
    this.reserve(1);
    this.buf[this.len++] = NEWLINE;
  }

  /** The payload so far (a view, valid until the next append). */
  data(): Buffer {
    return this.buf.subarray(0, this.len);
  }

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + n));
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }
}
