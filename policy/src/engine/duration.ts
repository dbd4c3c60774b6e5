const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses the schema's duration strings (`30s`, `1h30m`, `250ms`) into milliseconds; undefined if malformed. */
export function parseDuration(text: string): number | undefined {
  if (!/^([0-9]{1,9}(ms|s|m|h))+$/.test(text)) return undefined;
  let total = 0;
  for (const m of text.matchAll(/([0-9]+)(ms|s|m|h)/g)) total += Number(m[1]) * UNIT_MS[m[2]];
  return total;
}
