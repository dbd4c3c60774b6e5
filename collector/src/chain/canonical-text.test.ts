import { hashEvent } from '@pgwarden/policy';
import { describe, expect, it } from 'vitest';
import { makeSession, sidecarJson } from '../testing/audit-events.js';
import { hashOfCanonicalText } from './canonical-text.js';

describe('hashOfCanonicalText', () => {
  const events = makeSession({ id: 'ct', statements: 20, denyEvery: 3 });

  it('hashes canonical sidecar text to exactly what re-encoding gives', () => {
    for (const e of events) {
      const raw = sidecarJson(e);
      const value = JSON.parse(raw);
      expect(hashOfCanonicalText(raw, value)).toBe(hashEvent(value));
      expect(hashOfCanonicalText(raw, value)).toBe(e.hash);
    }
  });

  it('refuses text that is not canonical, so the caller re-encodes', () => {
    const e = events[1]; // an allowed SELECT
    const raw = sidecarJson(e);
    const variants = [
      JSON.stringify(e), // producer key order, hash not last
      raw.replace('{"database"', '{ "database"'), // whitespace
      raw.replace('"rows":1', '"rows":1.0'), // number not as JSON.stringify writes it
      raw.replace('"database":{', '"database":{"name":"x",'), // duplicate key (last wins in JSON.parse)
      raw.replace(/"session":\{"id":"ct","seq":(\d+)\}/, '"session":{"seq":$1,"id":"ct"}'), // unsorted nested keys
      raw.replace('select', 'sel\\u0065ct'), // escape JSON.stringify would not write
    ];
    for (const v of variants) {
      expect(v).not.toBe(raw);
      expect(hashOfCanonicalText(v, JSON.parse(v))).toBeUndefined();
    }
  });

  it('refuses integer-like keys out of code-unit order and non-JSON values', () => {
    const base = { a: 1, hash: 'f'.repeat(64) };
    const withInts = { '10': 1, '9': 2, hash: 'f'.repeat(64) }; // JS lists 9 before 10; code units say "10" < "9"
    expect(hashOfCanonicalText(JSON.stringify(withInts), withInts)).toBeUndefined();
    const dated = { a: new Date(0), hash: 'f'.repeat(64) };
    expect(hashOfCanonicalText(JSON.stringify(dated), dated)).toBeUndefined();
    expect(hashOfCanonicalText(JSON.stringify(base), base)).toBe(hashEvent(base as never));
  });

  it('a tampered canonical text still hashes to its content, so the chain check catches it', () => {
    const e = events[2];
    const raw = sidecarJson(e).replace('public.orders', 'public.orderz');
    const h = hashOfCanonicalText(raw, JSON.parse(raw));
    expect(h).toBe(hashEvent(JSON.parse(raw)));
    expect(h).not.toBe(e.hash);
  });
});
