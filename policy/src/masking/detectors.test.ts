import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  DETECTOR_NAMES,
  findSecrets,
  ibanValid,
  luhnValid,
  mightContainSecret,
  mightContainSecretBytes,
  scrubSecrets,
  usSsnValid,
} from './detectors.js';

const ALL = DETECTOR_NAMES;
const found = (text: string) => findSecrets(text, ALL).map((s) => [text.slice(s.start, s.end), s.detector]);

describe('checksums', () => {
  it('Luhn accepts valid card numbers and rejects one-digit changes', () => {
    for (const n of ['4111111111111111', '5500005555555559', '378282246310005', '6011111111111117']) {
      expect(luhnValid(n)).toBe(true);
      const bad = n.slice(0, -1) + String((Number(n.at(-1)) + 1) % 10);
      expect(luhnValid(bad)).toBe(false);
    }
    expect(luhnValid('')).toBe(false);
  });
  it('IBAN mod-97 (ISO 13616)', () => {
    expect(ibanValid('GB82 WEST 1234 5698 7654 32')).toBe(true);
    expect(ibanValid('DE89370400440532013000')).toBe(true);
    expect(ibanValid('de89370400440532013000')).toBe(true);
    expect(ibanValid('DE89370400440532013001')).toBe(false);
    expect(ibanValid('XX00')).toBe(false);
  });
  it('SSN ranges', () => {
    expect(usSsnValid('123456789')).toBe(true);
    for (const bad of ['000456789', '666456789', '923456789', '123006789', '123450000'])
      expect(usSsnValid(bad)).toBe(false);
  });
});

describe('detectors', () => {
  it('finds each kind of secret', () => {
    expect(found('mail alice.o+x@mail.example.co.uk now')).toEqual([['alice.o+x@mail.example.co.uk', 'email']]);
    expect(found('card 4111 1111 1111 1111 exp')).toEqual([['4111 1111 1111 1111', 'credit-card']]);
    expect(found('card 4111-1111-1111-1111')).toEqual([['4111-1111-1111-1111', 'credit-card']]);
    expect(found('ssn 123-45-6789.')).toEqual([['123-45-6789', 'us-ssn']]);
    expect(found('iban GB82 WEST 1234 5698 7654 32 ok')).toEqual([['GB82 WEST 1234 5698 7654 32', 'iban']]);
    expect(found('key AKIAIOSFODNN7EXAMPLE')).toEqual([['AKIAIOSFODNN7EXAMPLE', 'aws-access-key']]);
    expect(found('lower akiaiosfodnn7example')).toEqual([['akiaiosfodnn7example', 'aws-access-key']]);
    const jwt = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U';
    expect(found(`Bearer ${jwt}`)).toEqual([[jwt, 'jwt']]);
  });
  it('phones: E.164 and national forms', () => {
    for (const p of [
      '+14155552671',
      '+44 20 7946 0958',
      '(415) 555-2671',
      '415-555-2671',
      '415.555.2671',
      '020 7946 0958',
      '06-12345678',
    ]) {
      expect(found(`call ${p} today`).map((x) => x[0])).toEqual([p]);
    }
  });
  it('private key blocks, whole or cut short, with escaped newlines', () => {
    const pem = '-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAK\n-----END RSA PRIVATE KEY-----';
    expect(scrubSecrets(`x ${pem} y`, ALL)).toBe(`x ${'*'.repeat(pem.length)} y`);
    expect(scrubSecrets('-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADAN', ALL)).not.toContain('MIIEvQ');
    expect(scrubSecrets('-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk', ALL)).not.toContain('b3Blbn');
  });
  it('leaves ordinary numbers, dates, ids and words alone', () => {
    for (const t of [
      'order 12345',
      '2024-05-01 10:00:00',
      'id 4111111111111112',
      'total 1234.56',
      'Alice Smith',
      'version 1.2.3',
      'uuid 550e8400-e29b-41d4-a716-446655440000',
    ]) {
      expect(findSecrets(t, ALL), t).toEqual([]);
    }
  });
  it('scrubbing is length-preserving', () => {
    const t = 'a alice@example.com b 123-45-6789';
    const s = scrubSecrets(t, ALL);
    expect(s.length).toBe(t.length);
    expect(s).toBe('a ***************** b ***********');
  });
  it('only the configured detectors run', () => {
    expect(scrubSecrets('alice@example.com 123-45-6789', ['us-ssn'])).toBe('alice@example.com ***********');
  });
});

