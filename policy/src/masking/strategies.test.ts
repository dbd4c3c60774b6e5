import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type CompiledStrategy, maskAsciiInPlace, maskText, REDACTED } from './strategies.js';

const key = Buffer.from('k'.repeat(32));
const s = (type: CompiledStrategy['type'], o: Partial<CompiledStrategy> = {}): CompiledStrategy => ({
  type,
  keepFirst: 0,
  keepLast: 0,
  key,
  ...o,
});

describe('strategies', () => {
  it('redact and null', () => {
    expect(maskText('secret', s('redact'))).toBe(REDACTED);
    expect(maskText('secret', s('null'))).toBeNull();
  });
  it('partial keeps first/last N and hides short values whole', () => {
    expect(maskText('123-45-6789', s('partial', { keepLast: 4 }))).toBe('*******6789');
    expect(maskText('4111111111111111', s('partial', { keepFirst: 4, keepLast: 4 }))).toBe('4111********1111');
    expect(maskText('abcde', s('partial', { keepLast: 4 }))).toBe('*****');
    expect(maskText('ab', s('partial', { keepFirst: 1 }))).toBe('****');
  });
  it('email keeps the domain only', () => {
    expect(maskText('alice@example.com', s('email'))).toBe('****@example.com');
    expect(maskText('not-an-email', s('email'))).toBe(REDACTED);
    // Only a plausible host name survives: not free text, not a number glued on after an '@'.
    expect(maskText(' @secret-4111111111111111', s('email'))).toBe(REDACTED);
    expect(maskText('x@4111111111111111.example', s('email'))).toBe(REDACTED);
    expect(maskText('x@my host.example', s('email'))).toBe(REDACTED);
    expect(maskText('bob@mail-2.example.co.uk', s('email'))).toBe('****@mail-2.example.co.uk');
  });
  it('hash: HMAC-SHA256, stable per key, different across keys', () => {
    const a = maskText('alice@example.com', s('hash'));
    expect(a).toMatch(/^[0-9a-f]{32}$/);
    expect(maskText('alice@example.com', s('hash'))).toBe(a);
    expect(maskText('alice@example.com', s('hash', { key: Buffer.from('other') }))).not.toBe(a);
    expect(maskText('bob@example.com', s('hash'))).not.toBe(a);
  });
  it('digits: format-preserving, stable, no digit left in place', () => {
    const out = maskText('4111-1111-1111-1111', s('digits')) as string;
    expect(out).toMatch(/^\d{4}-\d{4}-\d{4}-\d{4}$/);
    expect(maskText('4111-1111-1111-1111', s('digits'))).toBe(out);
    [...'4111-1111-1111-1111'].forEach((c, i) => {
      if (/\d/.test(c)) expect(out[i]).not.toBe(c);
    });
    expect(maskText('Ab 12', s('digits'))).toMatch(/^Xx \d\d$/);
  });
  it('property: no strategy returns the value or keeps it recognisable', () => {
    fc.assert(
      fc.property(
        // Values containing the mask character '*' are excluded: "*@example" masked by `email` to "****@example"
        // contains it trivially, though nothing of the original local part survives.
        fc.string({ minLength: 6, maxLength: 40 }).filter((v) => /[0-9A-Za-z]{6}/.test(v) && !v.includes('*')),
        (v) => {
          for (const t of ['redact', 'hash', 'null', 'email', 'digits'] as const) {
            const out = maskText(v, s(t));
            if (out !== null) expect(out).not.toContain(v);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
  it('property: the in-place ASCII rewrite gives exactly maskText’s result, or declines', () => {
    fc.assert(
      fc.property(
        fc.string({ maxLength: 40 }),
        fc.constantFrom<CompiledStrategy['type']>('partial', 'digits', 'redact', 'hash'),
        fc.nat(6),
        fc.nat(6),
        (v, type, keepFirst, keepLast) => {
          const st = s(type, { keepFirst, keepLast });
          const buf = Buffer.concat([Buffer.from('ab'), Buffer.from(v, 'utf8'), Buffer.from('cd')]);
          const end = buf.length - 2;
          if (maskAsciiInPlace(buf, 2, end, st)) {
            expect(buf.toString('utf8', 2, end)).toBe(maskText(v, st));
            expect(buf.toString('utf8', 0, 2) + buf.toString('utf8', end)).toBe('abcd');
          } else {
            expect(buf.toString('utf8', 2, end)).toBe(v);
          }
        },
      ),
      { numRuns: 500 },
    );
  });
  it('property: long values (word-at-a-time scan), with one non-ASCII character anywhere: exact or declined', () => {
    fc.assert(
      fc.property(
        fc.string({ minLength: 30, maxLength: 200 }),
        fc.option(fc.constantFrom('é', '€', '😀'), { nil: undefined }),
        fc.nat(200),
        fc.constantFrom<CompiledStrategy['type']>('partial', 'digits'),
        (ascii, odd, at, type) => {
          const v = odd === undefined ? ascii : ascii.slice(0, at) + odd + ascii.slice(at);
          const st = s(type, { keepFirst: 2, keepLast: 3 });
          const buf = Buffer.concat([Buffer.from('abc'), Buffer.from(v, 'utf8'), Buffer.from('de')]);
          const end = buf.length - 2;
          const done = maskAsciiInPlace(buf, 3, end, st);
          expect(done).toBe(odd === undefined);
          expect(buf.toString('utf8', 3, end)).toBe(done ? maskText(v, st) : v);
          expect(buf.toString('utf8', 0, 3) + buf.toString('utf8', end)).toBe('abcde');
        },
      ),
      { numRuns: 500 },
    );
  });
  it('digits: short values give the same pseudonym in place and as text, whatever came before', () => {
    const st = s('digits');
    for (const v of ['0', '7', '0', '-42', '100000', '0', '99', '-42', '1234567']) {
      const buf = Buffer.from(v);
      expect(maskAsciiInPlace(buf, 0, buf.length, st)).toBe(true);
      expect(buf.toString()).toBe(maskText(v, st));
    }
  });
});
