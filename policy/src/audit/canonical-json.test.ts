import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalJson } from './canonical-json.js';
import { hashEvent } from './hash-chain.js';

/** Rebuilds an object tree with keys inserted in a shuffled order (seeded by fast-check). */
function shuffleKeys(v: unknown, rnd: () => number): unknown {
  if (Array.isArray(v)) return v.map((x) => shuffleKeys(x, rnd));
  if (v && typeof v === 'object') {
    const keys = Object.keys(v);
    for (let i = keys.length - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1));
      [keys[i], keys[j]] = [keys[j], keys[i]];
    }
    // fromEntries defines own properties, so a "__proto__" key stays a key (as JSON.parse makes it).
    return Object.fromEntries(keys.map((k) => [k, shuffleKeys((v as Record<string, unknown>)[k], rnd)]));
  }
  return v;
}

const json = fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.parse(JSON.stringify(v)) as unknown);

describe('canonicalJson', () => {
  it('keeps an own "__proto__" key (JSON.parse makes one) like any other key', () => {
    expect(canonicalJson(JSON.parse('{"b":1,"__proto__":false}'))).toBe('{"__proto__":false,"b":1}');
  });

  it('sorts keys and writes no whitespace', () => {
    expect(canonicalJson({ b: 1, a: [true, null, 'x'], c: { z: 1.5, y: -0 } })).toBe(
      '{"a":[true,null,"x"],"b":1,"c":{"y":0,"z":1.5}}',
    );
  });

  it('orders integer-like keys by code unit too (as JCS does), not numerically as JavaScript objects do', () => {
    expect(canonicalJson({ 10: 'a', 9: 'b', a: 1 })).toBe('{"10":"a","9":"b","a":1}');
  });

  it('leaves out undefined members as JSON.stringify does, and refuses what JSON cannot hold', () => {
    expect(canonicalJson({ a: undefined, b: [undefined] })).toBe('{"b":[null]}');
    expect(() => canonicalJson({ a: Number.NaN })).toThrow(TypeError);
    expect(() => canonicalJson({ a: new Date(0) })).toThrow(TypeError);
    expect(() => canonicalJson(10n)).toThrow(TypeError);
  });

  it('property: key order never changes the encoding or the hash', () => {
    fc.assert(
      fc.property(json, fc.integer(), (v, seed) => {
        let s = seed >>> 0 || 1;
        const rnd = () => {
          s = (s * 1103515245 + 12345) >>> 0;
          return s / 2 ** 32;
        };
        const shuffled = shuffleKeys(v, rnd);
        expect(canonicalJson(shuffled)).toBe(canonicalJson(v));
        if (v && typeof v === 'object' && !Array.isArray(v)) {
          expect(hashEvent(shuffled as never)).toBe(hashEvent(v as never));
        }
      }),
      { numRuns: 500 },
    );
  });

  it('property: equals the plain reference encoding (Array.prototype.sort key order, JSON.stringify scalars)', () => {
    // The reference is the obvious, slow definition; the real encoder sorts and quotes keys its own way for speed.
    const reference = (v: unknown): string => {
      if (Array.isArray(v)) return `[${v.map(reference).join(',')}]`;
      if (v && typeof v === 'object') {
        const o = v as Record<string, unknown>;
        return `{${Object.keys(o)
          .sort()
          .map((k) => `${JSON.stringify(k)}:${reference(o[k])}`)
          .join(',')}}`;
      }
      return JSON.stringify(v);
    };
    const anyKeys = fc.dictionary(fc.string({ unit: 'binary', maxLength: 6 }), fc.oneof(fc.double(), fc.string()), {
      maxKeys: 40,
    });
    fc.assert(
      fc.property(fc.oneof(json, anyKeys), (v) => {
        const finite = JSON.parse(JSON.stringify(v)) as unknown;
        expect(canonicalJson(finite)).toBe(reference(finite));
      }),
      { numRuns: 1000 },
    );
  });

  it('property: encoding survives a JSON round trip (what a consumer hashes equals what the producer hashed)', () => {
    fc.assert(
      fc.property(json, (v) => {
        expect(canonicalJson(JSON.parse(canonicalJson(v)))).toBe(canonicalJson(v));
        expect(canonicalJson(JSON.parse(JSON.stringify(v)))).toBe(canonicalJson(v));
      }),
      { numRuns: 500 },
    );
  });
});

describe('canonicalJson with frozen parts', () => {
  it('encodes a deep-frozen object the same as its unfrozen copy, every time', () => {
    const deep = Object.freeze({ b: Object.freeze(['x', Object.freeze({ d: 1, c: 2 })]), a: 'y' });
    const plain = JSON.parse(JSON.stringify(deep));
    expect(canonicalJson({ z: deep })).toBe(canonicalJson({ z: plain }));
    expect(canonicalJson({ z: deep, w: deep })).toBe(canonicalJson({ z: plain, w: plain }));
  });

  it('never reuses the encoding of an object that is only shallowly frozen (its insides can change)', () => {
    const inner = { n: 1 };
    const shallow = Object.freeze({ inner });
    const before = canonicalJson(shallow);
    inner.n = 2;
    expect(canonicalJson(shallow)).not.toBe(before);
    expect(canonicalJson(shallow)).toBe('{"inner":{"n":2}}');
  });
});
