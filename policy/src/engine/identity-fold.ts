/**
 * Latin look-alikes in other scripts (a subset of Unicode TR39 confusables.txt), after lower-casing: the letters an
 * ordinary keyboard layout or an identity provider's profile form lets a user type in place of a Latin one.
 */
const LOOKALIKES: Record<string, string> = {
  // Cyrillic
  а: 'a',
  в: 'b',
  с: 'c',
  ԁ: 'd',
  е: 'e',
  һ: 'h',
  н: 'h',
  і: 'i',
  ј: 'j',
  к: 'k',
  ӏ: 'l',
  м: 'm',
  о: 'o',
  р: 'p',
  ԛ: 'q',
  ѕ: 's',
  т: 't',
  у: 'y',
  ԝ: 'w',
  х: 'x',
  // Greek
  α: 'a',
  ι: 'i',
  κ: 'k',
  ν: 'v',
  ο: 'o',
  ρ: 'p',
  υ: 'u',
  χ: 'x',
  γ: 'y',
};

const MARKS_AND_INVISIBLES = /[\p{M}\p{Default_Ignorable_Code_Point}]/gu;
const LOOKALIKE = new RegExp(`[${Object.keys(LOOKALIKES).join('')}]`, 'gu');

/**
 * One spelling for the many ways a user can write the same name in a claim they can edit (`email`,
 * `preferred_username`): compatibility forms (fullwidth, mathematical letters, ligatures) and accents dropped
 * (NFKD without marks), zero-width and other invisible characters removed, case folded, common Cyrillic and Greek
 * look-alikes read as Latin, surrounding white space trimmed, and for an address `local+tag@domain.` the tag and
 * the domain's trailing dots dropped.
 *
 * Only for decisions where matching more names is the safe direction (deny rules, the four-eyes check): two
 * different people can fold to the same name, so an allow-like list (allow rules, `unmaskedFor`, approvers)
 * matched this way would let one in as the other. Not exhaustive either (provider rules such as Gmail ignoring dots
 * are not known here): rules meant to hold should name `sub` or groups, which the user cannot edit.
 */
export function foldIdentity(name: string): string {
  let s = name.normalize('NFKD').replace(MARKS_AND_INVISIBLES, '');
  // Upper then lower: ß → SS → ss, ı → I → i; toLowerCase alone leaves both as they are.
  s = s
    .toUpperCase()
    .toLowerCase()
    .replace(LOOKALIKE, (c) => LOOKALIKES[c] as string)
    .trim();
  const at = s.lastIndexOf('@');
  if (at > 0) {
    const local = s.slice(0, at);
    const plus = local.indexOf('+');
    s = `${plus > 0 ? local.slice(0, plus) : local}@${s.slice(at + 1).replace(/\.+$/, '')}`;
  }
  return s;
}

/** True when `a` and `b` are the same name or spellings of one (foldIdentity). */
export function sameIdentity(a: string, b: string): boolean {
  return a === b || foldIdentity(a) === foldIdentity(b);
}
