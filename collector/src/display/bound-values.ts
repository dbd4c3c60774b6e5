/**
 * One value a Bind gave a held statement, as an approver reads it: `$2 (binary) = \x41` for a binary-format value
 * (the sidecar shows its bytes as `\x` hex), `$1 (text) = "\\x41"` for a text one (quoted as a JSON string), so a
 * text value that reads like hex cannot pass for bytes, nor bytes for text; `$3 = NULL`. Without a format (a sidecar
 * older than the request's `paramFormats`, or a note in place of the values) quoted and unmarked, as before. The web
 * UI's page script writes the same (web-ui.ts boundValue).
 */
export function boundValueText(index: number, value: string | null, format?: string): string {
  const name = `$${index + 1}`;
  if (value === null) return `${name} = NULL`;
  if (format === 'binary') return `${name} (binary) = ${value}`;
  if (format === 'text') return `${name} (text) = ${JSON.stringify(value)}`;
  return `${name} = ${JSON.stringify(value)}`;
}

/** Each value of `params` as boundValueText writes it, `formats` lined up with them (ignored when they are not). */
export function boundValuesText(params: readonly (string | null)[], formats: readonly string[] | undefined): string[] {
  const f = formats?.length === params.length ? formats : undefined;
  return params.map((v, i) => boundValueText(i, v, f?.[i]));
}
