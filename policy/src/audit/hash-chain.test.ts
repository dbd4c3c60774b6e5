import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalJson } from './canonical-json.js';
import type { AuditEvent, UnsealedAuditEvent } from './event-types.js';
import { hashEvent, newChain, sealEvent, sealEventToJson, verifyChain } from './hash-chain.js';

function session(id: string, n: number): AuditEvent[] {
  const chain = newChain();
  const out: AuditEvent[] = [];
  for (let i = 0; i < n; i++) {
    const type = i === 0 ? 'session.start' : i === n - 1 ? 'session.end' : 'statement';
    const e: UnsealedAuditEvent = {
      v: 1,
      type,
      time: `2026-01-01T00:00:0${i % 10}.000001Z`,
      session: { id },
      statement: type === 'statement' ? { text: `SELECT ${i}`, tables: [], functions: [] } : undefined,
    };
    out.push(sealEvent(e, chain));
  }
  return out;
}

describe('hash chain', () => {
  it('seals events with seq 1..n, ids <session>.<seq> and links each to the previous hash', () => {
    const evs = session('s1', 4);
    expect(evs.map((e) => e.session.seq)).toEqual([1, 2, 3, 4]);
    expect(evs.map((e) => e.id)).toEqual(['s1.1', 's1.2', 's1.3', 's1.4']);
    expect(evs[0].prevHash).toBeNull();
    for (let i = 1; i < evs.length; i++) expect(evs[i].prevHash).toBe(evs[i - 1].hash);
    for (const e of evs) expect(e.hash).toBe(hashEvent(e));
    const r = verifyChain(evs);
    expect(r).toMatchObject({ ok: true, sessions: 1, events: 4, gaps: [], tampered: [], open: [] });
  });

  it('hash is the sha256 hex of the UTF-8 canonical JSON without `hash` (what any other verifier computes)', () => {
    const [e] = session('s-ü✓', 1);
    const { hash, ...rest } = { ...e, statement: { text: "SELECT '€😀'", tables: [], functions: [] } };
    const expected = createHash('sha256')
      .update(Buffer.from(canonicalJson(rest), 'utf8'))
      .digest('hex');
    expect(hashEvent(rest as never)).toBe(expected);
    expect(hash).toMatch(/^[0-9a-f]{64}$/);
  });

  it('sealEventToJson: the JSON text parses back to exactly the sealed event, hash included', () => {
    const chain = newChain();
    const { event, json } = sealEventToJson({ v: 1, type: 'session.start', time: 't', session: { id: 'x' } }, chain);
    expect(JSON.parse(json)).toEqual(event);
    expect(hashEvent(JSON.parse(json))).toBe(event.hash);
    expect(chain).toEqual({ seq: 1, prevHash: event.hash });
  });

  it('verifies several interleaved, shuffled sessions and tolerates exact redeliveries', () => {
    const all = [...session('a', 5), ...session('b', 3)];
    const mixed = [...all].reverse().concat(all.slice(0, 2));
    const r = verifyChain(mixed);
    expect(r).toMatchObject({ ok: true, sessions: 2, events: 8, duplicates: 2 });
  });

  it('detects a missing event as a gap in exactly that session', () => {
    const a = session('a', 6);
    const b = session('b', 3);
    const r = verifyChain([...a.slice(0, 2), ...a.slice(4), ...b]);
    expect(r.ok).toBe(false);
    expect(r.gaps).toEqual([{ session: 'a', fromSeq: 3, toSeq: 4 }]);
    expect(r.tampered).toEqual([]);
  });

  it('detects a missing first event', () => {
    const r = verifyChain(session('a', 3).slice(1));
    expect(r.gaps).toEqual([{ session: 'a', fromSeq: 1, toSeq: 1 }]);
  });

  it('detects an altered event by its hash', () => {
    const a = session('a', 4);
    const altered = { ...a[2], statement: { text: 'SELECT 999', tables: [], functions: [] } };
    const r = verifyChain([a[0], a[1], altered, a[3], ...session('b', 2)]);
    expect(r.ok).toBe(false);
    expect(r.tampered).toEqual([{ session: 'a', seq: 3, id: 'a.3', reason: 'hash-mismatch' }]);
  });

  it('detects an altered event whose hash was recomputed, through the next link', () => {
    const a = session('a', 4);
    const body = { ...a[1], statement: { text: 'SELECT 999', tables: [], functions: [] } };
    const forged = { ...body, hash: hashEvent(body) };
    const r = verifyChain([a[0], forged, a[2], a[3]]);
    expect(r.tampered).toEqual([{ session: 'a', seq: 3, id: 'a.3', reason: 'broken-link' }]);
  });

  it('detects a conflicting second version of the same seq and a moved event', () => {
    const a = session('a', 3);
    const other = { ...a[1], time: '2026-01-01T00:00:09.000000Z' };
    const r = verifyChain([...a, { ...other, hash: hashEvent(other) }]);
    expect(r.tampered.map((t) => t.reason)).toEqual(['conflicting-duplicate']);
    const moved = { ...a[2], id: 'a.9' };
    expect(verifyChain([a[0], a[1], { ...moved, hash: hashEvent(moved) }]).tampered[0].reason).toBe('bad-id');
  });

  it('reports a session without session.end as open, not as a failure', () => {
    const r = verifyChain(session('a', 4).slice(0, 3));
    expect(r).toMatchObject({ ok: true, open: ['a'] });
  });

  it('property: removing any one event, or changing any field of one, is detected in that session only (a lost last event as an open session)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 12 }),
        fc.nat(),
        fc.constantFrom('remove', 'text', 'time', 'seq', 'prevHash'),
        (n, pick, how) => {
          const a = session('a', n);
          const b = session('b', 3);
          const i = pick % n;
          const victim = a[i];
          let changed: AuditEvent[];
          if (how === 'remove') changed = a.filter((_, j) => j !== i);
          else {
            const e = structuredClone(victim);
            if (how === 'text') e.statement = { text: 'DROP TABLE x', tables: [], functions: [] };
            if (how === 'time') e.time = '2030-01-01T00:00:00.000000Z';
            if (how === 'seq') e.session.seq += n;
            if (how === 'prevHash') e.prevHash = 'f'.repeat(64);
            changed = a.map((x, j) => (j === i ? e : x));
          }
          const r = verifyChain([...changed, ...b]);
          if (how === 'remove' && i === n - 1) {
            // A lost tail leaves no hole: the chain can only say the session never ended.
            expect(r.open).toEqual(['a']);
            return;
          }
          expect(r.ok).toBe(false);
          const flagged = new Set([...r.gaps.map((g) => g.session), ...r.tampered.map((t) => t.session)]);
          expect([...flagged]).toEqual(['a']);
        },
      ),
      { numRuns: 300 },
    );
  });
});
