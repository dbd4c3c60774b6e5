import { describe, expect, it } from 'vitest';
import { lookAlikeSkeleton } from './look-alike-skeleton.js';

describe('lookAlikeSkeleton', () => {
  it('reduces names to what they look like', () => {
    for (const s of ['\u0430na', '\uff41\uff4e\uff41', 'an\u00e1', 'a\u200bna'])
      expect(lookAlikeSkeleton(s), s).toBe('ana');
    expect(lookAlikeSkeleton('aIice')).toBe(lookAlikeSkeleton('alice'));
    expect(lookAlikeSkeleton('rnartin')).toBe(lookAlikeSkeleton('martin'));
    expect(lookAlikeSkeleton('\u0440', true)).toBe('p');
  });
});
