/**
 * Content detectors: find secrets in free text by shape, with checksums where the format has one so that
 * ordinary numbers are not mangled. Every detector returns the spans it would mask; scrubbing replaces each span
 * with the same number of `*` so binary layouts (array elements, jsonb, COPY fields) keep their lengths.
 */

import { DETECTORS } from '../api/schema-parts.js';

/** The detectors a MaskingRule may name; the policy schema's list is the one source. */
export const DETECTOR_NAMES = DETECTORS;
export type DetectorName = (typeof DETECTOR_NAMES)[number];

export interface Span {
  start: number;
  end: number;
  detector: DetectorName;
}

/** Luhn (ISO/IEC 7812-1 annex B) over a string of digits. */
export function luhnValid(digits: string): boolean {
  let sum = 0;
  let double = false;
  for (let i = digits.length - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return false;
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double = !double;
  }
  return digits.length > 0 && sum % 10 === 0;
}

/** IBAN check digits (ISO 13616-1): move the first four characters to the end, letters → 10..35, mod 97 = 1. */
export function ibanValid(raw: string): boolean {
  const iban = raw.replace(/[\s-]/g, '').toUpperCase();
  if (!/^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$/.test(iban)) return false;
  const moved = iban.slice(4) + iban.slice(0, 4);
  let rem = 0;
  for (const ch of moved) {
    const c = ch.charCodeAt(0);
    const v = c >= 65 ? c - 55 : c - 48;
    rem = v >= 10 ? (rem * 100 + v) % 97 : (rem * 10 + v) % 97;
  }
  return rem === 1;
}

/** SSA rules: area not 000, 666 or 9xx; group not 00; serial not 0000. https://www.ssa.gov/employer/randomization.html */
export function usSsnValid(digits: string): boolean {
  if (!/^\d{9}$/.test(digits)) return false;
  const area = digits.slice(0, 3);
  return (
    area !== '000' && area !== '666' && area[0] !== '9' && digits.slice(3, 5) !== '00' && digits.slice(5) !== '0000'
  );
}

interface DetectorDef {
  name: DetectorName;
  /** Global regex; matches are candidates. */
  pattern: RegExp;
  /** Optional validation of a candidate (checksum, ranges). */
  valid?: (match: string) => boolean;
  /** Greedy candidates may run into following text: also try shorter prefixes ending in an alphanumeric. */
  shrink?: boolean;
}

/** The longest prefix of `m` (ending in a letter or digit) that passes `valid`. */
function longestValidPrefix(m: string, valid: (s: string) => boolean): string | undefined {
  for (let end = m.length; end > 0; end--) {
    if (!/[A-Za-z0-9]/.test(m[end - 1])) continue;
    const p = m.slice(0, end);
    if (valid(p)) return p;
  }
  return undefined;
}

const onlyDigits = (s: string): string => s.replace(/\D/g, '');

const DEFS: readonly DetectorDef[] = [
  {
    name: 'private-key',
    // PEM (RFC 7468) private key blocks, including ones cut short (no END line) and ones whose newlines were
    // escaped as `\n` by COPY or JSON.
    pattern:
      /-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|$)/gi,
  },
  {
    name: 'jwt',
    // A JWS compact serialisation (RFC 7515 §7.1): base64url header starting `{"` (→ `eyJ`), payload, signature.
    // Case-insensitive: an upper- or lower-cased token is no longer valid, but it is still the secret's text.
    pattern: /\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*/gi,
  },
  {
    name: 'aws-access-key',
    // Access key ids: https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_identifiers.html#identifiers-unique-ids
    pattern: /\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|A3T[A-Z0-9])[A-Z0-9]{16}\b/gi,
  },
  {
    name: 'email',
    pattern: /[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}/g,
  },
  {
    name: 'iban',
    pattern: /\b[A-Za-z]{2}[0-9]{2}(?:[ -]?[A-Za-z0-9]){11,30}\b/g,
    valid: ibanValid,
    shrink: true,
  },
  {
    name: 'credit-card',
    // 13–19 digits, optionally grouped by spaces or hyphens, passing Luhn.
    pattern: /\b\d(?:[ -]?\d){12,18}\b/g,
    valid: (m) => {
      const d = onlyDigits(m);
      return d.length >= 13 && d.length <= 19 && luhnValid(d);
    },
    shrink: true,
  },
  {
    name: 'us-ssn',
    // Only the grouped forms (`123-45-6789`, `123 45 6789`): bare nine-digit numbers are mostly ids.
    pattern: /\b\d{3}([- ])\d{2}\1\d{4}\b/g,
    valid: (m) => usSsnValid(onlyDigits(m)),
  },
  {
    name: 'phone',
    // E.164 (`+` then up to 15 digits, optionally grouped) and common national forms: NANP `(415) 555-2671`,
    // `415-555-2671`, `415.555.2671`; trunk-prefixed European forms `020 7946 0958`, `06-12345678`.
    pattern:
      /(?:\+[1-9]\d{0,3}(?:[ .-]?\(?\d{1,4}\)?){1,5}(?:[ .-]?\d{2,4})|\(\d{3}\) ?\d{3}[ .-]\d{4}\b|\b\d{3}[.-]\d{3}[.-]\d{4}\b|\b0\d{1,4}[ -]\d{3,4}[ -]?\d{3,4}\b|\b0\d{1,3}-\d{6,8}\b)/g,
    valid: (m) => {
      const n = onlyDigits(m).length;
      return n >= 7 && n <= 15;
    },
  },
];

