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

function partial(value: string, first: number, last: number): string {
  // Fast path for the common case of one UTF-16 unit per character (no surrogate pairs).
  if (!/[\uD800-\uDFFF]/.test(value)) {
    const hidden = value.length - first - last;
    if (hidden < MIN_HIDDEN) return '*'.repeat(Math.max(value.length, MIN_HIDDEN));
    return value.slice(0, first) + '*'.repeat(hidden) + value.slice(value.length - last);
  }
  const chars = Array.from(value);
  if (chars.length - first - last < MIN_HIDDEN) return '*'.repeat(Math.max(chars.length, MIN_HIDDEN));
  return (
    chars.slice(0, first).join('') +
    '*'.repeat(chars.length - first - last) +
    (last > 0 ? chars.slice(-last).join('') : '')
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
