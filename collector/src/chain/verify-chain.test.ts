import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { type AuditEvent, auditSigner } from '@pgwarden/policy';
import { describe, expect, it } from 'vitest';
import { parseAuditKeys } from '../signatures/audit-keys.js';
import { unsignedFinding } from '../signatures/checkpoint-judgement.js';
import { makeSession } from '../testing/audit-events.js';
import { schemaV1Rules } from './chain-rules.js';
import { advance, startCursor, verifySession } from './verify-chain.js';

describe('per-session hash chain', () => {
  const ev = makeSession({ id: 'c1', statements: 6 });

  it('verifies a whole session in any order, with exact redeliveries', () => {
    const shuffled = [ev[3], ev[0], ev[7], ev[1], ev[2], ev[5], ev[4], ev[6], ev[2]];
    expect(verifySession('c1', shuffled, schemaV1Rules)).toMatchObject({
      ok: true,
      events: 9,
      firstSeq: 1,
      lastSeq: 8,
      ended: true,
    });
  });

  it('reports every hole, including a missing start', () => {
    const r = verifySession('c1', [ev[2], ev[3], ev[6], ev[7]], schemaV1Rules);
    expect(r.findings.map((f) => [f.kind, f.seqFrom, f.seqTo])).toEqual([
      ['audit.gap', 1, 2],
      ['audit.gap', 5, 6],
    ]);
  });

  it('flags an altered event once, a relinked forgery at the next link, a conflicting duplicate and a wrong id', () => {
    const altered = { ...ev[2], decision: { action: 'allow' as const } };
    expect(verifySession('c1', [...ev.slice(0, 2), altered, ...ev.slice(3)], schemaV1Rules).findings).toEqual([
      expect.objectContaining({
        kind: 'audit.tampered',
        seqFrom: 3,
        detail: expect.stringContaining('does not match its hash'),
      }),
    ]);
    // The forger recomputed the altered event's hash: its own hash checks, the next event's link does not.
    const rehashed = { ...altered, hash: schemaV1Rules.hashOf(altered) };
    expect(verifySession('c1', [...ev.slice(0, 2), rehashed, ...ev.slice(3)], schemaV1Rules).findings).toEqual([
      expect.objectContaining({
        kind: 'audit.tampered',
        seqFrom: 4,
        detail: expect.stringContaining('prevHash does not link'),
      }),
    ]);
    const other = makeSession({ id: 'c1', statements: 6, denyEvery: 1 });
    expect(verifySession('c1', [...ev, other[1]], schemaV1Rules).findings).toEqual([
      expect.objectContaining({
        kind: 'audit.tampered',
        seqFrom: 2,
        detail: expect.stringContaining('two different events'),
      }),
    ]);
    const renamed = { ...ev[1], id: 'c1.99' };
    renamed.hash = schemaV1Rules.hashOf(renamed);
    expect(verifySession('c1', [ev[0], renamed], schemaV1Rules).findings[0]).toMatchObject({
      kind: 'audit.tampered',
      detail: expect.stringContaining('does not carry the id'),
    });
  });

  it('advances incrementally only as far as events are contiguous', () => {
    let step = advance(startCursor(schemaV1Rules), [ev[0], ev[1], ev[3]], schemaV1Rules);
    expect(step).toMatchObject({ cursor: { verifiedSeq: 2, verifiedHash: ev[1].hash }, findings: [], holeAt: 3 });
    step = advance(step.cursor, [ev[2], ev[3]], schemaV1Rules);
    expect(step).toMatchObject({ cursor: { verifiedSeq: 4 }, findings: [], holeAt: undefined });
  });

  it('reports a deleted tail against the last seq recorded at ingest', () => {
    expect(verifySession('c1', ev.slice(0, 5), schemaV1Rules, 8).findings).toEqual([
      expect.objectContaining({ kind: 'audit.gap', seqFrom: 6, seqTo: 8 }),
    ]);
  });
});

