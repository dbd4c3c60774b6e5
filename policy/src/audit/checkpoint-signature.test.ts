import { generateKeyPairSync } from 'node:crypto';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { auditSigner, auditVerifyKey, verifyCheckpoint } from './checkpoint-signature.js';
import { auditEventSchema } from './event-schema.js';
import { newChain, sealEvent } from './hash-chain.js';

function keyPair() {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    priv: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    pub: publicKey.export({ format: 'pem', type: 'spki' }).toString(),
  };
}

/** A two-event chain: a statement, then a checkpoint signing it. */
function signedChain(pem: string, sessionId = 's-1') {
  const chain = newChain();
  const base = { v: 1 as const, time: '2026-11-30T21:00:00.000000Z', session: { id: sessionId } };
  const first = sealEvent(
    { ...base, type: 'session.start', identity: { groups: [] }, database: { name: 'db' } } as never,
    chain,
  );
  const checkpoint = sealEvent(
    {
      ...base,
      type: 'audit.checkpoint',
      checkpoint: auditSigner(pem).checkpoint(sessionId, first.session.seq, first.hash),
    },
    chain,
  );
  return { first, checkpoint };
}

describe('audit checkpoint signatures', () => {
  const a = keyPair();
  const b = keyPair();
  const keyA = auditVerifyKey(a.pub);
  const trustA = (id: string) => (id === keyA.keyId ? keyA.key : undefined);

  it('a checkpoint signed with the private key verifies under its public key, and its event fits the schema', () => {
    const { checkpoint } = signedChain(a.priv);
    expect(auditSigner(a.priv).keyId).toBe(keyA.keyId);
    expect(checkpoint.checkpoint?.key).toMatch(/^[0-9a-f]{16}$/);
    expect(verifyCheckpoint(checkpoint, trustA)).toEqual({ ok: true, keyId: keyA.keyId, seq: 1 });
    const validate = new Ajv({ allErrors: true }).compile(auditEventSchema);
    expect(validate(checkpoint), JSON.stringify(validate.errors)).toBe(true);
  });

  it('another key, an altered hash, a moved position or another session do not verify', () => {
    const { checkpoint } = signedChain(b.priv);
    expect(verifyCheckpoint(checkpoint, trustA)).toEqual({ ok: false, problem: 'unknown-key' });
    const keyB = auditVerifyKey(b.pub);
    // B's signature presented under A's key id: the key named must have made it.
    const forged = { ...checkpoint, checkpoint: { ...checkpoint.checkpoint!, key: keyA.keyId } };
    expect(verifyCheckpoint(forged, trustA)).toEqual({ ok: false, problem: 'bad-signature' });
    const trustB = (id: string) => (id === keyB.keyId ? keyB.key : undefined);
    const own = signedChain(b.priv).checkpoint;
    expect(verifyCheckpoint(own, trustB).ok).toBe(true);
    const otherHash = 'f'.repeat(64);
    expect(
      verifyCheckpoint({ ...own, prevHash: otherHash, checkpoint: { ...own.checkpoint!, hash: otherHash } }, trustB),
    ).toEqual({ ok: false, problem: 'bad-signature' });
    expect(verifyCheckpoint({ ...own, prevHash: otherHash }, trustB)).toEqual({ ok: false, problem: 'not-preceding' });
    expect(verifyCheckpoint({ ...own, session: { ...own.session, seq: 5 } }, trustB)).toEqual({
      ok: false,
      problem: 'not-preceding',
    });
    expect(verifyCheckpoint({ ...own, session: { ...own.session, id: 's-2' } }, trustB)).toEqual({
      ok: false,
      problem: 'bad-signature',
    });
    expect(verifyCheckpoint({ ...own, checkpoint: { seq: 1 } }, trustB)).toEqual({ ok: false, problem: 'malformed' });
  });

  it('refuses keys of the wrong kind, and a private key given as the public one', () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    expect(() => auditSigner(ec.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString())).toThrow(
      /audit signing key must be Ed25519, not ec/,
    );
    expect(() => auditVerifyKey(a.priv)).toThrow(
      /this is a private key: give the public key \(pgwarden audit keygen\)/,
    );
    expect(() => auditVerifyKey(ec.publicKey.export({ format: 'pem', type: 'spki' }).toString())).toThrow(
      /not an Ed25519 public key \(ec\)/,
    );
  });
});
