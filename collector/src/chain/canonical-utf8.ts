import { isUtf8 } from 'node:buffer';
import * as crypto from 'node:crypto';

/**
 * The schema-v1 hash of an event read from the UTF-8 bytes it arrived as, when those bytes provably are the
 * canonical encoding the producer hashed: the sidecar publishes canonicalJson(event without hash) with
 * `,"hash":"<hex>"` appended as the last member (`sealEventToJson` in @pgwarden/policy). One pass over the bytes
 * replaces re-serialising the parsed event (canonical-text.ts), the largest CPU item of ingest after parsing.
 *
 * Contract: `event` is `JSON.parse` of exactly these bytes (decoded as UTF-8); the caller need not have parsed
 * them, since accepted bytes are checked to be valid JSON here (canonical-event.ts relies on that). Proof
 * obligation: a returned hash equals `hashEvent(event)`, so ingest and a later full verification (which re-encodes)
 * never disagree. It holds because every accepted text T before the hash member satisfies
 * canonicalJson(JSON.parse(T + '}')) === T + '}':
 * - valid JSON by the grammar (RFC 8259), checked token by token;
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
  if (!canonicalBody(utf8, end, null) || !isUtf8(utf8)) return undefined;
  return hashClosedAt(utf8, end);
}

/**
 * Told about every key and value `canonicalBody` passes, with `depth` the nesting of the object or array holding it
 * (1 = the top-level object). String positions exclude the quotes.
 */
export interface CanonicalSink {
  key(depth: number, start: number, end: number): void;
  string(depth: number, start: number, end: number, escaped: boolean, ascii: boolean): void;
  number(depth: number, from: number, to: number): void;
  /** `true`, `false` or `null`, by first byte. */
  literal(depth: number, first: number): void;
  /** An object or array opens inside the container at `depth`. */
  open(depth: number, object: boolean): void;
}

/**
 * hashOfCanonicalUtf8 for bytes whose claimed hash is not known yet: the hash member's digits are only required to
 * be 64 lower-case hex digits, and `sink` is told every key and value of the body as the proof pass reads it.
 */
export function canonicalEventHash(utf8: Uint8Array, sink: CanonicalSink): string | undefined {
  const end = utf8.length - HASH_MEMBER_LENGTH;
  if (end < 2 || utf8[0] !== LBRACE || !isHashMemberBytes(utf8, end)) return undefined;
  if (!canonicalBody(utf8, end, sink) || !isUtf8(utf8)) return undefined;
  return hashClosedAt(utf8, end);
}

/** Where the 64 hex digits of the hash member start, for bytes `canonicalEventHash` accepted. */
export const hashDigitsAt = (utf8: Uint8Array) => utf8.length - 66;

