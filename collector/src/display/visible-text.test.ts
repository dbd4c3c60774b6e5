import { describe, expect, it } from 'vitest';
import { nonAsciiCharacters, terminalSafeJson, visiblePieces, visibleText } from './visible-text.js';

describe('visibleText', () => {
  it('leaves ordinary SQL, its line breaks, indentation and non-Latin letters as they are', () => {
    const sql = "SELECT id,\n       name\n\nFROM t\tWHERE note = 'héllo 東京 שלום' -- ok";
    expect(visiblePieces(sql)).toEqual([sql]);
  });

  it('marks terminal escapes and carriage returns (a concealed OR true, a line written over)', () => {
    expect(visibleText('DELETE FROM t WHERE id = 44 /*\x1b[8m*/ OR true /*\x1b[0m*/')).toBe(
      'DELETE FROM t WHERE id = 44 /*⟨U+001B⟩[8m*/ OR true /*⟨U+001B⟩[0m*/',
    );
    expect(visibleText('DELETE FROM t /*\r*/ -- x')).toBe(
      'DELETE FROM t /*⟨1 other whitespace (tab, CR, FF, VT)⟩*/ -- x',
    );
    expect(visibleText('a\u009b2Jb')).toBe('a⟨U+009B⟩2Jb');
  });

  it('marks bidi controls, zero-width and default-ignorable characters, and separators', () => {
    expect(visibleText("DELETE FROM t WHERE s <> 'new\u202E \u2066AND id = 44\u2069 \u2066'")).toBe(
      "DELETE FROM t WHERE s <> 'new⟨U+202E⟩ ⟨U+2066⟩AND id = 44⟨U+2069⟩ ⟨U+2066⟩'",
    );
    for (const c of [
      '\u200b',
      '\u200d',
      '\u2060',
      '\ufeff',
      '\u00ad',
      '\u3164',
      '\ufe0f',
      '\u2028',
      '\u061c',
      '\u00a0',
    ])
      expect(visibleText(`a${c}b`)).toMatch(/^a⟨U\+[0-9A-F]{4}⟩b$/);
    expect(visibleText('a\u{E0041}b')).toBe('a⟨U+E0041⟩b');
    expect(visibleText('a\ud800b')).toBe('a⟨U+D800⟩b');
  });

  it('marks whitespace runs long enough to hide what follows', () => {
    expect(visibleText(`DELETE FROM t WHERE id = 44${'\n'.repeat(5000)}OR true`)).toBe(
      'DELETE FROM t WHERE id = 44⟨5000 line breaks⟩\nOR true',
    );
    expect(visibleText(`x${' '.repeat(60000)}OR true`)).toBe('x⟨60000 spaces⟩OR true');
    expect(visibleText(`x${'\n \n'.repeat(3)}y`)).toBe('x⟨6 line breaks, 3 spaces⟩\ny');
    expect(visibleText(`x\n${' '.repeat(40)}y`)).toBe(`x\n${' '.repeat(40)}y`);
  });
});

describe('nonAsciiCharacters', () => {
  it('names the distinct non-ASCII characters a statement holds', () => {
    expect(nonAsciiCharacters("UPDATE users SET role = 'admin' WHERE name = '\u0430lice'")).toEqual(['U+0430 а']);
    expect(nonAsciiCharacters('a\u202eb')).toEqual(['U+202E']);
    expect(nonAsciiCharacters('plain')).toEqual([]);
  });
});

describe('terminalSafeJson', () => {
  it('escapes what JSON.stringify leaves raw but a terminal would act on, and parses back to the same value', () => {
    const v = { sql: 'a\u009b2J\u202eb\u2028c\u200bd\x1b' };
    const text = terminalSafeJson(v, 2);
    expect(text).not.toMatch(/[\u0080-\u009f\u202e\u2028\u200b\x1b]/);
    expect(JSON.parse(text)).toEqual(v);
  });
});
