import { lookAlikeSkeleton } from './look-alike-skeleton.js';

const MARKS_AND_INVISIBLES = /[\p{M}\p{Cf}\p{Default_Ignorable_Code_Point}]/gu;

/** Gmail reads no dots in the local part, and googlemail.com is the same mailbox as gmail.com. */
const DOTLESS_MAIL_DOMAINS = new Set(['gmail.com', 'googlemail.com']);

/** Letters of other scripts read as the Latin ones they pass for (the collector's reading, lookAlikeSkeleton). */
const latinLetters = (s: string) => lookAlikeSkeleton(s, true);

function spell(name: string, foldCase: boolean): string {
  // Read before and after compatibility folding: some compatibility forms have an entry of their own that their
  // decomposition does not (ϲ is c, its NFKD ς is not; ¢ is c̸), and what folding leaves can have one too.
  let s = latinLetters(latinLetters(name).normalize('NFKD').replace(MARKS_AND_INVISIBLES, ''));
  // The table is per case (Cyrillic м passes for a Latin M; Cherokee's small letters are in it only as capitals):
  // read it after each change of case too, which reads more letters as Latin (Ω as ω, so w): matching more is the
  // safe direction here. Lower, upper, lower: ẞ → ß → SS → ss, ı → I → i; toLowerCase alone leaves ß and ı as
  // they are, and toUpperCase leaves ẞ.
  if (foldCase) s = latinLetters(latinLetters(s.toLowerCase().toUpperCase()).toLowerCase()).toLowerCase();
  s = s.trim();
  const at = s.lastIndexOf('@');
  if (at <= 0) return s;
  let local = s.slice(0, at);
  let domain = s
    .slice(at + 1)
    .toLowerCase()
    .replace(/\.+$/, '');
  const plus = local.indexOf('+');
  if (plus > 0) local = local.slice(0, plus);
  if (DOTLESS_MAIL_DOMAINS.has(domain)) {
    local = local.replace(/\./g, '');
    domain = 'gmail.com';
  }
  return `${local}@${domain}`;
}

/**
 * One spelling for the many ways a user can write the same name in a claim they can edit (`email`,
 * `preferred_username`): compatibility forms (fullwidth, mathematical letters, ligatures) and accents dropped
 * (NFKD without marks), zero-width and other invisible characters removed, letters of other scripts that pass for
 * Latin ones read as those (lookAlikeSkeleton's reading: Unicode's confusables, UTS #39, in every script),
 * case folded, surrounding white space trimmed, and for an address `local+tag@domain.` the tag and the domain's
 * trailing dots dropped; at gmail.com and googlemail.com, which ignore them, the local part's dots too.
 *
 * Only for decisions where matching more names is the safe direction (deny rules, the four-eyes check): two
 * different people can fold to the same name, so an allow-like list (allow rules, `unmaskedFor`, approvers)
 * matched this way would let one in as the other. Not exhaustive either (other providers' aliases are not known
 * here): rules meant to hold should name `sub` or groups, which the user cannot edit.
 */
export function foldIdentity(name: string): string {
  return spell(name, true);
}

/**
 * The spellings a name is compared in, each only with the same spelling of another name: foldIdentity's, and two
 * that also read the ASCII look-alikes as lookAlikeSkeleton does (`1 |` → `l`, `0` → `o`, `rn` → `m`, `vv` → `w`):
 * of the name in lower case, and of the name as written, its case kept, where a capital `I` passes for an `l`
 * (`aIice`, which lower case would turn into `aiice`). No one spelling can do both: reading every `i` as an `l` would
 * make Neil and Nell one person. foldIdentity's own stays among them, so a deny rule's glob that an ASCII step
 * would split (`ar*` against `arnold` read as `amold`) still matches as it did.
 *
 * Because two of them are lookAlikeSkeleton's reading put through foldIdentity, names whose skeletons are equal,
 * as written or in lower case, share a spelling: the sidecar folds at least every look-alike the collector does, and
 * (the skeleton starting from Unicode's) every pair of names UTS #39 calls confusable.
 * For the same decisions as foldIdentity only.
 */
export function identitySpellings(name: string): readonly [string, string, string] {
  return [spell(name, true), spell(lookAlikeSkeleton(name.toLowerCase()), true), spell(lookAlikeSkeleton(name), false)];
}

/**
 * True when `a` and `b` are the same name or could be taken for one another (identitySpellings): the four-eyes
 * check of the sidecar and the collector, which must treat a requester's other spelling as the requester.
 */
export function sameIdentity(a: string, b: string): boolean {
  if (a === b) return true;
  const x = identitySpellings(a);
  const y = identitySpellings(b);
  return x[0] === y[0] || x[1] === y[1] || x[2] === y[2];
}
