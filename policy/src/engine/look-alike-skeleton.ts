import { CONFUSABLE_PROTOTYPES } from './confusable-prototypes.js';

/**
 * The table, bound to a name of this module: lookAlikeSkeleton reads it by that name, which the web UI also defines
 * beside its embedded copy. A read through the import itself is compiled for the test runner into a property of the
 * imported module object, which the browser does not have.
 */
export const confusablePrototypes = CONFUSABLE_PROTOTYPES;

/**
 * `text` reduced to what it looks like, for telling whether two names could be taken for each other. First Unicode's
 * skeleton (UTS #39, https://www.unicode.org/reports/tr39/#Confusable_Detection: NFD, default-ignorable characters
 * removed, each character replaced by its prototype in confusables.txt, NFD again; confusable-prototypes.ts, the
 * whole table), so names Unicode calls confusable have one skeleton; then read further, which only merges more:
 * compatibility forms folded (NFKD), other scripts' letters read as the Latin ones they pass for (`lettersOnly`),
 * accents and invisible characters dropped, and the ASCII look-alikes `I 1 |` → `l`, `0` → `o`, `rn` → `m`,
 * `vv` → `w`.
 *
 * `lettersOnly`: what a word reads as, its accents and ASCII kept: compatibility forms folded and each other
 * character replaced by its prototype, or by the Latin letter it passes for where Unicode's prototype is another
 * look-alike (Cyrillic м: Unicode's ʍ, read as M too).
 *
 * The one reading of look-alike letters: identity decisions fold with it (identity-fold.ts), the collector flags
 * words with it. Self-contained but for confusablePrototypes (no imports, no other outer names): the collector's web
 * UI embeds its source (`lookAlikeSkeleton.toString()`), so the browser reads names as the sidecar and the collector.
 */
export function lookAlikeSkeleton(text: string, lettersOnly = false): string {
  // The maps are built on the first call (~15 ms: 6,000 entries) and kept on the function itself, the one place a
  // self-contained function can keep them: identity folding calls this several times for every name it compares.
  const self = lookAlikeSkeleton as typeof lookAlikeSkeleton & {
    maps?: { prototypes: Map<string, string>; latin: Map<string, string> };
  };
  let maps = self.maps;
  if (!maps) {
    const prototypes = new Map<string, string>();
    let src = 0;
    for (const run of confusablePrototypes.split(',')) {
      // `gap[+n|=n]:prototype` in base 36 (policy/scripts/generate-confusables.mjs).
      const colon = run.indexOf(':');
      const op = run.search(/[+=]/);
      const head = op < 0 ? colon : op;
      const n = op < 0 ? 1 : Number.parseInt(run.slice(op + 1, colon), 36);
      src += Number.parseInt(run.slice(0, head), 36);
      const to = run.slice(colon + 1);
      if (run[op] === '+') {
        const first = Number.parseInt(to, 36);
        for (let i = 0; i < n; i++) prototypes.set(String.fromCodePoint(src + i), String.fromCodePoint(first + i));
      } else {
        const prototype = String.fromCodePoint(...to.split('.').map((c) => Number.parseInt(c, 36)));
        for (let i = 0; i < n; i++) prototypes.set(String.fromCodePoint(src + i), prototype);
      }
      src += n - 1;
    }
    // Pairs: a letter whose prototype is another look-alike (a small capital, ʍ, ĸ, ß) or a letter Unicode
    // leaves as it is, then the ASCII letter it passes for in a name (where the fold's case steps can reach it).
    const latin = new Map<string, string>();
    for (const pair of 'вB з3 кk мM нH пn тT ӏl ьb ІI ԀD ҺH ԚQ βB εe κk τt χx ωw ΙI ϴO ԼL ȷj ꓲI'.split(' ')) {
      const [from, to] = [...pair] as [string, string];
      latin.set(from, to);
    }
    maps = { prototypes, latin };
    self.maps = maps;
  }

  // Most names are ASCII, which only the last steps change: they skip the normalizations.
  const ascii = /^[\x00-\x7f]*$/.test(text);
  if (lettersOnly) {
    if (ascii) return text;
    const { latin, prototypes } = maps;
    const read = (s: string) => {
      let out = '';
      for (const ch of s) out += ch < '\x80' ? ch : (latin.get(ch) ?? prototypes.get(ch) ?? ch);
      return out;
    };
    // Canonical forms first, as the table's sources are (a compatibility form can have an entry of its own: ϲ is c,
    // its NFKD ς is not); then what compatibility folding leaves, read again.
    return read(read(text.normalize('NFD')).normalize('NFKD')).normalize('NFC');
  }
  let skeleton = '';
  const ignorable = /\p{Default_Ignorable_Code_Point}/gu;
  for (const ch of ascii ? text : text.normalize('NFD').replace(ignorable, ''))
    skeleton += maps.prototypes.get(ch) ?? ch;
  if (!ascii || !/^[\x00-\x7f]*$/.test(skeleton))
    skeleton = lookAlikeSkeleton(skeleton.normalize('NFD'), true)
      .normalize('NFKD')
      .replace(/[\p{M}\p{Cf}\p{Default_Ignorable_Code_Point}]/gu, '');
  return skeleton.replace(/[I1|]/g, 'l').replace(/0/g, 'o').replace(/rn/g, 'm').replace(/vv/g, 'w');
}
