import { createHmac, createSecretKey, type KeyObject } from 'node:crypto';

export type StrategyType = 'redact' | 'partial' | 'hash' | 'null' | 'email' | 'digits';

/** A strategy with its options resolved (the HMAC key is the bytes of the referenced Secret key). */
export interface CompiledStrategy {
  type: StrategyType;
  keepFirst: number;
  keepLast: number;
  /** HMAC-SHA256 key for `hash` and `digits`. */
  key: Buffer;
}

export const REDACTED = '****';

/** Characters a partial mask must hide at least, so a short value is never shown almost whole. */
const MIN_HIDDEN = 4;

/**
 * Per key: the key as a KeyObject (imported once, not per HMAC) and recent HMACs. Result columns repeat values
 * (statuses, zero balances) and an HMAC costs microseconds. Short ASCII values are also looked up by a number built
 * from their bytes, so the in-place path needs no string for them.
 */
interface KeyState {
  key: KeyObject;
  macs: Map<string, Buffer>;
  short: Map<number, Buffer>;
  /** `hash` results (hex text) of recent values. */
  hex: Map<string, string>;
  /** The last short value (numeric key) and its HMAC: a column often repeats one value row after row. */
  lastShort: number;
  lastMac: Buffer | undefined;
}
const keyStates = new WeakMap<Buffer, KeyState>();
const MEMO_SIZE = 4096;
/** Values up to this many bytes get a numeric memo key: 1 then one base-256 digit per byte stays below 2^53. */
const SHORT_KEY_BYTES = 6;

function keyState(key: Buffer): KeyState {
  let k = keyStates.get(key);
  if (k === undefined) {
    k = {
      key: createSecretKey(key),
      macs: new Map(),
      short: new Map(),
      hex: new Map(),
      lastShort: 0,
      lastMac: undefined,
    };
    keyStates.set(key, k);
  }
  return k;
}

function hmacOf(k: KeyState, value: string): Buffer {
  let mac = k.macs.get(value);
  if (mac === undefined) {
    mac = createHmac('sha256', k.key).update(value, 'utf8').digest();
    if (k.macs.size >= MEMO_SIZE) k.macs.clear();
    if (value.length <= 256) k.macs.set(value, mac);
  }
  return mac;
}

function hmac(key: Buffer, value: string): Buffer {
  return hmacOf(keyState(key), value);
}

function hashText(key: Buffer, value: string): string {
  const k = keyState(key);
  let out = k.hex.get(value);
  if (out === undefined) {
    out = hmacOf(k, value).toString('hex', 0, 16);
    if (k.hex.size >= MEMO_SIZE) k.hex.clear();
    if (value.length <= 256) k.hex.set(value, out);
  }
  return out;
}

/**
 * A DataView of the last buffer a cell came from: cells of one network chunk share it, so scans read four bytes at
 * a time without a view per cell.
 */
let viewBuf: Uint8Array | undefined;
let view: DataView = new DataView(new ArrayBuffer(0));
/** Below this many bytes a plain byte loop is as fast. */
const WORDS_FROM = 32;

function viewOf(buf: Uint8Array): DataView {
  if (buf !== viewBuf) {
    view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    viewBuf = buf;
  }
  return view;
}

/** No byte of `buf[start, end)` has its high bit set. */
function isAscii(buf: Uint8Array, start: number, end: number): boolean {
  let bits = 0;
  let i = start;
  if (end - start >= WORDS_FROM) {
    const v = viewOf(buf);
    for (; i + 8 <= end; i += 8) bits |= v.getInt32(i) | v.getInt32(i + 4);
  }
  for (; i < end; i++) bits |= buf[i];
  return (bits & 0x80808080) === 0;
}

/** The engine's typed-array fill (Buffer#fill re-validates its arguments on every call). */
const fillBytes = Uint8Array.prototype.fill;

/** Writes `*` over `buf[start, end)`. */
function fillStars(buf: Uint8Array, start: number, end: number): void {
  if (end - start >= WORDS_FROM) {
    fillBytes.call(buf, 0x2a, start, end);
    return;
  }
  for (let i = start; i < end; i++) buf[i] = 0x2a;
}

const STARS: string[] = [];
/** `*` × n, cached for the lengths results usually have. */
function stars(n: number): string {
  if (n > 512) return '*'.repeat(n);
  let s = STARS[n];
  if (s === undefined) {
    s = '*'.repeat(n);
    STARS[n] = s;
  }
  return s;
}

function hasSurrogate(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdfff) return true;
  }
  return false;
}