function hashClosedAt(utf8: Uint8Array, end: number): string {
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

/** As isHashMember, with the digits read from the bytes: 64 lower-case hex digits. */
function isHashMemberBytes(b: Uint8Array, end: number): boolean {
  for (let k = 0; k < HASH_PREFIX.length; k++) if (b[end + k] !== HASH_PREFIX[k]) return false;
  const h = end + HASH_PREFIX.length;
  for (let k = 0; k < 64; k++) {
    const c = b[h + k];
    if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return false;
  }
  return b[h + 64] === QUOTE && b[h + 65] === RBRACE;
}

// What the grammar allows next (RFC 8259 §2-5, without whitespace): the parser state of the innermost container.
const EXPECT_VALUE = 0;
const EXPECT_VALUE_OR_CLOSE = 1; // just after `[`
const EXPECT_KEY = 2;
const EXPECT_KEY_OR_CLOSE = 3; // just after `{`
const EXPECT_COMMA_OR_CLOSE = 4; // after a member or element

/**
 * Whether b[0, end) is a canonical object body still open at the top level, after at least one member (see the
 * proof above). It checks the JSON grammar itself (every token where the grammar allows it, literals spelled out,
 * no raw control character in a string), so accepted bytes are valid JSON without a JSON.parse of them.
 */
function canonicalBody(b: Uint8Array, end: number, sink: CanonicalSink | null): boolean {
  let depth = 0;
  let i = 0;
  let expect = EXPECT_VALUE;
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
          // One table look-up per ordinary byte; the rare ones are sorted out below.
          if (STRING_BYTE[d] !== 0) {
            if (d === QUOTE || d === BACKSLASH) break;
            if (d < 0x20) return false; // JSON strings hold control characters only escaped
            seen = 0x80;
          }
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
      if (expect === EXPECT_KEY || expect === EXPECT_KEY_OR_CLOSE) {
        if (b[i] !== COLON || !plain) return false;
        const slot = depth - 1;
        if (keyStart[slot] >= 0 && compareBytes(b, keyStart[slot], keyEnd[slot], start, j) >= 0) return false;
        if (depth === 1 && isHashKey(b, start, j)) return false;
        keyStart[slot] = start;
        keyEnd[slot] = j;
        sink?.key(depth, start, j);
        expect = EXPECT_VALUE;
        i++;
      } else if (expect === EXPECT_VALUE || expect === EXPECT_VALUE_OR_CLOSE) {
        sink?.string(depth, start, j, escaped, seen < 0x80);
        expect = EXPECT_COMMA_OR_CLOSE;
      } else return false;
    } else if (c === LBRACE || c === LBRACKET) {
      if (depth === MAX_DEPTH || (expect !== EXPECT_VALUE && expect !== EXPECT_VALUE_OR_CLOSE)) return false;
      if (depth === 0 && i !== 0) return false; // one top-level value
      sink?.open(depth, c === LBRACE);
      keyStart[depth] = c === LBRACE ? -1 : -2; // -1: object without a key yet; -2: array
      expect = c === LBRACE ? EXPECT_KEY_OR_CLOSE : EXPECT_VALUE_OR_CLOSE;
      depth++;
      i++;
    } else if (c === RBRACE || c === RBRACKET) {
      const array = keyStart[depth - 1] === -2;
      if (array !== (c === RBRACKET)) return false;
      const closable = array ? EXPECT_VALUE_OR_CLOSE : EXPECT_KEY_OR_CLOSE;
      if (expect !== closable && expect !== EXPECT_COMMA_OR_CLOSE) return false;
      if (--depth === 0) return false; // the top-level object must stay open until the hash member
      expect = EXPECT_COMMA_OR_CLOSE;
      i++;
    } else if (c === COMMA) {
      if (expect !== EXPECT_COMMA_OR_CLOSE) return false;
      expect = keyStart[depth - 1] === -2 ? EXPECT_VALUE : EXPECT_KEY;
      i++;
    } else {
      if ((expect !== EXPECT_VALUE && expect !== EXPECT_VALUE_OR_CLOSE) || depth === 0) return false;
      if (c === 0x74 /* true */ || c === 0x6e /* null */ || c === 0x66 /* false */) {
        const word = c === 0x74 ? TRUE : c === 0x6e ? NULL : FALSE;
        if (i + word.length > end) return false;
        for (let k = 1; k < word.length; k++) if (b[i + k] !== word[k]) return false;
        sink?.literal(depth, c);
        i += word.length;
      } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
        let j = i + 1;
        while (j < end && isNumberByte(b[j])) j++;
        if (!canonicalNumber(b, i, j)) return false;
        sink?.number(depth, i, j);
        i = j;
      } else {
        return false; // whitespace, or anything JSON.stringify would not write
      }
      expect = EXPECT_COMMA_OR_CLOSE;
    }
  }
  // The hash member follows a member of the top-level object.
  return depth === 1 && expect === EXPECT_COMMA_OR_CLOSE;
}

/** Bytes a string scan must stop at: the quote, the backslash, control characters and non-ASCII. */
const STRING_BYTE = new Uint8Array(256);
for (let d = 0; d < 256; d++) STRING_BYTE[d] = d === QUOTE || d === BACKSLASH || d < 0x20 || d >= 0x80 ? 1 : 0;

const TRUE = Buffer.from('true');
const FALSE = Buffer.from('false');
const NULL = Buffer.from('null');

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
