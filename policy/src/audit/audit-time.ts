/** RFC 3339 UTC timestamp with microseconds from microseconds since the epoch (DESIGN §5: `time` has µs). */
export function formatAuditTime(epochMicros: number): string {
  const us = Math.floor(epochMicros);
  const ms = Math.floor(us / 1000);
  const iso = new Date(ms).toISOString(); // 2026-01-02T03:04:05.678Z
  const micro = String(us - ms * 1000).padStart(3, '0');
  return `${iso.slice(0, -1)}${micro}Z`;
}

/** Microseconds of an RFC 3339 timestamp (the µs digits of formatAuditTime survive; others parse to ms). */
export function parseAuditTime(time: string): number {
  const ms = Date.parse(time);
  if (Number.isNaN(ms)) throw new RangeError(`not an RFC 3339 timestamp: ${time}`);
  const m = /\.(\d{4,6})Z$/.exec(time);
  return m ? ms * 1000 + (Number(m[1].padEnd(6, '0').slice(3)) || 0) : ms * 1000;
}