function partial(value: string, first: number, last: number): string {
  // Fast path for the common case of one UTF-16 unit per character (no surrogate pairs).
  if (!hasSurrogate(value)) {
    const hidden = value.length - first - last;
    if (hidden < MIN_HIDDEN) return stars(Math.max(value.length, MIN_HIDDEN));
    return value.slice(0, first) + stars(hidden) + value.slice(value.length - last);
  }
  const chars = Array.from(value);
  if (chars.length - first - last < MIN_HIDDEN) return stars(Math.max(chars.length, MIN_HIDDEN));
  return (
    chars.slice(0, first).join('') + stars(chars.length - first - last) + (last > 0 ? chars.slice(-last).join('') : '')
  );
}

/**
 * Format-preserving: every digit becomes a different digit, letters become x/X, punctuation stays. The
 * replacement digits come from HMAC(key, value), so one value always maps to the same pseudonym.
 */
function digits(value: string, key: Buffer): string {
  const mac = hmac(key, value);
  let i = 0;
  let out = '';
  for (const ch of value) {
    const c = ch.charCodeAt(0);
    if (c >= 48 && c <= 57) {
      // (d + 1 + h mod 9) mod 10 is never d: no digit survives in place.
      out += String.fromCharCode(48 + ((c - 48 + 1 + (mac[i++ % mac.length] % 9)) % 10));
    } else if (c < 0x80) {
      // ASCII: the same answer as the Unicode classes below, without a regex per character.
      out += c >= 65 && c <= 90 ? 'X' : c >= 97 && c <= 122 ? 'x' : ch;
    } else if (/\p{Lu}/u.test(ch)) out += 'X';
    else if (/\p{L}/u.test(ch)) out += 'x';
    else out += ch;
  }
  return out;
}

/**
 * A host name the `email` strategy may keep: dot-separated labels of letters, digits and hyphens. Anything else after
 * the '@' (spaces, a card number glued on, free text) is not a domain, and keeping it could keep the secret.
 */
const DOMAIN = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$/;
/** Six or more digits in a row in a "domain" look like an account, card or phone number, not a host name. */
const LONG_DIGITS = /\d{6}/;

function email(value: string): string {
  const at = value.lastIndexOf('@');
  if (at <= 0 || at === value.length - 1) return REDACTED;
  const domain = value.slice(at + 1);
  if (domain.length > 253 || !DOMAIN.test(domain) || LONG_DIGITS.test(domain)) return REDACTED;
  return `${REDACTED}@${domain}`;
}

/** Masks one text value. `null` means "send SQL NULL". */
export function maskText(value: string, s: CompiledStrategy): string | null {
  switch (s.type) {
    case 'redact':
      return REDACTED;
    case 'partial':
      return partial(value, s.keepFirst, s.keepLast);
    case 'hash':
      return hashText(s.key, value);
    case 'null':
      return null;
    case 'email':
      return email(value);
    case 'digits':
      return digits(value, s.key);
  }
}

/**
 * Masks an ASCII value in place in `buf[start, end)` when the strategy keeps its byte length (partial, digits),
 * with exactly the result maskText would give. Returns false (nothing written) when it cannot: non-ASCII bytes,
 * a strategy that changes the length, or a value too short for partial.
 */
export function maskAsciiInPlace(buf: Buffer, start: number, end: number, s: CompiledStrategy): boolean {
  if (s.type === 'partial') {
    const hide = end - s.keepLast;
    if (hide - start - s.keepFirst < MIN_HIDDEN || !isAscii(buf, start, end)) return false;
    fillStars(buf, start + s.keepFirst, hide);
    return true;
  }
  if (s.type !== 'digits') return false;
  const k = keyState(s.key);
  let mac: Buffer | undefined;
  if (end - start <= SHORT_KEY_BYTES) {
    let n = 1;
    for (let i = start; i < end; i++) {
      const c = buf[i];
      if (c >= 0x80) return false;
      n = n * 256 + c;
    }
    mac = n === k.lastShort ? k.lastMac : k.short.get(n);
    if (mac === undefined) {
      mac = hmacOf(k, buf.toString('latin1', start, end));
      if (k.short.size >= MEMO_SIZE) k.short.clear();
      k.short.set(n, mac);
    }
    k.lastShort = n;
    k.lastMac = mac;
  } else {
    if (!isAscii(buf, start, end)) return false;
    mac = hmacOf(k, buf.toString('latin1', start, end));
  }
  let j = 0;
  for (let i = start; i < end; i++) {
    const c = buf[i];
    if (c >= 48 && c <= 57) buf[i] = 48 + ((c - 48 + 1 + (mac[j++ % mac.length] % 9)) % 10);
    else if (c >= 65 && c <= 90)
      buf[i] = 88; // X
    else if (c >= 97 && c <= 122) buf[i] = 120; // x
  }
  return true;
}
