/**
 * Words that are not what they look like: `DELETE FROM users WHERE name = 'аdmin'` (a Cyrillic а), a table
 * `рayments` beside `payments`, an identity `ana` whose `а` is Cyrillic. Naming every non-ASCII character
 * (visible-text.ts) tells an approver *that* something is foreign, not *which word* pretends to be which; lookAlikes
 * says so. It uses nothing but lookAlikeSkeleton (@pgwarden/policy: the one reading of look-alike letters, Unicode's
 * confusables, which the sidecar's deny rules and four-eyes check fold with too), and both are self-contained but for
 * the table: the web UI embeds their source and the table, so the browser, the CLI and chat notices flag the same words.
 */
// The subpath (the skeleton and its table), not the package: the CLI's client commands load this without the parser.
import {
  confusablePrototypes as policyConfusablePrototypes,
  lookAlikeSkeleton as policyLookAlikeSkeleton,
} from '@pgwarden/policy/look-alike-skeleton';

/**
 * The policy package's, bound to a name of this module: lookAlikes calls it by that name, which its embedded copy in
 * the web UI also has. A call through the import itself is compiled for the test runner into a property of the
 * imported module object, which the browser does not have.
 */
export const lookAlikeSkeleton = policyLookAlikeSkeleton;

/** The table lookAlikeSkeleton reads (Unicode's confusables, in its compact form), for the web UI to define beside it. */
export const confusablePrototypes = policyConfusablePrototypes;

/**
 * The words of `text` (letters, marks, digits, `_`, `$`: identifiers and the words of literals) that are not what
 * they look like, at most `max`, each as one line for a person: a word mixing scripts (`аdmin`: Cyrillic and Latin),
 * a word of another script, or of compatibility forms (fullwidth, mathematical letters), that reads as an ASCII one.
 * Ordinary text in one script (`héllo`, `東京`, `שלום`, Japanese mixing Han and kana) is not flagged.
 */
export function lookAlikes(text: string, max = 8): string[] {
  const scriptNames = [
    'Latin',
    'Cyrillic',
    'Greek',
    'Armenian',
    'Cherokee',
    'Lisu',
    'Georgian',
    'Coptic',
    'Hebrew',
    'Arabic',
    'Syriac',
    'Thaana',
    'Nko',
    'Devanagari',
    'Bengali',
    'Gurmukhi',
    'Gujarati',
    'Oriya',
    'Tamil',
    'Telugu',
    'Kannada',
    'Malayalam',
    'Sinhala',
    'Thai',
    'Lao',
    'Tibetan',
    'Myanmar',
    'Ethiopic',
    'Khmer',
    'Mongolian',
    'Hangul',
    'Hiragana',
    'Katakana',
    'Bopomofo',
    'Han',
    'Canadian_Aboriginal',
    'Tifinagh',
    'Vai',
    'Yi',
    'Runic',
    'Ogham',
    'Osage',
    'Adlam',
    'Deseret',
    'Gothic',
    'Old_Italic',
    'Glagolitic',
  ];
  const scripts = scriptNames.map((name) => ({ name, re: new RegExp(`\\p{Script=${name}}`, 'u') }));
  const neutral = /[\p{Script=Common}\p{Script=Inherited}]/u;
  const scriptOf = (ch: string) => {
    if (neutral.test(ch)) return undefined;
    const found = scripts.find((s) => s.re.test(ch));
    return found ? found.name : 'another script';
  };
  // Writing systems that mix scripts by nature (Unicode TR #39, "highly restrictive"): not a sign of spoofing.
  const together = [
    ['Han', 'Hiragana', 'Katakana'],
    ['Han', 'Hangul'],
    ['Han', 'Bopomofo'],
  ];
  const hex = (ch: string) => `U+${(ch.codePointAt(0) as number).toString(16).toUpperCase().padStart(4, '0')}`;
  const found: string[] = [];
  const seen = new Set<string>();
  for (const [word] of text.matchAll(/[\p{L}\p{M}\p{N}_$]+/gu)) {
    if (found.length >= max) break;
    if (/^[\x00-\x7f]*$/.test(word) || seen.has(word)) continue;
    seen.add(word);
    const inWord = new Set<string>();
    for (const ch of word) {
      const s = scriptOf(ch);
      if (s) inWord.add(s);
    }
    const names = [...inWord].sort();
    const mixed = names.length > 1 && !together.some((ok) => names.every((n) => ok.includes(n)));
    // What it reads as: other scripts' Latin look-alikes and compatibility forms replaced, accents kept (é is seen).
    const reads = lookAlikeSkeleton(word, true);
    const posesAsAscii = reads !== word && /^[\x00-\x7f]*$/.test(reads);
    if (!mixed && !posesAsAscii) continue;
    const foreign = [...new Set([...word].filter((ch) => (ch.codePointAt(0) as number) >= 0x80))];
    const named = foreign
      .slice(0, 4)
      .map((ch) => `${hex(ch)} ${ch}`)
      .join(', ');
    const what = mixed
      ? `mixes ${names.join(' and ')}`
      : `is ${names.includes('Latin') || names.length === 0 ? 'in compatibility forms' : names.join(' and ')}`;
    found.push(
      `"${word}" ${what} (${named}${foreign.length > 4 ? ', …' : ''})${posesAsAscii ? `, reads as "${reads}"` : ''}`,
    );
  }
  return found;
}
