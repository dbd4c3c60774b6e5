/**
 * `text` reduced to what it looks like, for telling whether two names could be taken for each other: compatibility
 * forms folded (NFKC: fullwidth, mathematical letters), letters of other scripts that look like Latin ones replaced
 * by them (a subset of Unicode TR #39's confusables: Cyrillic, Greek, Armenian, Cherokee, Lisu, Latin variants),
 * accents
 * and invisible characters dropped, and the ASCII look-alikes `I 1 |` → `l`, `0` → `o`, `rn` → `m`, `vv` → `w`.
 * `lettersOnly`: only the first two steps (what a word reads as, its accents kept).
 *
 * The one table of look-alike letters: identity decisions fold with it (identity-fold.ts), the collector flags words
 * with it. Self-contained (no imports, no outer constants): the collector's web UI embeds its source
 * (`lookAlikeSkeleton.toString()`), so the browser reads names as the sidecar and the collector do.
 */
export function lookAlikeSkeleton(text: string, lettersOnly = false): string {
  // The table is built on the first call and kept on the function itself, the one place a self-contained function
  // can keep it: building it took ~60 µs, and identity folding calls this several times for every name it compares.
  const self = lookAlikeSkeleton as typeof lookAlikeSkeleton & { latin?: Map<string, string> };
  let latin = self.latin;
  if (!latin) {
    latin = new Map();
    // Pairs: a letter of another script (or a Latin variant), then the ASCII letter it passes for.
    const pairs = [
      'аa вB еe ёe з3 іi їi јj кk мM нH оo пn рp сc тT уy хx ѕs ԁd һh ӏl ԛq ԝw үy ьb ɡg АA ВB ЕE ЁE З3 ІI ЇI',
      'ЈJ КK МM НH ОO РP СC ТT УY ХX ЅS ԀD ҺH Ӏl ԚQ ԜW ҮY αa βB γy εe ιi κk νv οo ρp τt υu χx ωw ΑA ΒB ΕE ΖZ',
      'ΗH ΙI ΚK ΜM ΝN ΟO ΡP ΤT ΥY ΧX ϲc ϹC ϳj ϴO օo սu ոn հh զq ցg աw ՍU ՕO ԼL ᎪA ᏴB ᏟC ᎠD ᎬE ᏀG ᎻH ᎫJ ᏦK ᏞL',
      'ᎷM ᏢP ᏚS ᎢT ᏙV ᏔW ᏃZ ıi ɩi ȷj ɑa ʏy ǀl Ɩl ꓲI ꓮA ꓐB ꓚC ꓓD ꓰE ꓝF ꓖG ꓧH ꓙJ ꓗK ꓡL ꓟM ꓠN ꓑP ꓣR ꓢS ꓔT ꓴU ꓦV',
      'ꓪW ꓫX ꓬY ꓜZ',
    ].join(' ');
    for (const pair of pairs.split(' ')) {
      const [from, to] = [...pair] as [string, string];
      latin.set(from, to);
    }
    self.latin = latin;
  }

  let out = '';
  for (const ch of text.normalize('NFKC')) out += latin.get(ch) ?? ch;
  if (lettersOnly) return out;
  return out
    .normalize('NFKD')
    .replace(/[\p{M}\p{Cf}\p{Default_Ignorable_Code_Point}]/gu, '')
    .replace(/[I1|]/g, 'l')
    .replace(/0/g, 'o')
    .replace(/rn/g, 'm')
    .replace(/vv/g, 'w');
}