export function isDetectorName(v: string): v is DetectorName {
  return (DETECTOR_NAMES as readonly string[]).includes(v);
}

/** All detector spans in `text`, merged where they overlap. */
export function findSecrets(text: string, detectors: readonly DetectorName[]): Span[] {
  if (detectors.length === 0 || text.length === 0) return [];
  const spans: Span[] = [];
  for (const def of DEFS) {
    if (!detectors.includes(def.name)) continue;
    def.pattern.lastIndex = 0;
    for (const m of text.matchAll(def.pattern)) {
      if (m[0].length === 0) continue;
      let hit: string | undefined = m[0];
      if (def.valid && !def.valid(hit)) hit = def.shrink ? longestValidPrefix(hit, def.valid) : undefined;
      if (hit) spans.push({ start: m.index, end: m.index + hit.length, detector: def.name });
    }
  }
  if (spans.length < 2) return spans;
  spans.sort((a, b) => a.start - b.start || b.end - a.end);
  const merged: Span[] = [spans[0]];
  for (const s of spans.slice(1)) {
    const last = merged[merged.length - 1];
    if (s.start < last.end) last.end = Math.max(last.end, s.end);
    else merged.push({ ...s });
  }
  return merged;
}

/**
 * Cheap pre-check: every detector needs a digit, `@`, `-----` or `eyJ`/`A..A` key prefix. Text with none of
 * these triggers (most names, words, enum values) skips the regexes.
 */
export function mightContainSecret(text: string): boolean {
  return /[0-9@]|-----|eyJ|A[KSBCGIRNS3]/i.test(text);
}

/** Second letters after `a` that the `A[KSBCGIRNS3]` trigger of mightContainSecret accepts (either case). */
const AWS_SECOND = new Uint8Array(128);
for (const c of 'KSBCGIRN3') {
  AWS_SECOND[c.charCodeAt(0)] = 1;
  AWS_SECOND[c.toLowerCase().charCodeAt(0)] = 1;
}

/**
 * mightContainSecret over UTF-8 bytes, before anything is decoded: false only where the decoded text would give
 * false too. Every trigger is ASCII, UTF-8 never encodes other characters with bytes below 0x80, and the regex
 * (no `u` flag) folds case within ASCII only.
 */
export function mightContainSecretBytes(buf: Uint8Array, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const c = buf[i];
    if ((c >= 48 && c <= 57) || c === 64) return true;
    const lc = c | 0x20;
    if (c === 45) {
      if (i + 4 < end && buf[i + 1] === 45 && buf[i + 2] === 45 && buf[i + 3] === 45 && buf[i + 4] === 45) return true;
    } else if (lc === 101) {
      if (i + 2 < end && (buf[i + 1] | 0x20) === 121 && (buf[i + 2] | 0x20) === 106) return true;
    } else if (lc === 97 && i + 1 < end) {
      const n = buf[i + 1];
      if (n < 128 && AWS_SECOND[n] === 1) return true;
    }
  }
  return false;
}

/** Replaces every detected span with `*` of the same length (length-preserving, so binary layouts survive). */
export function scrubSecrets(text: string, detectors: readonly DetectorName[]): string {
  if (detectors.length === 0 || !mightContainSecret(text)) return text;
  const spans = findSecrets(text, detectors);
  if (spans.length === 0) return text;
  let out = '';
  let at = 0;
  for (const s of spans) {
    out += text.slice(at, s.start) + '*'.repeat(s.end - s.start);
    at = s.end;
  }
  return out + text.slice(at);
}
