import { canonicalJson, hashEvent } from '@pgwarden/policy';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { makeSession, sidecarJson } from '../testing/audit-events.js';
import { hashOfCanonicalUtf8 } from './canonical-utf8.js';

const bytes = (s: string) => Buffer.from(s);
/** What the store relies on: a returned hash is the re-encoding hash of the parsed text. */
const sound = (text: string) => {
  let value: { hash?: unknown };
  try {
    value = JSON.parse(text);
  } catch {
    return; // the contract covers parsed text only
  }
  if (value === null || typeof value !== 'object') return;
  const h = hashOfCanonicalUtf8(bytes(text), value.hash);
  if (h !== undefined) expect(h).toBe(hashEvent(value as never));
};

describe('hashOfCanonicalUtf8', () => {
  const events = makeSession({ id: 'cu', statements: 20, denyEvery: 3 });

  it('hashes the sidecar bytes to exactly what re-encoding gives', () => {
    for (const e of events) {
      const raw = sidecarJson(e);
      expect(hashOfCanonicalUtf8(bytes(raw), e.hash)).toBe(hashEvent(JSON.parse(raw)));
      expect(hashOfCanonicalUtf8(bytes(raw), e.hash)).toBe(e.hash);
    }
  });

  it('accepts every escape and number JSON.stringify writes, and non-ASCII text', () => {
    const odd = {
      a: 'tab\there "quoted" back\\slash \u0001 \u001f \u007f ünïcødé 😀 \u2028',
      b: [0, -1, 1.5, 1e21, 1e-7, -0.25, 123456789012345, 2 ** 53, true, false, null, {}, []],
      c: { '': 1, A: 2, a: 3, b: { z: [{ y: 1, z: 2 }] } },
    };
    const text = `${canonicalJson(odd).slice(0, -1)},"hash":"${hashEvent(odd as never)}"}`;
    const h = hashOfCanonicalUtf8(bytes(text), hashEvent(odd as never));
    expect(h).toBe(hashEvent(JSON.parse(text)));
  });

  it('refuses text that is not canonical, so the caller re-encodes', () => {
    const e = events[1];
    const raw = sidecarJson(e);
    const variants = [
      JSON.stringify(e), // producer key order, hash not last
      raw.replace('{"database"', '{ "database"'), // whitespace
      raw.replace('"rows":1', '"rows":1.0'), // number not as JSON.stringify writes it
      raw.replace('"rows":1', '"rows":1e0'),
      raw.replace('"rows":1', '"rows":-0'),
      raw.replace('"database":{', '"database":{"name":"x",'), // duplicate key (last wins in JSON.parse)
      raw.replace('"host":"orders-db"', '"host":"orders-db","host":"orders-dc"'), // adjacent duplicate key
      raw.replace(/"session":\{"id":"cu","seq":(\d+)\}/, '"session":{"seq":$1,"id":"cu"}'), // unsorted nested keys
      raw.replace('select', 'sel\\u0065ct'), // escape JSON.stringify would not write
      raw.replace('select', 'sel\\/ect'),
      raw.replace('select', 'sel\\u000Act'), // upper-case hex
      raw.replace('select', 'sel\\u000act'), // \n has a short form
      raw.replace('{"database"', '{"database":1,"hash":"x","databasf"'), // an earlier top-level hash member
      `\ufeff${raw}`, // byte order mark
      raw.replace(/"hash":"([0-9a-f]+)"}$/, (_m, h: string) => `"hash":"${h.toUpperCase()}"}`),
      `${raw.slice(0, -1)} }`,
    ];
    for (const v of variants) {
      expect(v).not.toBe(raw);
      let value: { hash?: unknown } | undefined;
      try {
        value = JSON.parse(v);
      } catch {
        value = undefined;
      }
      expect(hashOfCanonicalUtf8(bytes(v), value?.hash ?? e.hash), v).toBeUndefined();
    }
  });

  it('refuses bytes that are not valid UTF-8 (decoding would have replaced them)', () => {
    const raw = bytes(sidecarJson(events[2]));
    const at = raw.indexOf('public.orders');
    const bad = Buffer.concat([raw.subarray(0, at), Buffer.from([0xc3, 0x28]), raw.subarray(at)]);
    expect(hashOfCanonicalUtf8(bad, events[2].hash)).toBeUndefined();
  });

  it('a tampered canonical text still hashes to its content, so the chain check catches it', () => {
    const e = events[2];
    const raw = sidecarJson(e).replace('public.orders', 'public.orderz');
    const h = hashOfCanonicalUtf8(bytes(raw), e.hash);
    expect(h).toBe(hashEvent(JSON.parse(raw)));
    expect(h).not.toBe(e.hash);
  });

  it('never returns a hash other than the re-encoding hash: mutated sidecar text and arbitrary JSON', () => {
    const base = events.map((e) => sidecarJson(e));
    const alphabet = ['"', '\\', ',', ':', '{', '}', '[', ']', ' ', '0', '1', '-', '.', 'e', 'a', 'h', 'é', '\\u0000'];
    fc.assert(
      fc.property(
        fc.nat(base.length - 1),
        fc.array(fc.tuple(fc.nat(), fc.nat(3), fc.constantFrom(...alphabet)), { maxLength: 3 }),
        (which, edits) => {
          let t = base[which];
          for (const [pos, del, ins] of edits) {
            const p = pos % t.length;
            t = t.slice(0, p) + ins + t.slice(p + del);
          }
          sound(t);
        },
      ),
      { numRuns: 3000 },
    );
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        const obj = { x: v };
        const hash = hashEvent(obj as never);
        sound(`${canonicalJson(obj).slice(0, -1)},"hash":"${hash}"}`);
        sound(`${JSON.stringify(obj).slice(0, -1)},"hash":"${hash}"}`);
      }),
      { numRuns: 2000 },
    );
  });
});
