/** The last second formatted ("2026-01-02T03:04:05."): events come many per second, Date formatting is not free. */
let cachedSecond = Number.NaN;
let cachedPrefix = '';

/** RFC 3339 UTC timestamp with microseconds from microseconds since the epoch (DESIGN §5: `time` has µs). */
export function formatAuditTime(epochMicros: number): string {
  const us = Math.floor(epochMicros);
  const second = Math.floor(us / 1_000_000);
  if (second !== cachedSecond) {
    const iso = new Date(second * 1000).toISOString(); // 2026-01-02T03:04:05.000Z
    cachedPrefix = iso.slice(0, -4);
    cachedSecond = second;
  }
  return `${cachedPrefix}${String(us - second * 1_000_000).padStart(6, '0')}Z`;
}

/** Microseconds of an RFC 3339 timestamp (the µs digits of formatAuditTime survive; others parse to ms). */
export function parseAuditTime(time: string): number {
  const ms = Date.parse(time);
  if (Number.isNaN(ms)) throw new RangeError(`not an RFC 3339 timestamp: ${time}`);
  const m = /\.(\d{4,6})Z$/.exec(time);
  return m ? ms * 1000 + (Number(m[1].padEnd(6, '0').slice(3)) || 0) : ms * 1000;
}
