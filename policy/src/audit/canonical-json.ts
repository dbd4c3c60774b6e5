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
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    default:
      if (value === null) return 'null';
      throw new TypeError(`canonical JSON cannot encode a ${typeof value}`);
  }
}

function encodeObject(value: object): string {
  const hit = frozenCache.get(value);
  if (hit !== undefined) {
    lastDeep = true;
    return hit;
  }
  let deep = Object.isFrozen(value);
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
    const keys = Object.keys(rec).sort();
    out = '{';
    let first = true;
    for (const k of keys) {
      const v = rec[k];
      if (v === undefined || typeof v === 'function') continue;
      if (!first) out += ',';
      first = false;
      if (v === null || typeof v !== 'object') {
        out += `${JSON.stringify(k)}:${encodePrimitive(v)}`;
      } else {
        out += `${JSON.stringify(k)}:${encodeObject(v)}`;
        deep &&= lastDeep;
      }
    }
    out += '}';
  }
  if (deep) frozenCache.set(value, out);
  lastDeep = deep;
  return out;
}
