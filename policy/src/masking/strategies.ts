import { createHmac } from 'node:crypto';

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

/** Recent HMACs per key: result columns repeat values (statuses, zero balances), and HMAC costs ~1 µs. */
const memo = new WeakMap<Buffer, Map<string, Buffer>>();
const MEMO_SIZE = 4096;

function hmac(key: Buffer, value: string): Buffer {
  let m = memo.get(key);
  if (!m) {
    m = new Map();
    memo.set(key, m);
  }
  let mac = m.get(value);
  if (!mac) {
    mac = createHmac('sha256', key).update(value, 'utf8').digest();
    if (m.size >= MEMO_SIZE) m.clear();
    if (value.length <= 256) m.set(value, mac);
  }
  return mac;
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
    } else if (/\p{Lu}/u.test(ch)) out += 'X';
    else if (/\p{L}/u.test(ch)) out += 'x';
    else out += ch;
  }
  return out;
}

function email(value: string): string {
  const at = value.lastIndexOf('@');
  if (at <= 0 || at === value.length - 1) return REDACTED;
  return `${REDACTED}@${value.slice(at + 1)}`;
}

/** Masks one text value. `null` means "send SQL NULL". */
export function maskText(value: string, s: CompiledStrategy): string | null {
  switch (s.type) {
    case 'redact':
      return REDACTED;
    case 'partial':
      return partial(value, s.keepFirst, s.keepLast);
    case 'hash':
      return hmac(s.key, value).subarray(0, 16).toString('hex');
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
  if (s.type !== 'partial' && s.type !== 'digits') return false;
  for (let i = start; i < end; i++) if (buf[i] >= 0x80) return false;
  const len = end - start;
  if (s.type === 'partial') {
    if (len - s.keepFirst - s.keepLast < MIN_HIDDEN) return false;
    buf.fill(0x2a, start + s.keepFirst, end - s.keepLast);
    return true;
  }
  const mac = hmac(s.key, buf.toString('latin1', start, end));
  let k = 0;
  for (let i = start; i < end; i++) {
    const c = buf[i];
    if (c >= 48 && c <= 57) buf[i] = 48 + ((c - 48 + 1 + (mac[k++ % mac.length] % 9)) % 10);
    else if (c >= 65 && c <= 90)
      buf[i] = 88; // X
    else if (c >= 97 && c <= 122) buf[i] = 120; // x
  }
  return true;
}
