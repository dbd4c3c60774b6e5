/**
 * Canonical JSON for hashing: object keys sorted by UTF-16 code units, no whitespace, strings and numbers
 * as JSON.stringify writes them (ECMAScript number serialisation, the same as RFC 8785 JCS for finite numbers).
 * `undefined` members are left out, as JSON.stringify does, so an event hashes the same before it is sent and
 * after a consumer parses it back. Built by hand rather than by re-ordering objects for JSON.stringify: JavaScript
 * always puts integer-like keys first, which would break the pure code-unit order other languages can reproduce.
 *
 * Deep-frozen objects (Object.freeze all the way down) cannot change, so their encoding is remembered: a producer
 * that freezes the parts every event of a session repeats (identity, database, source) encodes them once.
 */
export function canonicalJson(value: unknown): string {
  return value !== null && typeof value === 'object' ? encodeObject(value) : encodePrimitive(value);
}

/** Encodings of deep-frozen objects. */
const frozenCache = new WeakMap<object, string>();
/** Set by encodeObject: whether the object it just encoded is deep-frozen (saves allocating a result pair). */
let lastDeep = false;

function encodePrimitive(value: unknown): string {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError('canonical JSON cannot encode a non-finite number');
      // For finite numbers String() and JSON.stringify both use Number::toString (ECMA-262 §21.1.3.6), faster.
      return String(value);
    case 'boolean':
      return value ? 'true' : 'false';
    default:
      if (value === null) return 'null';
      throw new TypeError(`canonical JSON cannot encode a ${typeof value}`);
  }
}

/** Quoted object keys: events repeat the same few dozen keys, so quote each once (bounded: keys can be data). */
const quotedKeys = new Map<string, string>();
function quoteKey(k: string): string {
  let q = quotedKeys.get(k);
  if (q === undefined) {
    q = JSON.stringify(k);
    if (quotedKeys.size < 4096) quotedKeys.set(k, q);
  }
  return q;
}

/**
 * In-place insertion sort by `>`, which compares strings by UTF-16 code units exactly as Array.prototype.sort's
 * default order does (ECMA-262 IsLessThan); for the handful of keys an event object has it is several times faster.
 */
function sortKeys(keys: string[]): void {
  if (keys.length > 32) {
    keys.sort();
    return;
  }
  for (let i = 1; i < keys.length; i++) {
    const k = keys[i];
    let j = i - 1;
    while (j >= 0 && keys[j] > k) {
      keys[j + 1] = keys[j];
      j--;
    }
    keys[j + 1] = k;
  }
}

function encodeObject(value: object): string {
  let deep = Object.isFrozen(value);
  // Only frozen objects can be in the cache: skip the WeakMap lookup for the fresh ones.
  if (deep) {
    const hit = frozenCache.get(value);
    if (hit !== undefined) {
      lastDeep = true;
      return hit;
    }
  }
  let out: string;
  if (Array.isArray(value)) {
    out = '[';
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out += ',';
      const v = value[i];
      if (v === null || typeof v !== 'object') {
        out += v === undefined || typeof v === 'function' ? 'null' : encodePrimitive(v);
      } else {
        out += encodeObject(v);
        deep &&= lastDeep;
      }
    }
    out += ']';
  } else {
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) {
      throw new TypeError('canonical JSON encodes plain objects only');
    }
    const rec = value as Record<string, unknown>;
    const keys = Object.keys(rec);
    sortKeys(keys);
    out = '{';
    let first = true;
    for (const k of keys) {
      const v = rec[k];
      if (v === undefined || typeof v === 'function') continue;
      if (!first) out += ',';
      first = false;
      if (v === null || typeof v !== 'object') {
        out += `${quoteKey(k)}:${encodePrimitive(v)}`;
      } else {
        out += `${quoteKey(k)}:${encodeObject(v)}`;
        deep &&= lastDeep;
      }
    }
    out += '}';
  }
  if (deep) frozenCache.set(value, out);
  lastDeep = deep;
  return out;
}