describe('signed checkpoints in a full verification', () => {
  const agentsKey = generateKeyPairSync('ed25519');
  const otherKey = generateKeyPairSync('ed25519');
  const pem = (k: KeyObject, type: 'pkcs8' | 'spki') => String(k.export({ type, format: 'pem' }));
  const signer = auditSigner(pem(agentsKey.privateKey, 'pkcs8'));
  const stranger = auditSigner(pem(otherKey.privateKey, 'pkcs8'));
  const ring = (namespaces?: string[]) =>
    parseAuditKeys(
      JSON.stringify({
        keys: [
          { name: 'agents-2026', publicKey: pem(agentsKey.publicKey, 'spki'), ...(namespaces ? { namespaces } : {}) },
        ],
      }),
      'keys.json',
    );
  const keys = ring(['agents']);
  // start, 4 statements with a checkpoint after the 2nd and 4th, end, closing checkpoint: 9 events.
  const signed = makeSession({ id: 'k1', statements: 4, signer, checkpointEvery: 2 });
  const types = signed.map((e) => e.type);

  /** What a forger without the key can do: rewrite an event and recompute every hash and link after it. */
  function rewrite(events: AuditEvent[], seq: number, change: (e: AuditEvent) => AuditEvent): AuditEvent[] {
    const out: AuditEvent[] = [];
    for (const e of events) {
      const prev = out[out.length - 1];
      let next: AuditEvent = e.session.seq === seq ? change(e) : { ...e };
      if (prev) next = { ...next, prevHash: prev.hash };
      out.push({ ...next, hash: schemaV1Rules.hashOf(next) });
    }
    return out;
  }

  it('reports a session every event of which a valid checkpoint vouches for as signed, and who signed', () => {
    expect(types).toEqual([
      'session.start',
      'statement',
      'statement',
      'audit.checkpoint',
      'statement',
      'statement',
      'audit.checkpoint',
      'session.end',
      'audit.checkpoint',
    ]);
    // The closing checkpoint comes after session.end: that is the sidecar signing the end, not an extra event.
    expect(verifySession('k1', signed, schemaV1Rules, undefined, keys)).toMatchObject({
      ok: true,
      ended: true,
      findings: [],
      signature: { state: 'signed', signedSeq: 8, signedBy: 'agents-2026', unsignedEvents: 0 },
    });
    // Without keys the checkpoints are counted but not judged.
    expect(verifySession('k1', signed, schemaV1Rules).signature).toEqual({
      state: 'unverified',
      signedSeq: null,
      signedBy: null,
      unsignedEvents: 9,
    });
    expect(verifySession('c1', makeSession({ id: 'c1', statements: 2 }), schemaV1Rules, undefined, keys)).toMatchObject(
      {
        ok: true,
        signature: { state: 'unsigned', signedSeq: null, unsignedEvents: 4 },
      },
    );
  });

  it('counts the events after the last valid checkpoint as partial', () => {
    const open = makeSession({ id: 'k2', statements: 5, signer, checkpointEvery: 2, end: false });
    expect(verifySession('k2', open, schemaV1Rules, undefined, keys)).toMatchObject({
      ok: true,
      ended: false,
      signature: { state: 'partial', signedSeq: 6, signedBy: 'agents-2026', unsignedEvents: 1 },
    });
    // The closing checkpoint lost: the session ended, but its end is not vouched for.
    expect(verifySession('k1', signed.slice(0, -1), schemaV1Rules, undefined, keys).signature).toMatchObject({
      state: 'partial',
      signedSeq: 6,
      unsignedEvents: 1,
    });
  });

  it('exposes a statement rewritten and rehashed by someone without the key, however the checkpoints are patched', () => {
    const change = (e: AuditEvent) => ({ ...e, statement: { ...e.statement!, text: 'SELECT 1' } });
    const forged = rewrite(signed, 2, change);
    // The chain alone is consistent again; the first checkpoint after the change no longer matches.
    expect(verifySession('k1', forged, schemaV1Rules).findings).toEqual([]);
    const r = verifySession('k1', forged, schemaV1Rules, undefined, keys);
    expect(r.ok).toBe(false);
    expect(r.findings[0]).toMatchObject({
      kind: 'audit.tampered',
      seqFrom: 4,
      detail: expect.stringMatching(/^checkpoint k1\.4 not-preceding: .*key agents-2026 \([0-9a-f]{16}\)/),
    });
    // Patching the checkpoints to the new hashes needs a new signature, which only the key holder can make.
    const patched = rewrite(signed, 2, change).reduce<AuditEvent[]>((out, e) => {
      const prev = out[out.length - 1];
      let next = prev ? { ...e, prevHash: prev.hash } : e;
      if (next.type === 'audit.checkpoint') next = { ...next, checkpoint: { ...next.checkpoint!, hash: prev.hash } };
      out.push({ ...next, hash: schemaV1Rules.hashOf(next) });
      return out;
    }, []);
    expect(verifySession('k1', patched, schemaV1Rules, undefined, keys).findings.map((f) => f.detail)).toEqual([
      expect.stringMatching(/^checkpoint k1\.4 bad-signature: the signature does not verify under key agents-2026/),
      expect.stringMatching(/^checkpoint k1\.7 bad-signature/),
      expect.stringMatching(/^checkpoint k1\.9 bad-signature/),
    ]);
    // A statement changed after the last checkpoint is still caught by the chain, not by a signature.
    const late = makeSession({ id: 'k2', statements: 5, signer, checkpointEvery: 2, end: false });
    const lateForged = rewrite(late, 8, change);
    expect(verifySession('k2', lateForged, schemaV1Rules, undefined, keys)).toMatchObject({
      ok: true,
      signature: { state: 'partial', signedSeq: 6, unsignedEvents: 1 },
    });
  });

  it('treats a checkpoint by an unknown key, by a key of another namespace or without a body as tampering', () => {
    const unknown = makeSession({ id: 'k3', statements: 1, signer: stranger });
    const r = verifySession('k3', unknown, schemaV1Rules, undefined, keys);
    expect(r.findings).toEqual([
      expect.objectContaining({
        kind: 'audit.tampered',
        seqFrom: 4,
        detail: `checkpoint k3.4 unknown-key: signed by key ${stranger.keyId}, which is not in the audit keys`,
      }),
    ]);
    expect(r.signature.state).toBe('unsigned');
    const billing = makeSession({ id: 'k4', statements: 1, signer, namespace: 'billing' });
    expect(verifySession('k4', billing, schemaV1Rules, undefined, keys).findings[0].detail).toBe(
      `checkpoint k4.4 wrong-namespace: signed by key agents-2026 (${signer.keyId}), which may not vouch for namespace "billing"`,
    );
    // The same key without a namespace list vouches for any namespace.
    expect(verifySession('k4', billing, schemaV1Rules, undefined, ring()).signature.state).toBe('signed');
    const bodyless = rewrite(signed, 9, (e) => ({ ...e, checkpoint: { seq: 8 } as never }));
    expect(verifySession('k1', bodyless, schemaV1Rules, undefined, keys).findings[0].detail).toBe(
      'checkpoint k1.9 malformed: its body is not {seq, hash, key, sig}',
    );
  });

  it('still flags any other event after session.end', () => {
    const extra = rewrite([...signed, { ...signed[1], session: { id: 'k1', seq: 10 }, id: 'k1.10' }], 0, (e) => e);
    expect(verifySession('k1', extra, schemaV1Rules, undefined, keys).findings).toEqual([
      expect.objectContaining({
        kind: 'audit.tampered',
        seqFrom: 10,
        seqTo: 10,
        detail: 'events recorded after session.end',
      }),
    ]);
  });

  it('--require-signed-audit: an ended session must be signed, a covered one must carry a valid checkpoint', () => {
    const judge = (events: AuditEvent[], namespace: string | null = 'agents') => {
      const r = verifySession(events[0].session.id, events, schemaV1Rules, undefined, keys);
      return unsignedFinding(
        { sessionId: r.sessionId, namespace, ended: r.ended, firstSeq: 1, lastSeq: r.lastSeq!, signature: r.signature },
        keys,
      );
    };
    expect(judge(signed)).toBeUndefined();
    expect(judge(signed.slice(0, -1))).toMatchObject({
      kind: 'audit.unsigned',
      seqFrom: 8,
      seqTo: 8,
      detail:
        'the session ended with 1 event(s) after the last valid checkpoint (seq 6 and before signed by agents-2026)',
    });
    expect(judge(makeSession({ id: 'u1', statements: 1 }), 'billing')).toMatchObject({
      detail: 'the session ended without a valid checkpoint',
    });
    // Open: only a namespace some key covers needs a checkpoint, and one is enough.
    const open = makeSession({ id: 'u2', statements: 1, end: false });
    expect(judge(open)).toMatchObject({
      detail: 'no valid checkpoint, though key agents-2026 covers namespace "agents"',
    });
    expect(judge(open, 'billing')).toBeUndefined();
    expect(judge(makeSession({ id: 'u3', statements: 3, signer, checkpointEvery: 2, end: false }))).toBeUndefined();
  });
});