// Planted secrets of every kind, embedded in random text, never survive scrubbing.
const digits = (n: number) =>
  fc.array(fc.integer({ min: 0, max: 9 }), { minLength: n, maxLength: n }).map((a) => a.join(''));
const withLuhn = (body: string) => {
  for (let d = 0; d < 10; d++) if (luhnValid(body + d)) return body + d;
  return body;
};
const secret = fc.oneof(
  fc
    .tuple(
      fc.stringMatching(/^[a-z][a-z0-9._]{0,10}$/),
      fc.stringMatching(/^[a-z]{2,8}$/),
      fc.constantFrom('com', 'org', 'io'),
    )
    .map(([l, d, t]) => `${l}@${d}.${t}`),
  digits(15).map((d) => withLuhn(`4${d}`)),
  fc
    .tuple(fc.integer({ min: 1, max: 665 }), fc.integer({ min: 1, max: 99 }), fc.integer({ min: 1, max: 9999 }))
    .map(([a, g, s]) => `${String(a).padStart(3, '0')}-${String(g).padStart(2, '0')}-${String(s).padStart(4, '0')}`),
  digits(10).map((d) => `+1${d}`),
  fc.stringMatching(/^[A-Z0-9]{16}$/).map((s) => `AKIA${s}`),
);
const filler = fc.stringMatching(/^[a-zA-Z ,.;:!?()]{0,20}$/);

describe('property: planted secrets never pass', () => {
  it('scrubSecrets removes every planted secret from surrounding text', () => {
    fc.assert(
      fc.property(filler, secret, filler, (a, s, b) => {
        const text = `${a} ${s} ${b}`;
        expect(scrubSecrets(text, ALL)).not.toContain(s);
      }),
      { numRuns: 500 },
    );
  });
});

describe('mightContainSecretBytes', () => {
  it('finds each trigger on the bytes, in either case, and nothing in plain words', () => {
    for (const t of ['x7', 'a@b', '-----BEGIN', 'EyJhbG', 'akia', 'xAs3', 'A3T']) {
      expect(mightContainSecretBytes(Buffer.from(`name ${t}`), 0, t.length + 5)).toBe(true);
    }
    for (const t of ['Bob Lee', 'pending', 'ey-j', '----', 'Ünïcödé ÄK ａｋ', '']) {
      expect(mightContainSecretBytes(Buffer.from(t), 0, Buffer.byteLength(t))).toBe(false);
    }
    // Only the given range counts: a trigger just outside it does not.
    expect(mightContainSecretBytes(Buffer.from('7word8'), 1, 5)).toBe(false);
  });

  it('property: agrees with mightContainSecret on the decoded text, for any bytes', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ unit: 'binary', maxLength: 40 }).map((s) => Buffer.from(s, 'utf8')),
          fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a)),
          fc
            .array(fc.constantFrom('-', 'e', 'Y', 'j', 'a', 'K', '3', ' ', 'x', '\u00e9', '\xff'), { maxLength: 12 })
            .map((a) => Buffer.from(a.join(''), 'utf8')),
        ),
        (b) => {
          const text = b.toString('utf8');
          // Never false where the text might hold a secret (the skip must be safe); equal on valid UTF-8.
          if (mightContainSecret(text)) expect(mightContainSecretBytes(b, 0, b.length)).toBe(true);
          if (Buffer.from(text, 'utf8').equals(b))
            expect(mightContainSecretBytes(b, 0, b.length)).toBe(mightContainSecret(text));
        },
      ),
      { numRuns: 2000 },
    );
  });
});
