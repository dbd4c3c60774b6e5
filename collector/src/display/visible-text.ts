/**
 * Text the agent chose (SQL, bound values, identifiers PostgreSQL echoes) as a person must see it to judge it: every
 * character that would change how the rest displays, or would not display at all, is replaced by a mark naming it.
 * That covers C0/C1 controls (terminal escape sequences, carriage returns that overwrite a line), bidirectional
 * controls (Unicode TR #9: an override displays `… 'x' AND id = 44` for text that compares with the string
 * `x‮ ⁦AND id = 44⁩ ⁦`), zero-width and other default-ignorable characters, line and paragraph separators, and
 * whitespace runs long enough to push the rest out of sight (thousands of blank lines below the first).
 * The stored text is untouched: the chain hashes cover it; only what is shown changes.
 */

/** A run of shown text, or `{mark}`: what stood there instead (`U+202E`, `4998 line breaks`). */
export type VisiblePiece = string | { mark: string };

/**
 * `text` cut into plain runs and marks. Self-contained on purpose (no imports, no outer constants): the web UI
 * embeds this very function's source, so the browser and the CLI mark the same characters.
 */
export function visiblePieces(text: string): VisiblePiece[] {
  // Cc and Cf hold the C0/C1 controls, bidi controls and zero-width characters; Cs, Co and Cn lone surrogates,
  // private-use and unassigned code points (a font may draw anything for them); Zl/Zp the line and paragraph
  // separators; Default_Ignorable_Code_Point adds what renders as nothing outside those (Hangul fillers, variation
  // selectors, U+115F…). Non-ASCII spaces show as blanks that are not one: marked too. \t and \n are judged as
  // whitespace runs below.
  const hidden =
    /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Default_Ignorable_Code_Point}\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]/u;
  const out: VisiblePiece[] = [];
  let plain = '';
  const mark = (m: string) => {
    if (plain) out.push(plain);
    plain = '';
    out.push({ mark: m });
  };
  // A whitespace run is kept as it is while it looks like formatting: at most two line breaks (one blank line) and
  // at most 40 spaces or tabs; a CR, FF or VT in it marks it whole.
  const parts = text.split(/([ \t\n\r\f\v]+)/);
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i];
    if (part === '') continue;
    if (i % 2 === 1) {
      const breaks = part.split('\n').length - 1;
      const blanks = part.length - breaks;
      if (breaks <= 2 && blanks <= 40 && !/[\r\f\v]/.test(part)) {
        plain += part;
        continue;
      }
      const what = [];
      if (breaks > 0) what.push(`${breaks} line break${breaks === 1 ? '' : 's'}`);
      const spaces = part.replace(/[^ ]/g, '').length;
      if (spaces > 0) what.push(`${spaces} space${spaces === 1 ? '' : 's'}`);
      const others = blanks - spaces;
      if (others > 0) what.push(`${others} other whitespace (tab, CR, FF, VT)`);
      mark(what.join(', '));
      // The text after a run that broke the line still starts on a line of its own.
      if (breaks > 0) plain += '\n';
      continue;
    }
    for (const ch of part) {
      if (!hidden.test(ch)) {
        plain += ch;
        continue;
      }
      mark(`U+${(ch.codePointAt(0) as number).toString(16).toUpperCase().padStart(4, '0')}`);
    }
  }
  if (plain) out.push(plain);
  return out;
}

/** `text` for a terminal or a chat line: each mark as `⟨…⟩`. */
export function visibleText(text: string): string {
  return visiblePieces(text)
    .map((p) => (typeof p === 'string' ? p : `⟨${p.mark}⟩`))
    .join('');
}

/**
 * The distinct non-ASCII characters `text` holds (at most `max`), as `U+0430 а`: a statement that looks like ASCII
 * but is not (a Cyrillic `а` in a name or a literal) is not what it seems, and an approver should be told.
 */
export function nonAsciiCharacters(text: string, max = 12): string[] {
  const seen = new Set<string>();
  for (const ch of text) {
    if ((ch.codePointAt(0) as number) < 0x80 || seen.has(ch)) continue;
    seen.add(ch);
    if (seen.size > max) break;
  }
  return [...seen].slice(0, max).map((ch) => {
    const hex = `U+${(ch.codePointAt(0) as number).toString(16).toUpperCase().padStart(4, '0')}`;
    const shown = visibleText(ch);
    return shown === ch ? `${hex} ${ch}` : hex;
  });
}

/**
 * JSON text for a terminal: the same value, with the characters JSON.stringify leaves raw but a terminal or a reader
 * would act on (C1 controls, bidi controls, zero-width characters, line separators) written as `\uXXXX` escapes.
 * Those characters can stand only inside JSON strings, where the escape means the same character.
 */
export function terminalSafeJsonText(json: string): string {
  return json.replace(
    /[\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]/g,
    (c) => `\\u${(c.codePointAt(0) as number).toString(16).padStart(4, '0')}`,
  );
}

/** JSON.stringify(value, null, indent), made terminalSafeJsonText. */
export const terminalSafeJson = (value: unknown, indent?: number) =>
  terminalSafeJsonText(JSON.stringify(value, null, indent));
