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
  private sent = false;

  constructor(
    readonly text: string,
    private readonly data: Buffer | CopyPayload,
  ) {}

  submit(connection: Connection): void {
    connection.query(this.text);
  }

  handleCopyInResponse(
    connection: Connection & {
      stream: { writable: boolean; write(b: Buffer, cb: () => void): boolean };
      sendCopyFromChunk(b: Buffer): void;
      endCopyFrom(): void;
    },
  ): void {
    this.sent = true;
    if (this.data instanceof CopyPayload) {
      // The CopyData message is already framed in the payload's buffer: written as is, not copied into the
      // driver's serializer (a fresh buffer of the payload's size per batch).
      const payload = this.data;
      if (connection.stream.writable) connection.stream.write(payload.message(), () => payload.release());
    } else connection.sendCopyFromChunk(this.data);
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
    if (!this.sent && this.data instanceof CopyPayload) this.data.release();
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

/** CopyData: message type 'd', then an int32 length counting itself and the data. */
const COPY_DATA = 0x64;
const HEADER = 5;
/** A payload buffer larger than this is not kept for the next batch. */
const MAX_SPARE = 16 * 1024 * 1024;
/** The buffer of the last payload whose socket write completed, reused by the next one. */
let spare: Buffer | null = null;

/**
 * A COPY text-format payload written straight into one growing buffer, framed as the CopyData message that carries
 * it (https://www.postgresql.org/docs/current/protocol-message-formats.html): text parts are UTF-8 encoded in place,
 * and byte fields that need no escaping (the usual event JSON) are copied as they are, never decoded. The buffer is
 * reused batch after batch once its write completed (`release`): allocating a megabyte or two per batch cost page
 * faults and, as external memory, full garbage collections.
 */
export class CopyPayload {
  protected buf: Buffer;
  protected len = HEADER;

  constructor(sizeHint: number) {
    const want = Math.max(1024, sizeHint + HEADER);
    if (spare !== null && spare.length >= want) {
      this.buf = spare;
      spare = null;
    } else this.buf = Buffer.allocUnsafe(want);
  }

  /** Appends text that is already in COPY's text format (escaped fields, tabs, `\N`). */
  text(s: string): void {
    this.reserve(s.length * 3 + 1);
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

  /**
   * Appends one column value and the tab after it, escaped as `copyField` escapes it. Short ASCII text (every
   * indexed column of an event) is copied character by character: cheaper than building the row as a string.
   */
  field(v: string | null): void {
    if (v === null) {
      this.reserve(3);
      this.buf[this.len++] = BACKSLASH;
      this.buf[this.len++] = 0x4e; // N
      this.buf[this.len++] = TAB;
      return;
    }
    const n = v.length;
    this.reserve(n * 2 + 1);
    const out = this.buf;
    let at = this.len;
    for (let k = 0; k < n; k++) {
      const c = v.charCodeAt(k);
      if (c >= 0x80) {
        this.text(copyField(v));
        this.buf[this.len++] = TAB;
        return;
      }
      const e = BYTE_ESCAPES[c];
      if (e === undefined) out[at++] = c;
      else {
        out[at++] = BACKSLASH;
        out[at++] = e;
      }
    }
    out[at++] = TAB;
    this.len = at;
  }

  endRow(): void {
    this.reserve(1);
    this.buf[this.len++] = NEWLINE;
  }

  /** The payload so far (a view, valid until the next append or `release`). */
  data(): Buffer {
    return this.buf.subarray(HEADER, this.len);
  }

  /** The payload framed as one CopyData message (a view, valid until the next append or `release`). */
  message(): Buffer {
    this.buf[0] = COPY_DATA;
    this.buf.writeInt32BE(this.len - 1, 1);
    return this.buf.subarray(0, this.len);
  }

  /** Nothing reads the buffer any more (its write completed): the next payload may reuse it. */
  release(): void {
    if (this.buf.length <= MAX_SPARE && (spare === null || spare.length < this.buf.length)) spare = this.buf;
  }

  protected reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + n));
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }
}
