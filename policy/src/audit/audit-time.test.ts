import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatAuditTime, parseAuditTime } from './audit-time.js';

/** The plain definition: Date's ISO text to the millisecond, then the three microsecond digits. */
function reference(epochMicros: number): string {
  const us = Math.floor(epochMicros);
  const ms = Math.floor(us / 1000);
  return `${new Date(ms).toISOString().slice(0, -1)}${String(us - ms * 1000).padStart(3, '0')}Z`;
}

describe('formatAuditTime', () => {
  it('writes RFC 3339 UTC with six fractional digits', () => {
    expect(formatAuditTime(Date.UTC(2026, 0, 2, 3, 4, 5, 678) * 1000 + 9)).toBe('2026-01-02T03:04:05.678009Z');
    expect(formatAuditTime(0)).toBe('1970-01-01T00:00:00.000000Z');
    expect(formatAuditTime(-1)).toBe('1969-12-31T23:59:59.999999Z');
  });

  it('property: equals the reference across second boundaries and in any order (its per-second cache is exact)', () => {
    const micros = fc.double({ min: -1e15, max: 4e15, noNaN: true }).map(Math.floor);
    fc.assert(
      fc.property(
        micros,
        fc.integer({ min: -3_000_000, max: 3_000_000 }),
        fc.double({ min: 0, max: 0.999, noNaN: true }),
        (a, d, f) => {
          for (const t of [a, a + d, a + d + f, a + 1, a - 1, a]) expect(formatAuditTime(t)).toBe(reference(t));
        },
      ),
      { numRuns: 500 },
    );
  });

  it('round-trips through parseAuditTime', () => {
    const t = Date.UTC(2026, 10, 30, 5, 8, 27, 123) * 1000 + 456;
    expect(parseAuditTime(formatAuditTime(t))).toBe(t);
  });
});
