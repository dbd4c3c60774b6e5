import { describe, expect, it } from 'vitest';
import { lookAlikes } from './look-alikes.js';

describe('lookAlikes', () => {
  it('flags words that mix scripts or pass for ASCII ones, naming what they read as', () => {
    expect(lookAlikes("UPDATE users SET role = 'admin' WHERE name = '\u0430lice'")).toEqual([
      '"\u0430lice" mixes Cyrillic and Latin (U+0430 \u0430), reads as "alice"',
    ]);
    // A table wholly in another script that reads as a Latin name, and one in fullwidth forms.
    expect(lookAlikes('DELETE FROM \u0441\u043e\u0440')).toEqual([
      '"\u0441\u043e\u0440" is Cyrillic (U+0441 \u0441, U+043E \u043e, U+0440 \u0440), reads as "cop"',
    ]);
    expect(lookAlikes('DELETE FROM \uff55\uff53\uff45\uff52\uff53')).toEqual([
      '"\uff55\uff53\uff45\uff52\uff53" is in compatibility forms (U+FF55 \uff55, U+FF53 \uff53, U+FF45 \uff45, U+FF52 \uff52), reads as "users"',
    ]);
    // Scripts whose look-alikes only Unicode's full confusables table (UTS #39) knows: Coptic, Deseret.
    expect(lookAlikes('DELETE FROM \u2ca2\u2c9e\u2c9e\u2ca6')).toEqual([
      '"\u2ca2\u2c9e\u2c9e\u2ca6" is Coptic (U+2CA2 \u2ca2, U+2C9E \u2c9e, U+2CA6 \u2ca6), reads as "POOT"',
    ]);
    expect(lookAlikes("WHERE name = '\u{10420}\u{1042c}\u{1042c}'")).toEqual([
      '"\u{10420}\u{1042c}\u{1042c}" is Deseret (U+10420 \u{10420}, U+1042C \u{1042c}), reads as "Soo"',
    ]);
    // Greek in a Latin word, with no ASCII reading: still mixed.
    expect(lookAlikes('SELECT \u03a9mega')).toEqual(['"\u03a9mega" mixes Greek and Latin (U+03A9 \u03a9)']);
    // Each word once, at most `max`.
    expect(lookAlikes('\u0430 \u0430 \u0435 \u043e', 2)).toHaveLength(2);
  });

  it('leaves ordinary text in one script alone', () => {
    expect(
      lookAlikes(
        "SELECT 'h\u00e9llo \u6771\u4eac \u05e9\u05dc\u05d5\u05dd \u6771\u4eac\u30bf\u30ef\u30fc \u0434\u0430\u043d\u043d\u044b\u0435' FROM t",
      ),
    ).toEqual([]);
    expect(lookAlikes('plain ascii_only $1')).toEqual([]);
  });
});
