import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { decisionSigningKey, decisionVerifyKey } from '../approvals/decision-signature.js';
import {
  type ControlMessage,
  controlPolicyRef,
  controlSubject,
  parseControlMessage,
  type SuspensionMessage,
  signControl,
  type TerminateMessage,
  verifyControl,
} from './control-messages.js';

const ed = generateKeyPairSync('ed25519');
const pub = String(ed.publicKey.export({ type: 'spki', format: 'pem' }));
const priv = String(ed.privateKey.export({ type: 'pkcs8', format: 'pem' }));
const other = generateKeyPairSync('ed25519');

const terminate: TerminateMessage = {
  v: 1,
  id: '6f1c2a9e-3b4d-4e5f-8a9b-0c1d2e3f4a5b',
  kind: 'terminate',
  session: '0e1c2a9e-3b4d-4e5f-8a9b-0c1d2e3f4a5b',
  by: 'alice',
  reason: 'runaway agent',
  at: '2026-12-01T03:00:00.000Z',
};
const suspend: SuspensionMessage = {
  v: 1,
  id: '7f1c2a9e-3b4d-4e5f-8a9b-0c1d2e3f4a5b',
  kind: 'suspend',
  policy: { namespace: 'agents', name: 'batch.writer' },
  by: 'alice',
  reason: 'incident 7',
  at: '2026-12-01T03:00:00.000Z',
};

describe('control messages', () => {
  it('round-trips both kinds and names their subjects', () => {
    expect(parseControlMessage(JSON.stringify(terminate))).toEqual(terminate);
    expect(parseControlMessage(Buffer.from(JSON.stringify(suspend)))).toEqual(suspend);
    expect(controlSubject(terminate)).toBe(`pgwarden.control.session.${terminate.session}`);
    expect(controlSubject(suspend)).toBe('pgwarden.control.policy.agents.batch.writer');
    expect(controlPolicyRef('p')).toEqual({ namespace: '_', name: 'p' });
    expect(controlPolicyRef('p', 'ns')).toEqual({ namespace: 'ns', name: 'p' });
  });

  it('refuses malformed messages, including names that would change the subject', () => {
    const bad: unknown[] = [
      'not json',
      '[]',
      { ...terminate, v: 2 },
      { ...terminate, kind: 'kill' },
      { ...terminate, session: 'x.>' },
      { ...terminate, id: 'nope' },
      { ...terminate, by: '' },
      { ...terminate, reason: '' },
      { ...terminate, reason: 'x'.repeat(1025) },
      { ...terminate, at: 42 },
      { ...terminate, sig: 7 },
      { ...suspend, policy: { namespace: 'a.b', name: 'p' } },
      { ...suspend, policy: { namespace: 'ns', name: 'p.*' } },
      { ...suspend, policy: { namespace: 'ns', name: 'P' } },
      { ...suspend, policy: { namespace: 'ns', name: 'a..b' } },
      { ...suspend, policy: { namespace: 'ns' } },
      { ...suspend, policy: undefined },
    ];
    for (const b of bad) expect(parseControlMessage(typeof b === 'string' ? b : JSON.stringify(b))).toBeUndefined();
  });

  it('verifies what the key signed and nothing that differs in any field', () => {
    const key = decisionSigningKey(priv);
    const keys = [decisionVerifyKey(pub)];
    for (const m of [terminate, suspend] as ControlMessage[]) {
      const signed = signControl(m, key);
      expect(verifyControl(signed, keys)).toBe(true);
      // Through the wire and back: key order does not matter, the values do.
      expect(verifyControl(parseControlMessage(JSON.stringify(signed))!, keys)).toBe(true);
      expect(verifyControl(m, keys)).toBe(false);
      expect(verifyControl(signed, [other.publicKey])).toBe(false);
      expect(verifyControl({ ...signed, sig: 'AAAA' }, keys)).toBe(false);
    }
    const t = signControl(terminate, key);
    expect(verifyControl({ ...t, session: '1e1c2a9e-3b4d-4e5f-8a9b-0c1d2e3f4a5b' }, keys)).toBe(false);
    expect(verifyControl({ ...t, reason: 'other' }, keys)).toBe(false);
    expect(verifyControl({ ...t, by: 'mallory' }, keys)).toBe(false);
    const s = signControl(suspend, key);
    expect(verifyControl({ ...s, kind: 'resume' }, keys)).toBe(false);
    expect(verifyControl({ ...s, policy: { namespace: 'other', name: 'batch.writer' } }, keys)).toBe(false);
  });
});
