/**
 * Canonical JSON for hashing: object keys sorted by UTF-16 code units, no whitespace, strings and numbers
 * as JSON.stringify writes them (ECMAScript number serialisation, the same as RFC 8785 JCS for finite numbers).
 * `undefined` members are left out, as JSON.stringify does, so an event hashes the same before it is sent and
 * after a consumer parses it back. Built by hand rather than by re-ordering objects for JSON.stringify: JavaScript
 * always puts integer-like keys first, which would break the pure code-unit order other languages can reproduce.
 */
export function canonicalJson(value: unknown): string {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError('canonical JSON cannot encode a non-finite number');
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'object': {
      if (value === null) return 'null';
      if (Array.isArray(value)) {
        let out = '[';
        for (let i = 0; i < value.length; i++) {
          if (i > 0) out += ',';
          const v = value[i];
          out += v === undefined || typeof v === 'function' ? 'null' : canonicalJson(v);
        }
        return `${out}]`;
      }
      const proto = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) {
        throw new TypeError('canonical JSON encodes plain objects only');
      }
      const rec = value as Record<string, unknown>;
      const keys = Object.keys(rec).sort();
      let out = '{';
      let first = true;
      for (const k of keys) {
        const v = rec[k];
        if (v === undefined || typeof v === 'function') continue;
        if (!first) out += ',';
        first = false;
        out += `${JSON.stringify(k)}:${canonicalJson(v)}`;
      }
      return `${out}}`;
    }
    default:
      throw new TypeError(`canonical JSON cannot encode a ${typeof value}`);
  }
}
