import { isUtf8 } from 'node:buffer';
import * as crypto from 'node:crypto';

/**
 * The schema-v1 hash of an event read from the UTF-8 bytes it arrived as, when those bytes provably are the
 * canonical encoding the producer hashed: the sidecar publishes canonicalJson(event without hash) with
 * `,"hash":"<hex>"` appended as the last member (`sealEventToJson` in @pgwarden/policy). One pass over the bytes
 * replaces re-serialising the parsed event (canonical-text.ts), the largest CPU item of ingest after parsing.
 *
 * Contract: the caller's event is `JSON.parse` of exactly these bytes (decoded as UTF-8), so the bytes are valid
 * JSON and the parsed value holds only JSON values. Proof obligation: a returned hash equals `hashEvent(event)`,
 * so ingest and a later full verification (which re-encodes) never disagree. It holds because every accepted
 * text T before the hash member satisfies canonicalJson(JSON.parse(T + '}')) === T + '}':
 * - valid UTF-8 without a BOM, so decoding is lossless and yields well-formed UTF-16 (no lone surrogates);
 * - no byte outside strings but JSON punctuation, number characters and the literals true/false/null, so no
 *   whitespace;
 * - strings only with the escapes JSON.stringify writes (\" \\ \b \f \n \r \t, and \u00xx in lower-case hex for the
 *   other control characters), so re-quoting a parsed string reproduces its text;
 * - numbers only where String(Number(token)) === token (canonicalJson writes String(n));
 * - keys ASCII without escapes and strictly ascending in every object (byte order = UTF-16 code-unit order for
 *   ASCII, and strict order rules out the duplicates JSON.parse would collapse), and no top-level `hash` before the
 *   final member, which is then the parsed event's `hash`.
 * Anything else returns undefined and the caller re-encodes: rejecting is always safe, accepting must be sound.
 */
export function hashOfCanonicalUtf8(utf8: Uint8Array, claimed: unknown): string | undefined {
  if (typeof claimed !== 'string' || claimed.length !== 64) return undefined;
  const end = utf8.length - HASH_MEMBER_LENGTH;
  if (end < 2 || utf8[0] !== LBRACE || !isHashMember(utf8, end, claimed)) return undefined;
  if (!canonicalBody(utf8, end) || !isUtf8(utf8)) return undefined;
  // The canonical text is the bytes up to the hash member, closed again: copied whole (no view of the input to
  // allocate), then cut to length with a plain Uint8Array view, cheaper to make than a Buffer's.
  if (scratch.length < utf8.length) scratch = new Uint8Array(Math.max(utf8.length, scratch.length * 2));
  scratch.set(utf8);
  scratch[end] = RBRACE;
  return sha256Hex(new Uint8Array(scratch.buffer, 0, end + 1));
}

const LBRACE = 0x7b;
const RBRACE = 0x7d;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;
const COMMA = 0x2c;
const HASH_PREFIX = Buffer.from(',"hash":"');
/** `,"hash":"` + 64 hex digits + `"}`. */
const HASH_MEMBER_LENGTH = HASH_PREFIX.length + 64 + 2;
/** Deeper nesting is legal JSON but no audit event has it; such text takes the re-encoding path. */
const MAX_DEPTH = 64;

let scratch = new Uint8Array(4096);
const keyStart = new Int32Array(MAX_DEPTH);
const keyEnd = new Int32Array(MAX_DEPTH);

/** The bytes from `end` are `,"hash":"<claimed, lower-case hex>"}` and nothing after. */
function isHashMember(b: Uint8Array, end: number, claimed: string): boolean {
  for (let k = 0; k < HASH_PREFIX.length; k++) if (b[end + k] !== HASH_PREFIX[k]) return false;
  const h = end + HASH_PREFIX.length;
  for (let k = 0; k < 64; k++) {
    const c = claimed.charCodeAt(k);
    if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66)) || b[h + k] !== c) return false;
  }
  return b[h + 64] === QUOTE && b[h + 65] === RBRACE;
}

