import {
  type ColumnAction,
  type DetectorName,
  type MaskingPlan,
  maskAsciiInPlace,
  maskText,
  mightContainSecretBytes,
  type PlanField,
  scrubSecrets,
  TEXT_TYPES,
} from '@pgwarden/policy';
import type { RowTransformer } from '../proxy/hooks.js';

/** Counters the transformer bumps (audit `masking.cells`). */
export interface MaskingCounters {
  cells: number;
}

const DATA_ROW = 0x44;
const JSON_OID = 114;
const JSONB_OID = 3802;
/** int2, int4, int8, numeric: the `digits` strategy keeps their text form valid. */
const NUMERIC_TEXT = new Set([21, 23, 20, 1700]);
const FIRST_USER_OID = 16384;

/** Marks a cell already rewritten in place (same length). */
const IN_PLACE = Symbol('in-place');

/** undefined = unchanged; null = send SQL NULL; string / Buffer = the new value (strings are written as UTF-8). */
type CellResult = Buffer | string | null | undefined | typeof IN_PLACE;

/** Cells whose bytes are the value's text, so a same-length ASCII rewrite keeps them valid. */
function plainText(f: PlanField, strategy: string): boolean {
  if (f.typeOid === JSON_OID || f.typeOid === JSONB_OID || f.typeOid === 18) return false;
  if (TEXT_TYPES.has(f.typeOid)) return true;
  return f.format === 0 && (f.typeOid >= FIRST_USER_OID || (strategy === 'digits' && NUMERIC_TEXT.has(f.typeOid)));
}

/**
 * Value encodings: text format is the type's output function text; binary is its send function. For text-like
 * types (text, varchar, bpchar, name, json, xml) the binary form is the UTF-8 text itself; jsonb's is a version
 * byte (1) then the text. https://www.postgresql.org/docs/current/protocol-overview.html#PROTOCOL-FORMAT-CODES
 */
function textOf(f: PlanField, b: Buffer, start: number, end: number): string | undefined {
  if (f.format === 0) return b.toString('utf8', start, end);
  if (!TEXT_TYPES.has(f.typeOid) || f.typeOid === 18) return undefined;
  if (f.typeOid === JSONB_OID) return b[start] === 1 ? b.toString('utf8', start + 1, end) : undefined;
  return b.toString('utf8', start, end);
}

function encodeMasked(f: PlanField, value: string | null, strategy: string): CellResult {
  if (value === null) return null;
  if (f.typeOid === JSON_OID || f.typeOid === JSONB_OID) {
    const doc = JSON.stringify(value);
    return f.format === 1 && f.typeOid === JSONB_OID ? `\u0001${doc}` : doc;
  }
  if (TEXT_TYPES.has(f.typeOid) && f.typeOid !== 18) return value;
  // Other types: only where the masked text is still a valid value of the type, in text format.
  if (f.format === 0 && (f.typeOid >= FIRST_USER_OID || (strategy === 'digits' && NUMERIC_TEXT.has(f.typeOid))))
    return value;
  return null;
}

type CellFn = (b: Buffer, start: number, end: number) => CellResult;

/** The rewrite of one column, decided once per RowDescription (not per row). */
function compileCell(a: ColumnAction, f: PlanField, detectors: readonly DetectorName[]): CellFn {
  if (a.kind === 'scan') {
    return (b, start, end) => {
      // Most cells hold none of the detectors' trigger characters: decide that on the bytes, decode nothing.
      if (!mightContainSecretBytes(b, start, end)) return undefined;
      const text = textOf(f, b, start, end);
      if (text === undefined) return undefined;
      const out = scrubSecrets(text, detectors);
      if (out === text) return undefined;
      return f.format === 1 && f.typeOid === JSONB_OID ? `\u0001${out}` : out;
    };
  }
  const st = a.strategy;
  if (st.type === 'null') return () => null;
  // redact does not depend on the value: no need to decode it.
  if (st.type === 'redact' && f.format === 0) {
    const constant = encodeMasked(f, maskText('', st), st.type);
    const bytes = typeof constant === 'string' ? Buffer.from(constant, 'utf8') : constant;
    return () => bytes;
  }
  const inPlace = (st.type === 'partial' || st.type === 'digits') && plainText(f, st.type);
  return (b, start, end) => {
    if (inPlace && maskAsciiInPlace(b, start, end, st)) return IN_PLACE;
    const text = textOf(f, b, start, end);
    // A binary value of a type we cannot rewrite in place: NULL is the only safe replacement.
    if (text === undefined) return null;
    return encodeMasked(f, maskText(text, st), st.type);
  };
}

