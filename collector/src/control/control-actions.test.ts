import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { controlSubject, parseControlMessage, suspensionSubject, verifyControl } from '@pgwarden/policy';
import { describe, expect, it } from 'vitest';
import { controlMessage, suspensionsOf } from './control-actions.js';

const { privateKey } = generateKeyPairSync('ed25519');
const other = generateKeyPairSync('ed25519').privateKey;
const stored = (m: ReturnType<typeof controlMessage>, subject = controlSubject(m)) => ({
  subject,
  data: Buffer.from(JSON.stringify(m)),
});

describe('control messages the collector publishes', () => {
  it('are what the sidecar’s parser accepts, signed only with a key, a fresh id each', () => {
    const target = { kind: 'suspend' as const, policy: { namespace: '_', name: 'local.policy' } };
    const at = new Date('2026-12-01T00:00:00Z');
    const unsigned = controlMessage(target, 'alice', 'incident 42', undefined, at);
    expect(unsigned).toEqual({
      v: 1,
      id: expect.any(String),
      by: 'alice',
      reason: 'incident 42',
      at: at.toISOString(),
      ...target,
    });
    expect(parseControlMessage(JSON.stringify(unsigned))).toEqual(unsigned);
    const signed = controlMessage(target, 'alice', 'incident 42', privateKey, at);
    expect(signed.id).not.toBe(unsigned.id);
    expect(verifyControl(parseControlMessage(JSON.stringify(signed))!, [createPublicKey(privateKey)])).toBe(true);
  });
});

describe('suspensionsOf (the last message per policy subject)', () => {
  const policy = (name: string) => ({ namespace: 'agents', name });
  const suspend = (name: string, key = privateKey) =>
    controlMessage({ kind: 'suspend', policy: policy(name) }, 'alice', 'r', key);

  it('lists suspends by policy, skips resumes, malformed bodies and messages on another subject than their own', () => {
    const replayed = suspend('b');
    const list = suspensionsOf(
      [
        stored(suspend('z')),
        stored(controlMessage({ kind: 'resume', policy: policy('r') }, 'alice', 'over', privateKey)),
        { subject: suspensionSubject(policy('m')), data: Buffer.from('{"v":1,') },
        stored(replayed, suspensionSubject(policy('c'))),
        stored(suspend('a', other)),
        stored(controlMessage({ kind: 'suspend', policy: policy('u') }, 'bob', 'r')),
      ],
      createPublicKey(privateKey),
    );
    expect(list.map((s) => [s.policy.name, s.signed])).toEqual([
      ['a', false], // signed, but not by this collector's key
      ['u', false],
      ['z', true],
    ]);
    expect(Object.keys(list[0]).sort()).toEqual(['at', 'by', 'id', 'policy', 'reason', 'signed']);
  });

  it('without a key of its own, a signature present counts as signed', () => {
    expect(suspensionsOf([stored(suspend('a', other))]).map((s) => s.signed)).toEqual([true]);
  });
});
