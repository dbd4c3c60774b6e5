import { describe, expect, it } from 'vitest';
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