/**
 * Replacement rows are carved from one shared slab rather than allocated one by one; a slab is never written again
 * once handed out (the socket may still hold a slice of it), a full one is simply dropped for a new one.
 */
const SLAB_SIZE = 64 * 1024;
let slab = Buffer.allocUnsafeSlow(SLAB_SIZE);
let slabPos = 0;

function carve(size: number): Buffer {
  if (size > SLAB_SIZE / 4) return Buffer.allocUnsafeSlow(size);
  if (slabPos + size > SLAB_SIZE) {
    slab = Buffer.allocUnsafeSlow(SLAB_SIZE);
    slabPos = 0;
  }
  const out = slab.subarray(slabPos, slabPos + size);
  // 8-byte aligned starts, as Buffer's own pool does.
  slabPos = (slabPos + size + 7) & ~7;
  return out;
}

function malformed(): Error {
  return new RangeError('DataRow column lengths run past the end of the message');
}

/**
 * A RowTransformer for one RowDescription. It walks the column length words up to the last column the plan names
 * (no decoding) and only decodes those cells. Masked values of the same byte length are written over the original
 * in place (the proxy forwards that memory within its run of untouched bytes: no allocation, no extra write);
 * otherwise the whole replacement message is built in one slab slice. DataRow layout:
 * https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-DATAROW
 */
export function createRowTransformer(
  plan: MaskingPlan,
  fields: readonly PlanField[],
  detectors: readonly DetectorName[],
  counters: MaskingCounters = { cells: 0 },
): RowTransformer {
  const cells = plan.actions.map((a, i) => (a ? compileCell(a, fields[i], detectors) : undefined));
  const counted = plan.actions.map((a) => a?.kind === 'mask');
  let last = -1;
  for (let i = 0; i < cells.length; i++) if (cells[i] !== undefined) last = i;
  // Replacements of the current row, reused across rows (a transformer runs synchronously, one row at a time).
  const at = new Int32Array(cells.length);
  const until = new Int32Array(cells.length);
  const values: Array<Buffer | string | null> = new Array(cells.length).fill(null);

  /** Rewrites the row whose column count word is at `p` and which ends at `end`; returns the new message or undefined. */
  const rewrite = (b: Buffer, p: number, end: number): Buffer | undefined => {
    if (p + 2 > end) throw malformed();
    const n = (b[p] << 8) | b[p + 1];
    const stop = Math.min(n - 1, last);
    let off = p + 2;
    let k = 0;
    for (let i = 0; i <= stop; i++) {
      if (off + 4 > end) throw malformed();
      const len = (b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3];
      const start = off + 4;
      const stopAt = len < 0 ? start : start + len;
      if (stopAt > end) throw malformed();
      const cell = cells[i];
      if (cell !== undefined && len >= 0) {
        const r = cell(b, start, stopAt);
        if (r !== undefined) {
          if (counted[i]) counters.cells++;
          if (r === IN_PLACE) {
            // Rewritten in place by maskAsciiInPlace.
          } else if (typeof r === 'string' && r.length <= len && Buffer.byteLength(r, 'utf8') === len) {
            // Same byte length (partial, digits, detector stars over ASCII): overwrite in place.
            b.write(r, start, len, 'utf8');
          } else {
            at[k] = off;
            until[k] = stopAt;
            values[k] = r;
            k++;
          }
        }
      }
      off = stopAt;
    }
    if (k === 0) return undefined;
    let size = 5 + end - p;
    for (let j = 0; j < k; j++) {
      const v = values[j];
      size +=
        (v === null ? 0 : typeof v === 'string' ? Buffer.byteLength(v, 'utf8') : v.length) - (until[j] - at[j] - 4);
    }
    const out = carve(size);
    out[0] = DATA_ROW;
    out.writeInt32BE(size - 1, 1);
    let w = 5;
    let copied = p;
    for (let j = 0; j < k; j++) {
      w += b.copy(out, w, copied, at[j]);
      const v = values[j];
      values[j] = null;
      const lenAt = w;
      w += 4;
      if (typeof v === 'string') w += out.write(v, w, 'utf8');
      else if (v !== null) w += v.copy(out, w);
      out.writeInt32BE(v === null ? -1 : w - lenAt - 4, lenAt);
      copied = until[j];
    }
    w += b.copy(out, w, copied, end);
    if (w !== size) throw new Error('masked DataRow size mismatch');
    return out;
  };

  const transform = (body: Buffer): Buffer => {
    const out = rewrite(body, 0, body.length);
    return out === undefined ? body : out.subarray(5);
  };
  // DataRow message, type byte and length word included: buf[start, end).
  transform.span = (buf: Buffer, start: number, end: number): Buffer | undefined => rewrite(buf, start + 5, end);
  return transform;
}
