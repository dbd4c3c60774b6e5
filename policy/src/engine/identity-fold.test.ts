import { describe, expect, it } from 'vitest';
import { CONFUSABLE_PROTOTYPES } from './confusable-prototypes.js';
import { foldIdentity, identitySpellings, sameIdentity } from './identity-fold.js';
import { lookAlikeSkeleton } from './look-alike-skeleton.js';

describe('foldIdentity', () => {
  it('gives one spelling to the ways a user can write the same name', () => {
    const boss = 'boss@example.com';
    for (const spelling of [
      'Boss@Example.COM',
      'boss+ci@example.com',
      'boss@example.com.',
      'b\u043ess@example.com', // Cyrillic о
      '\u0412oss@example.com', // Cyrillic В
      '\uff42\uff4f\uff53\uff53@example.com', // fullwidth
      '\u{1d41b}oss@example.com', // mathematical bold b
      'bo\u200bss@example.com', // zero-width space
      'bo\u00adss@example.com', // soft hyphen
      'bo\u0073\u0307s@example.com', // combining dot above
      ' boss@example.com\t',
      'BOSS@EXAMPLE.COM..',
    ])
      expect(foldIdentity(spelling), JSON.stringify(spelling)).toBe(boss);
    expect(foldIdentity('Stra\u00dfe')).toBe('strasse');
    expect(foldIdentity('STRA\u1e9eE')).toBe('strasse'); // capital ẞ, which toUpperCase leaves as it is
    expect(foldIdentity('\u0130nci')).toBe('inci');
    expect(foldIdentity('\u0410DMINS')).toBe('admins');
  });

  it('reads every letter the collector flags as the Latin one it passes for (the one table, lookAlikeSkeleton)', () => {
    for (const spelling of [
      'b\u0585ss@example.com', // Armenian օ
      '\u13f4oss@example.com', // Cherokee Ᏼ
      '\ua4d0oss@example.com', // Lisu ꓐ
      '\u03b2oss@example.com', // Greek β
      'bo\u0455\u0455@example.com', // Cyrillic ѕ
    ])
      expect(foldIdentity(spelling), JSON.stringify(spelling)).toBe('boss@example.com');
    // Every letter of the scripts the table covers, of compatibility forms and of Latin variants, in either case:
    // where the collector reads one as Latin, foldIdentity reads it as that Latin letter too.
    const ranges = [
      [0x80, 0x590], // Latin-1 to Armenian
      [0x13a0, 0x1400], // Cherokee
      [0x1d00, 0x2200], // phonetic extensions, Latin and Greek extended, letterlike symbols
      [0xa4d0, 0xa500], // Lisu
      [0xab70, 0xabc0], // Cherokee small letters
      [0xfb00, 0xfb50], // ligatures
      [0xff00, 0xfff0], // fullwidth
      [0x1d400, 0x1d800], // mathematical letters
    ];
    const missed: string[] = [];
    for (const [from, to] of ranges)
      for (let cp = from as number; cp < (to as number); cp++) {
        const c = String.fromCodePoint(cp);
        for (const letter of [c, c.toLowerCase()]) {
          const latin = lookAlikeSkeleton(letter, true);
          if (latin !== letter && foldIdentity(letter) !== foldIdentity(latin)) missed.push(`${letter} → ${latin}`);
        }
      }
    expect(missed).toEqual([]);
  });

  it("reads every pair of Unicode's confusables.txt (UTS #39) as one name", () => {
    // The generated table, read here on its own (runs `gap[+n|=n]:prototype`, base 36) so the test does not trust
    // the reader it checks.
    const pairs: [string, string][] = [];
    let src = 0;
    for (const run of CONFUSABLE_PROTOTYPES.split(',')) {
      const [, gap, op, count, to] = /^([0-9a-z]+)(?:([+=])([0-9a-z]+))?:([0-9a-z.]+)$/.exec(run) ?? [];
      const cps = (to as string).split('.').map((c) => Number.parseInt(c, 36));
      src += Number.parseInt(gap as string, 36);
      const n = count ? Number.parseInt(count, 36) : 1;
      for (let i = 0; i < n; i++)
        pairs.push([
          String.fromCodePoint(src + i),
          String.fromCodePoint(...(op === '+' ? [(cps[0] as number) + i] : cps)),
        ]);
      src += n - 1;
    }
    expect(pairs.length).toBeGreaterThan(6000);
    const missed = pairs
      // UTS #39's skeleton decomposes (NFD) before it looks a character up: a source that decomposes (ö) is never read.
      .filter(([from]) => from.normalize('NFD') === from)
      .filter(([from, to]) => !sameIdentity(`x${from}y`, `x${to}y`))
      .map(([from, to]) => `${from} → ${to}`);
    expect(missed).toEqual([]);
  });

  it('folds the dots of a Gmail address, at gmail.com and googlemail.com only', () => {
    for (const spelling of ['b.o.s.s@gmail.com', 'Bo.ss+x@GoogleMail.com', 'boss@googlemail.com.'])
      expect(foldIdentity(spelling), spelling).toBe('boss@gmail.com');
    expect(foldIdentity('bo.ss@example.com')).toBe('bo.ss@example.com');
    expect(foldIdentity('bo.ss@gmail.co')).toBe('bo.ss@gmail.co');
  });

  it('keeps apart names that differ in more than spelling', () => {
    expect(foldIdentity('boss2@example.com')).not.toBe(foldIdentity('boss@example.com'));
    expect(foldIdentity('boss@example.org')).not.toBe(foldIdentity('boss@example.com'));
    expect(foldIdentity('+boss@example.com')).toBe('+boss@example.com');
    expect(foldIdentity('a+b')).toBe('a+b');
    expect(sameIdentity('alice', 'alice')).toBe(true);
    expect(sameIdentity('alice', 'ALICE')).toBe(true);
    expect(sameIdentity('alice', 'alicia')).toBe(false);
  });
});

describe('sameIdentity', () => {
  it('also takes the ASCII look-alikes the collector reads (I 1 | as l, 0 as o, rn as m, vv as w) for one name', () => {
    for (const [a, b] of [
      ['alice', 'aIice'],
      ['alice', 'a1ice'],
      ['alice', 'A1ICE'],
      ['alice', 'a|ice'],
      ['martin', 'rnartin'],
      ['wendy', 'vvendy'],
      ['boss@example.com', 'B0SS+x@Example.com'],
      ['boss@example.com', 'b0ss@examp1e.com'],
    ])
      expect(sameIdentity(a as string, b as string), `${a} ${b}`).toBe(true);
  });

  it('still keeps apart names that only a careless reading merges', () => {
    // Lower case alone cannot read a capital I as l, and reading every i as l would make these one.
    for (const [a, b] of [
      ['neil', 'nell'],
      ['NEIL', 'nell'],
      ['ali', 'all'],
      ['alice', 'alicia'],
      ['boss@example.com', 'boss@example.org'],
    ])
      expect(sameIdentity(a as string, b as string), `${a} ${b}`).toBe(false);
  });

  it('foldIdentity is one of the spellings, so a deny rule keeps every match it had', () => {
    for (const name of ['Arnold@Example.com', 'b\u043ess', 'vvv', 'ana+x@gmail.com'])
      expect(identitySpellings(name)[0]).toBe(foldIdentity(name));
  });
});
