import { type AuditEvent, indexedFields } from '../event.js';
import { CopyPayload } from './copy-in.js';

/**
 * COPY's binary format (https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.10): the signature,
 * int32 flags and int32 header-extension length, then per row an int16 field count and per field an int32 length
 * (-1 = NULL) and the value in the type's send/recv form; an int16 -1 ends the data. PostgreSQL then skips the text
 * input functions: no timestamp parsing, no array-literal parsing, no escape scanning.
 */
const SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');
const TEXT_OID = 25;
const COLUMNS = 14;
/** 2000-01-01T00:00:00Z, PostgreSQL's timestamp epoch, in Unix seconds. */
const PG_EPOCH_SECONDS = 946_684_800;
/**
 * Timestamps further than this from 2000 (about ±285 years) are left to the text path: within it the microsecond
 * count stays below 2^53 and so is exact as a double.
 */
const MAX_ABS_SECONDS = 9_000_000_000;
const TWO_32 = 2 ** 32;

/**
 * The only time form encoded here: RFC 3339 in UTC with at most 6 fraction digits, exactly what the sidecar writes
 * (`YYYY-MM-DDTHH:MM:SS[.ffffff]Z`, ASCII digits). PostgreSQL reads that text to the same microsecond (fractions of
 * ≤ 6 digits are exact, 'Z' fixes the zone); anything else (offsets, more digits, leap seconds) goes through its
 * text input instead.
 */
const MIN_TIME_LENGTH = 20; // without a fraction
const MAX_TIME_LENGTH = 27; // with 6 fraction digits

/** Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's days_from_civil). */
function daysFromCivil(y: number, m: number, d: number): number {
  const yy = m <= 2 ? y - 1 : y;
  const era = Math.floor(yy / 400);
  const yoe = yy - era * 400;
  const doy = Math.floor((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146_097 + doe - 719_468;
}

const DAYS_IN_MONTH = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
const isLeap = (y: number) => (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;

/** The value of the `n` ASCII digits of `s` from `at`, or -1 if one of them is not a digit. */
function digitsAt(s: string, at: number, n: number): number {
  let v = 0;
  for (let k = at; k < at + n; k++) {
    const c = s.charCodeAt(k) - 0x30;
    if (!(c >= 0 && c <= 9)) return -1;
    v = v * 10 + c;
  }
  return v;
}

/**
 * Microseconds since 2000-01-01 UTC (timestamptz's binary value, integer datetimes) of a time in the form above, or
 * undefined for any other text or an impossible date, which PostgreSQL's own input must judge. Read character by
 * character: a regular expression's match array and substrings were most of what a row cost to encode.
 */
export function pgTimestampMicros(text: string): number | undefined {
  const n = text.length;
  if (n < MIN_TIME_LENGTH || n > MAX_TIME_LENGTH || n === MIN_TIME_LENGTH + 1) return undefined;
  if (text.charCodeAt(4) !== 0x2d || text.charCodeAt(7) !== 0x2d || text.charCodeAt(10) !== 0x54) return undefined; // - - T
  if (text.charCodeAt(13) !== 0x3a || text.charCodeAt(16) !== 0x3a || text.charCodeAt(n - 1) !== 0x5a) return undefined; // : : Z
  const y = digitsAt(text, 0, 4);
  const mo = digitsAt(text, 5, 2);
  const d = digitsAt(text, 8, 2);
  const h = digitsAt(text, 11, 2);
  const mi = digitsAt(text, 14, 2);
  const s = digitsAt(text, 17, 2);
  if (y < 0 || mo < 0 || d < 0 || h < 0 || mi < 0 || s < 0) return undefined;
  let frac = 0;
  if (n > MIN_TIME_LENGTH) {
    const digits = n - MIN_TIME_LENGTH - 1;
    const f = text.charCodeAt(19) === 0x2e ? digitsAt(text, 20, digits) : -1; // .
    if (f < 0) return undefined;
    frac = f * 10 ** (6 - digits);
  }
  if (y < 1 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || s > 59) return undefined;
  if (d > DAYS_IN_MONTH[mo - 1] || (mo === 2 && d === 29 && !isLeap(y))) return undefined;
  const seconds = daysFromCivil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - PG_EPOCH_SECONDS;
  if (Math.abs(seconds) > MAX_ABS_SECONDS) return undefined;
  return seconds * 1_000_000 + frac;
}

const textOrNull = (v: unknown): v is string | null => v === null || typeof v === 'string';

/** A COPY … (FORMAT binary) payload of audit_events rows, framed as one CopyData message like CopyPayload. */
export class BinaryCopyPayload extends CopyPayload {
  constructor(sizeHint: number) {
    super(sizeHint + SIGNATURE.length + 10);
    this.reserve(SIGNATURE.length + 8);
    this.buf.set(SIGNATURE, this.len);
    this.len += SIGNATURE.length;
    this.len = this.buf.writeInt32BE(0, this.len); // flags: no OIDs
    this.len = this.buf.writeInt32BE(0, this.len); // no header extension
  }

  /**
   * Appends the row of `e` with `event` as the stored JSON (`utf8` when given, else `raw`), or returns false,
   * having appended nothing, when a value has no binary form here that is certain to equal what the text path
   * stores (then the whole batch goes as text).
   */
  row(e: AuditEvent, raw: string | undefined, utf8: Uint8Array | undefined): boolean {
    const micros = pgTimestampMicros(e.time);
    const seq = e.session.seq;
    const f = indexedFields(e);
    if (micros === undefined || !Number.isSafeInteger(seq)) return false;
    if (typeof e.id !== 'string' || typeof e.session.id !== 'string' || typeof e.type !== 'string') return false;
    if (typeof e.hash !== 'string' || !textOrNull(e.prevHash ?? null)) return false;
    if (!textOrNull(f.namespace) || !textOrNull(f.policy) || !textOrNull(f.identity)) return false;
    if (!textOrNull(f.kind) || !textOrNull(f.decision)) return false;
    this.reserve(2);
    this.len = this.buf.writeInt16BE(COLUMNS, this.len);
    this.value(e.id);
    this.int64(micros);
    this.value(e.session.id);
    this.int64(seq);
    this.value(e.type);
    this.value(f.namespace);
    this.value(f.policy);
    this.value(f.identity);
    this.value(f.kind);
    this.value(f.decision);
    this.textArray(f.tables);
    this.value(e.prevHash ?? null);
    this.value(e.hash);
    if (utf8) {
      this.reserve(4 + utf8.length);
      this.len = this.buf.writeInt32BE(utf8.length, this.len);
      this.buf.set(utf8, this.len);
      this.len += utf8.length;
    } else this.value(raw ?? '');
    return true;
  }

  /** Ends the data (the file trailer) before the payload is sent. */
  finish(): void {
    this.reserve(2);
    this.len = this.buf.writeInt16BE(-1, this.len);
  }

  /** One field: int32 length, then the UTF-8 bytes (textrecv); -1 for NULL. */
  value(s: string | null): void {
    if (s === null) {
      this.reserve(4);
      this.len = this.buf.writeInt32BE(-1, this.len);
      return;
    }
    this.reserve(4 + s.length * 3);
    const n = this.buf.write(s, this.len + 4);
    this.buf.writeInt32BE(n, this.len);
    this.len += 4 + n;
  }

  /** A length-prefixed int64 (int8recv, timestamptz_recv), from a safe integer split into two 32-bit halves. */
  private int64(v: number): void {
    this.reserve(12);
    const hi = Math.floor(v / TWO_32);
    this.len = this.buf.writeInt32BE(8, this.len);
    this.len = this.buf.writeInt32BE(hi, this.len);
    this.len = this.buf.writeUInt32BE(v - hi * TWO_32, this.len);
  }

  /**
   * text[] in array_recv's form: ndim, has-null flag, element type oid, per dimension size and lower bound (1),
   * then the elements as fields. No elements is ndim 0, the empty array the text literal '{}' gives.
   */
  private textArray(items: readonly string[]): void {
    const at = this.len;
    this.reserve(24);
    this.len += 4; // the field length, written once the elements are in
    this.len = this.buf.writeInt32BE(items.length === 0 ? 0 : 1, this.len);
    this.len = this.buf.writeInt32BE(0, this.len);
    this.len = this.buf.writeInt32BE(TEXT_OID, this.len);
    if (items.length > 0) {
      this.len = this.buf.writeInt32BE(items.length, this.len);
      this.len = this.buf.writeInt32BE(1, this.len);
      for (const s of items) this.value(s);
    }
    this.buf.writeInt32BE(this.len - at - 4, at);
  }
}
