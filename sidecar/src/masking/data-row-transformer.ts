import {
  type ColumnAction,
  type DetectorName,
  type MaskingPlan,
  maskAsciiInPlace,
  maskText,
  type PlanField,
  scrubSecrets,
  TEXT_TYPES,
} from '@pgwarden/policy';
import type { RowTransformer } from '../proxy/hooks.js';

/** Counters the transformer bumps (audit `masking.cells`). */
export interface MaskingCounters {
  cells: number;
}

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
      const text = textOf(f, b, start, end);
      if (text === undefined) return undefined;
      const out = scrubSecrets(text, detectors);
      if (out === text) return undefined;
      return f.format === 1 && f.typeOid === JSONB_OID ? `\u0001${out}` : out;
    };
  }
  const st = a.strategy;
  if (st.type === 'null') return () => null;
  const inPlace = (st.type === 'partial' || st.type === 'digits') && plainText(f, st.type);
  // redact does not depend on the value: no need to decode it.
  const constant = st.type === 'redact' && f.format === 0 ? encodeMasked(f, maskText('', st), st.type) : undefined;
  return (b, start, end) => {
    if (inPlace && maskAsciiInPlace(b, start, end, st)) return IN_PLACE;
    if (constant !== undefined) return constant;
    const text = textOf(f, b, start, end);
    // A binary value of a type we cannot rewrite in place: NULL is the only safe replacement.
    if (text === undefined) return null;
    return encodeMasked(f, maskText(text, st), st.type);
  };
}

/**
 * A RowTransformer for one RowDescription. It walks the column length words (no decoding) and only decodes the
 * cells the plan names. Masked values of the same byte length are written over the original in place and the same
 * Buffer is returned (the proxy forwards that memory); otherwise one new body is allocated. DataRow layout:
 * https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-DATAROW
 */
export function createRowTransformer(
  plan: MaskingPlan,
  fields: readonly PlanField[],
  detectors: readonly DetectorName[],
  counters: MaskingCounters = { cells: 0 },
): RowTransformer {
  const cells = plan.actions.map((a, i) => (a ? compileCell(a, fields[i], detectors) : undefined));
  const isMask = plan.actions.map((a) => a?.kind === 'mask');
  // Replacements of the current row, reused across rows (a transformer serves one result stream, synchronously).
  const at: number[] = [];
  const until: number[] = [];
  const values: Array<Buffer | string | null> = [];
  return (body: Buffer): Buffer => {
    const n = body.readInt16BE(0);
    let off = 2;
    at.length = 0;
    for (let i = 0; i < n; i++) {
      const len = body.readInt32BE(off);
      const end = len < 0 ? off + 4 : off + 4 + len;
      const cell = cells[i];
      if (cell !== undefined && len >= 0) {
        const r = cell(body, off + 4, end);
        if (r !== undefined) {
          if (isMask[i]) counters.cells++;
          if (r === IN_PLACE) {
            // Rewritten in place by maskAsciiInPlace.
          } else if (typeof r === 'string' && r.length <= len && Buffer.byteLength(r, 'utf8') === len) {
            // Same byte length (partial, digits, detector stars over ASCII): overwrite in place. The row keeps its
            // layout, the proxy forwards it within its run of untouched bytes: no allocation, no extra write.
            body.write(r, off + 4, len, 'utf8');
          } else {
            values[at.length] = r;
            until[at.length] = end;
            at.push(off);
          }
        }
      }
      off = end;
    }
    if (at.length === 0) return body;
    // One allocation for the new row: untouched spans are copied, replaced cells written in place.
    let size = body.length;
    for (let k = 0; k < at.length; k++) {
      const v = values[k];
      size +=
        (v == null ? 0 : typeof v === 'string' ? Buffer.byteLength(v, 'utf8') : v.length) - (until[k] - at[k] - 4);
    }
    const out = Buffer.allocUnsafe(size);
    let w = 0;
    let copied = 0;
    for (let k = 0; k < at.length; k++) {
      w += body.copy(out, w, copied, at[k]);
      const v = values[k];
      const lenAt = w;
      w += 4;
      if (typeof v === 'string') w += out.write(v, w, 'utf8');
      else if (v) w += v.copy(out, w);
      out.writeInt32BE(v == null ? -1 : w - lenAt - 4, lenAt);
      copied = until[k];
    }
    body.copy(out, w, copied);
    return out;
  };
}
