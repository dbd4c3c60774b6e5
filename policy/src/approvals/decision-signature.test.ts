import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parsePolicyDocuments } from '../api/load-documents.js';
import { type ApprovalDecisionMessage, parseApprovalDecision } from './approval-messages.js';
import {
  decisionSigningKey,
  decisionVerifyKey,
  decisionVerifyKeys,
  signDecision,
  signRevocation,
  verifyDecision,
  verifyRevocation,
} from './decision-signature.js';

const ed = generateKeyPairSync('ed25519');
const pub = String(ed.publicKey.export({ type: 'spki', format: 'pem' }));
const priv = String(ed.privateKey.export({ type: 'pkcs8', format: 'pem' }));
const decision: ApprovalDecisionMessage = {
  v: 1,
  id: '6f1c2a9e-3b4d-4e5f-8a9b-0c1d2e3f4a5b',
  decision: 'approved',
  by: { name: 'alice', groups: ['dba', 'oncall'] },
  reason: 'ticket 42',
  at: '2026-11-30T19:00:00.000Z',
};

describe('approval decision signatures', () => {
  it('verifies what the key signed and nothing that differs in any field', () => {
    const signed = signDecision(decision, decisionSigningKey(priv));
    const keys = [decisionVerifyKey(pub)];
    expect(verifyDecision(signed, keys)).toBe(true);
    // Key order in the message does not matter (canonical JSON), the values do.
    expect(verifyDecision(JSON.parse(JSON.stringify({ sig: signed.sig, ...decision })), keys)).toBe(true);
    for (const changed of [
      { decision: 'rejected' as const },
      { id: '6f1c2a9e-3b4d-4e5f-8a9b-0c1d2e3f4a5c' },
      { by: { name: 'mallory', groups: ['dba', 'oncall'] } },
      { by: { name: 'alice', groups: ['dba', 'oncall', 'admins'] } },
      { reason: 'ticket 43' },
      { reason: undefined },
      { at: '2026-11-30T19:00:00.001Z' },
    ])
      expect(verifyDecision({ ...signed, ...changed }, keys), JSON.stringify(changed)).toBe(false);
    expect(verifyDecision(decision, keys)).toBe(false); // unsigned
    expect(verifyDecision({ ...signed, sig: 'AAAA' }, keys)).toBe(false);
    expect(
      verifyDecision(signed, [
        decisionVerifyKey(String(generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }))),
      ]),
    ).toBe(false);
    expect(verifyDecision(signed, [])).toBe(false);
  });

  it("covers the approver's OIDC subjects and service accounts, and still verifies decisions made without them", () => {
    const key = decisionSigningKey(priv);
    const keys = [decisionVerifyKey(pub)];
    const by = {
      name: 'alice',
      groups: ['dba'],
      oidc: [{ issuer: 'https://idp.example', subject: '00u1' }],
      serviceAccounts: ['agents/bot'],
    };
    // As the sidecar reads it: the wire bytes parsed, then verified.
    const wire = (d: ApprovalDecisionMessage) => parseApprovalDecision(JSON.stringify(d)) as ApprovalDecisionMessage;
    const signed = signDecision({ ...decision, by }, key);
    expect(verifyDecision(wire(signed), keys)).toBe(true);
    // Taking an identity away (so that a self-approval would pass the sidecar's four-eyes check) breaks it.
    for (const changed of [
      { ...by, oidc: undefined },
      { ...by, oidc: [] },
      { ...by, oidc: [{ issuer: 'https://idp.example', subject: '00u2' }] },
      { ...by, serviceAccounts: undefined },
      { ...by, serviceAccounts: ['agents/other'] },
    ])
      expect(verifyDecision(wire({ ...signed, by: changed }), keys), JSON.stringify(changed)).toBe(false);
    // An earlier sidecar drops fields it does not know from `by` before it verifies: such a decision fails closed
    // there (ignored, the statement waits), which is why the collector sends them only to sidecars that ask.
    expect(verifyDecision({ ...signed, by: { name: by.name, groups: by.groups } }, keys)).toBe(false);
    // A decision signed by the collector before this change (this exact message and signature) still verifies.
    const before = decisionVerifyKey(
      '-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAeuTf58+r4P+yvDPbHnYQ/aC43viPIjAcjw7Hbhtrplo=\n-----END PUBLIC KEY-----\n',
    );
    const earlier = parseApprovalDecision(
      '{"v":1,"id":"0d9a7c3e-5b1f-4c2a-9e8d-7f6a5b4c3d2e","decision":"approved","by":{"name":"dana","groups":["dba"]},"reason":"ticket 7","at":"2026-12-01T09:00:00.000Z","grant":{"for":"30m"},"sig":"Agh1hZ6yvNnVvaGXxojjmdys7toVvRvfYeAKq18Bvy9tbZ3sxjzyDOL39GHUFbJHHtVo55VAE8GoBymlrpzAAQ=="}',
    ) as ApprovalDecisionMessage;
    expect(verifyDecision(earlier, [before])).toBe(true);
    expect(verifyDecision({ ...earlier, by: { ...earlier.by, oidc: [] } }, [before])).toBe(false);
  });

  it('takes only Ed25519 keys, and skips a verification key that does not parse', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    expect(() => decisionSigningKey(String(rsa.privateKey.export({ type: 'pkcs8', format: 'pem' })))).toThrow(
      /Ed25519, not rsa/,
    );
    expect(() => decisionVerifyKey(String(ec.publicKey.export({ type: 'spki', format: 'pem' })))).toThrow(
      /not an Ed25519 public key \(ec\)/,
    );
    expect(() => decisionVerifyKey(priv)).toThrow(/this is a private key: give the public key/);
    expect(decisionVerifyKeys(['-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n', pub])).toHaveLength(1);
  });

  it('a policy refuses a decision key that is not an Ed25519 public key', () => {
    const doc = (key: string) => `apiVersion: pgwarden.dev/v1alpha1
kind: DatabaseAccessPolicy
metadata: {name: p}
spec:
  database: {host: db, name: app}
  approval:
    decisionKeys:
      - |
${key
  .trim()
  .split('\n')
  .map((l) => `        ${l}`)
  .join('\n')}
`;
    expect(parsePolicyDocuments(doc(pub)).policies[0].spec.approval.decisionKeys).toEqual([pub]);
    const ec = String(
      generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }),
    );
    const refused = parsePolicyDocuments(doc(ec));
    expect(refused.policies).toEqual([]);
    expect(refused.errors).toEqual([
      expect.objectContaining({
        path: expect.stringMatching(/\/spec\/approval\/decisionKeys\/0$/),
        message: expect.stringMatching(/^is not an Ed25519 public key in PEM/),
      }),
    ]);
  });

  it('revocations are signed in their own domain: a decision signature never verifies as one, nor the reverse', () => {
    const key = decisionSigningKey(priv);
    const keys = [decisionVerifyKey(pub)];
    const revocation = { v: 1 as const, id: decision.id, by: decision.by, at: decision.at, reason: 'done' };
    const signed = signRevocation(revocation, key);
    expect(verifyRevocation(signed, keys)).toBe(true);
    expect(verifyRevocation({ ...signed, reason: 'other' }, keys)).toBe(false);
    expect(verifyRevocation({ ...signed, id: '00000000-0000-4000-8000-000000000000' }, keys)).toBe(false);
    // The same fields signed as a decision do not make a revocation, and a signed revocation is no decision.
    const asDecision = signDecision(revocation as unknown as ApprovalDecisionMessage, key);
    expect(verifyRevocation({ ...revocation, sig: asDecision.sig }, keys)).toBe(false);
    expect(verifyDecision({ ...(revocation as unknown as ApprovalDecisionMessage), sig: signed.sig }, keys)).toBe(
      false,
    );
    // A grant is part of what a decision's signature covers.
    const granted = signDecision({ ...decision, grant: { for: '30m' } }, key);
    expect(verifyDecision(granted, keys)).toBe(true);
    expect(verifyDecision({ ...granted, grant: { for: '24h' } }, keys)).toBe(false);
  });
});