/** Whether b[0, end) is a canonical object body still open at the top level (see the proof above). */
function canonicalBody(b: Uint8Array, end: number): boolean {
  let depth = 0;
  let i = 0;
  while (i < end) {
    const c = b[i];
    if (c === QUOTE) {
      const start = i + 1;
      let seen = 0; // OR of the bytes: bit 7 set if any is non-ASCII
      let escaped = false;
      let j = start;
      for (;;) {
        let d = 0;
        while (j < end) {
          d = b[j];
          if (d === QUOTE || d === BACKSLASH) break;
          seen |= d;
          j++;
        }
        if (j >= end) return false;
        if (d === QUOTE) break;
        const n = escapeLength(b, j + 1);
        if (n === 0) return false;
        escaped = true;
        j += n + 1;
      }
      const plain = !escaped && seen < 0x80; // usable as a key
      i = j + 1;
      if (b[i] === COLON) {
        if (!plain || depth === 0 || keyStart[depth - 1] === -2) return false;
        const slot = depth - 1;
        if (keyStart[slot] >= 0 && compareBytes(b, keyStart[slot], keyEnd[slot], start, j) >= 0) return false;
        if (depth === 1 && isHashKey(b, start, j)) return false;
        keyStart[slot] = start;
        keyEnd[slot] = j;
        i++;
      }
    } else if (c === LBRACE || c === LBRACKET) {
      if (depth === MAX_DEPTH) return false;
      keyStart[depth] = c === LBRACE ? -1 : -2; // -1: object without a key yet; -2: array
      depth++;
      i++;
    } else if (c === RBRACE || c === RBRACKET) {
      if (--depth === 0) return false; // the top-level object must stay open until the hash member
      i++;
    } else if (c === COMMA) {
      i++;
    } else if (c === 0x74 /* true */ || c === 0x6e /* null */) {
      i += 4;
    } else if (c === 0x66 /* false */) {
      i += 5;
    } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      let j = i + 1;
      while (j < end && isNumberByte(b[j])) j++;
      if (!canonicalNumber(b, i, j)) return false;
      i = j;
    } else {
      return false; // whitespace, or anything JSON.stringify would not write
    }
  }
  return depth === 1;
}

/** Length of the escape after a backslash at `at` if JSON.stringify writes it, else 0. */
function escapeLength(b: Uint8Array, at: number): number {
  switch (b[at]) {
    case QUOTE:
    case BACKSLASH:
    case 0x62: // b
    case 0x66: // f
    case 0x6e: // n
    case 0x72: // r
    case 0x74: {
      // t
      return 1;
    }
    case 0x75: {
      // \u00xx: only control characters without a short form, in lower-case hex
      if (b[at + 1] !== 0x30 || b[at + 2] !== 0x30) return 0;
      const hi = b[at + 3];
      const lo = b[at + 4];
      const loVal = lo >= 0x30 && lo <= 0x39 ? lo - 0x30 : lo >= 0x61 && lo <= 0x66 ? lo - 0x61 + 10 : -1;
      if ((hi !== 0x30 && hi !== 0x31) || loVal < 0) return 0;
      const v = (hi - 0x30) * 16 + loVal;
      return v === 8 || v === 9 || v === 10 || v === 12 || v === 13 ? 0 : 5;
    }
    default:
      return 0;
  }
}

const isNumberByte = (d: number) =>
  (d >= 0x30 && d <= 0x39) || d === 0x2e || d === 0x65 || d === 0x45 || d === 0x2b || d === 0x2d;

/** Integers below 10^15 without a leading zero print as themselves; anything else is checked by round trip. */
function canonicalNumber(b: Uint8Array, from: number, to: number): boolean {
  const neg = b[from] === 0x2d;
  const first = neg ? from + 1 : from;
  let digitsOnly = to - first <= 15 && to > first;
  for (let k = first; digitsOnly && k < to; k++) digitsOnly = b[k] >= 0x30 && b[k] <= 0x39;
  if (digitsOnly) {
    if (b[first] !== 0x30) return true;
    return to - first === 1 && !neg; // "0" is canonical, "-0" and "01" are not
  }
  let s = '';
  for (let k = from; k < to; k++) s += String.fromCharCode(b[k]);
  return String(Number(s)) === s;
}

/** Byte-wise order of b[a0, a1) and b[c0, c1): negative, zero or positive. */
function compareBytes(b: Uint8Array, a0: number, a1: number, c0: number, c1: number): number {
  const n = Math.min(a1 - a0, c1 - c0);
  for (let k = 0; k < n; k++) {
    const d = b[a0 + k] - b[c0 + k];
    if (d !== 0) return d;
  }
  return a1 - a0 - (c1 - c0);
}

const isHashKey = (b: Uint8Array, from: number, to: number) =>
  to - from === 4 && b[from] === 0x68 && b[from + 1] === 0x61 && b[from + 2] === 0x73 && b[from + 3] === 0x68;

const oneShot = (crypto as { hash?: (alg: string, data: Uint8Array, enc: 'hex') => string }).hash;
const sha256Hex: (b: Uint8Array) => string = oneShot
  ? (b) => oneShot('sha256', b, 'hex')
  : (b) => crypto.createHash('sha256').update(b).digest('hex');
