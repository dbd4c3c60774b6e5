import { describe, expect, it } from 'vitest';
import { foldIdentity, sameIdentity } from './identity-fold.js';

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
    expect(foldIdentity('\u0130nci')).toBe('inci');
    expect(foldIdentity('\u0410DMINS')).toBe('admins');
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
