import * as crypto from 'node:crypto';

/**
 * The schema-v1 hash of an event computed from the JSON text it arrived as, when that text provably is the
 * canonical encoding the producer hashed. The sidecar sends exactly that: the canonical JSON of the event without
 * `hash` (keys sorted by UTF-16 code units, no whitespace, JSON.stringify strings and numbers), with
 * `,"hash":"<hex>"` appended as the last member (`sealEventToJson` in @pgwarden/policy). Hashing those bytes
 * directly spares re-encoding the parsed event, the largest CPU item of ingest after parsing itself.
 *
 * Proof obligation: the result must equal `hashEvent(value)` whenever it is returned, so ingest and a later
 * full verification (which re-encodes) can never disagree. It holds because:
 * - `JSON.stringify(value) === raw` shows the text has no whitespace, no duplicate keys (a repeated key would be
 *   written once), and strings and numbers exactly as JSON.stringify writes them, which is how canonicalJson
 *   writes them too (it uses JSON.stringify for strings and keys, String() for finite numbers: the same
 *   Number::toString, ECMA-262 §21.1.3.6; JSON.parse yields no undefined, functions or non-finite numbers);
 * - JSON.stringify writes members in Object.keys order, so checking that order is sorted by code units in every
 *   object (the top level up to a final `hash` member) shows it is canonicalJson's order. Integer-like keys,
 *   which JavaScript lists first, fail the check whenever that is not also code-unit order;
 * - removing the final `,"hash":"<value>"` member then leaves exactly canonicalJson(value without hash).
 * Anything else returns undefined and the caller re-encodes (the safe path).
 */
export function hashOfCanonicalText(raw: string, value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null || Object.getPrototypeOf(value) !== Object.prototype)
    return undefined;
  const hash = (value as { hash?: unknown }).hash;
  if (typeof hash !== 'string' || !/^[0-9a-f]{64}$/.test(hash)) return undefined;
  const suffix = `,"hash":"${hash}"}`;
  if (!raw.endsWith(suffix)) return undefined;
  const keys = Object.keys(value);
  if (keys[keys.length - 1] !== 'hash' || !sortedExceptLast(keys)) return undefined;
  const rec = value as Record<string, unknown>;
  for (let i = 0; i < keys.length - 1; i++) if (!nestedSorted(rec[keys[i]])) return undefined;
  if (JSON.stringify(value) !== raw) return undefined;
  return sha256Hex(`${raw.slice(0, raw.length - suffix.length)}}`);
}

function sortedExceptLast(keys: string[]): boolean {
  for (let i = 1; i < keys.length - 1; i++) if (!(keys[i - 1] < keys[i])) return false;
  return true;
}

/** Only what JSON.parse can produce counts: any other value (Date, function, bigint...) takes the safe path. */
function nestedSorted(v: unknown): boolean {
  switch (typeof v) {
    case 'string':
    case 'boolean':
      return true;
    case 'number':
      return Number.isFinite(v);
    case 'object':
      break;
    default:
      return false;
  }
  if (v === null) return true;
  if (Array.isArray(v)) {
    for (const x of v) if (!nestedSorted(x)) return false;
    return true;
  }
  if (Object.getPrototypeOf(v) !== Object.prototype) return false;
  const rec = v as Record<string, unknown>;
  let prev: string | undefined;
  for (const k in rec) {
    if (prev !== undefined && !(prev < k)) return false;
    prev = k;
    if (!nestedSorted(rec[k])) return false;
  }
  return true;
}

const oneShot = (crypto as { hash?: (alg: string, data: string, enc: 'hex') => string }).hash;
const sha256Hex: (s: string) => string = oneShot
  ? (s) => oneShot('sha256', s, 'hex')
  : (s) => crypto.createHash('sha256').update(s).digest('hex');
