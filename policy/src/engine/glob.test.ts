import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { globMatches, tableGlobMatches } from '../masking/name-glob.js';
import { compileGlob, compileObjectGlob } from './glob.js';

/** What the globs were before: a RegExp of `.*` and `.` (kept here as the reference semantics). */
function regexGlob(pattern: string, flags: string): RegExp {
  let re = '^';
  for (const ch of pattern) re += ch === '*' ? '.*' : ch === '?' ? '.' : ch.replace(/[\\^$.|+()[\]{}]/g, '\\$&');
  return new RegExp(`${re}$`, flags);
}

const alphabet = fc.constantFrom('a', 'b', 'A', '.', '*', '?', '\n', 'é', 'É', 'ß', 'ı', 'K', '\u212a', '😀');
const text = (max: number) => fc.array(alphabet, { maxLength: max }).map((a) => a.join(''));

describe('globs', () => {
  it('match exactly what the RegExp they replace matched', () => {
    fc.assert(
      fc.property(text(8), text(10), (pattern, value) => {
        const subject = value.replace(/[*?]/g, 'x');
        expect(compileGlob(pattern).test(subject)).toBe(regexGlob(pattern, 's').test(subject));
        expect(compileGlob(pattern).test(value)).toBe(regexGlob(pattern, 's').test(value));
        expect(globMatches(pattern, value)).toBe(regexGlob(pattern, 'is').test(value));
      }),
      { numRuns: 5000 },
    );
  });

  it('take linear time in the value for many stars (a policy glob against the agent-chosen name)', () => {
    // Each of these took longer than the test timeout as a RegExp (`*a` six times: about 2 s per name).
    const pattern = `public.${'*a'.repeat(120)}*b`;
    const value = `public.${'a'.repeat(56)}`;
    const t = performance.now();
    for (let i = 0; i < 100; i++) {
      expect(compileObjectGlob(pattern).test(value)).toBe(false);
      expect(globMatches(pattern, value)).toBe(false);
      expect(tableGlobMatches(`${'*a'.repeat(120)}*b`, 'public', 'a'.repeat(56))).toBe(false);
      expect(compileGlob(`${'*?'.repeat(100)}*b`).test('a'.repeat(200))).toBe(false);
    }
    expect(performance.now() - t).toBeLessThan(2000);
  });

  it('keep their documented meaning', () => {
    expect(compileObjectGlob('orders').test('public.orders')).toBe(true);
    expect(compileObjectGlob('public.ord?rs').test('public.orders')).toBe(true);
    expect(compileObjectGlob('public.*').test('public.a.b')).toBe(true);
    expect(compileObjectGlob('public.o*').test('sales.orders')).toBe(false);
    expect(compileGlob('data-*').test('Data-team')).toBe(false);
    expect(globMatches('public.Customers', 'public.customers')).toBe(true);
    expect(tableGlobMatches('*', 'pg_temp_3', 'customers')).toBe(true);
  });
});
