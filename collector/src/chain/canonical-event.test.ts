import { canonicalJson, hashEvent } from '@pgwarden/policy';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type AuditEvent, indexedFields, parseEvent } from '../event.js';
import { makeSession, sidecarJson } from '../testing/audit-events.js';
import { readCanonicalEvent } from './canonical-event.js';
import { instanceOf } from './chain-heads.js';

const bytes = (s: string) => Buffer.from(s);
const verdict = (f: () => unknown) => {
  try {
    f();
    return 'ok';
  } catch (err) {
    return (err as Error).message;
  }
};

/**
 * The ingest contract: whatever readCanonicalEvent accepts, it reads exactly as JSON.parse + parseEvent would
 * (same validation verdict, same indexed and chain fields, same hash as re-encoding), and serialises to the
 * whole parsed event.
 */
function agrees(text: string): boolean {
  const read = readCanonicalEvent(bytes(text));
  if (read === undefined) return false;
  const full = JSON.parse(text) as AuditEvent;
  expect(read.hash).toBe(hashEvent(full));
  expect(verdict(() => parseEvent(read.event))).toBe(verdict(() => parseEvent(full)));
  const e = read.event;
  expect([e.id, e.type, e.time, e.session, e.prevHash, e.hash]).toEqual([
    full.id,
    full.type,
    full.time,
    full.session === undefined ? undefined : { id: full.session.id, seq: full.session.seq },
    full.prevHash,
    full.hash,
  ]);
  if (verdict(() => parseEvent(full)) === 'ok') expect(indexedFields(e)).toEqual(indexedFields(full));
  // The sidecar whose audit.heads speak for the session (chain-heads.ts instanceOf).
  expect(instanceOf(e)).toBe(instanceOf(full));
  expect(JSON.parse(JSON.stringify(e))).toEqual(full);
  return true;
}

const seal = (obj: Record<string, unknown>) =>
  `${canonicalJson(obj).slice(0, -1)},"hash":"${hashEvent(obj as never)}"}`;

describe('readCanonicalEvent', () => {
  const events = makeSession({ id: 'ce', statements: 12, denyEvery: 3, user: 'alice@example.com' });

  it('reads every sidecar event as JSON.parse does, without parsing it', () => {
    for (const e of events) expect(agrees(sidecarJson(e))).toBe(true);
  });

  it("reads source.instance, so a session is held to its own sidecar's heads", () => {
    const e = { ...events[2], source: { instance: 'i-1', pod: 'p' } } as Record<string, unknown>;
    delete e.hash;
    const read = readCanonicalEvent(bytes(seal(e)));
    expect(read && instanceOf(read.event)).toBe('i-1');
  });

  it('reads escaped and non-ASCII values of indexed members', () => {
    const e = { ...events[2], hash: undefined } as Record<string, unknown>;
    e.statement = { kind: 'select', tables: ['public."Örders"', 'a\\b', 'tab\there'] };
    e.identity = { namespace: 'ns-ü', serviceAccount: 'sa "x"', pod: 'p' };
    delete e.hash;
    expect(agrees(seal(e))).toBe(true);
  });

  it('leaves to JSON.parse what it does not read: audit.gap, audit.checkpoint and audit.heads events and indexed members of another type', () => {
    const base = { ...events[2] } as Record<string, unknown>;
    delete base.hash;
    const variants: Record<string, unknown>[] = [
      { ...base, type: 'audit.gap', gap: { sessions: [{ id: 'ce', fromSeq: 1, toSeq: 2 }] } },
      // Its `checkpoint` member is judged at ingest, and the fast path does not materialise it.
      { ...base, type: 'audit.checkpoint', checkpoint: { seq: 2, hash: events[1].hash, key: 'k', sig: 's' } },
      // Its `heads` member is recorded at ingest (which session chains the sidecar held, and how far).
      {
        ...base,
        type: 'audit.heads',
        heads: { chains: [{ id: 'ce', seq: 2, hash: events[1].hash }], refreshMs: 1000 },
      },
      { ...base, session: { id: 'ce', seq: '3' } },
      { ...base, session: 'ce' },
      { ...base, identity: { namespace: 7 } },
      { ...base, statement: { tables: 'public.orders' } },
      { ...base, statement: { tables: ['public.orders', 1] } },
      { ...base, prevHash: false },
      { ...base, id: null },
    ];
    for (const v of variants) expect(readCanonicalEvent(bytes(seal(v))), JSON.stringify(v)).toBeUndefined();
  });

  it('refuses non-canonical text (the caller parses it) and keeps a tampered text detectable', () => {
    const raw = sidecarJson(events[4]);
    expect(readCanonicalEvent(bytes(JSON.stringify(events[4])))).toBeUndefined();
    expect(readCanonicalEvent(bytes(raw.replace('"rows":1', '"rows":1.0')))).toBeUndefined();
    const tampered = readCanonicalEvent(bytes(raw.replace('WHERE id = 3', 'WHERE id = 4')));
    expect(tampered?.hash).not.toBe(events[4].hash);
    expect(tampered?.event.hash).toBe(events[4].hash);
  });

  it('agrees with JSON.parse + parseEvent on mutated sidecar text and on arbitrary members', () => {
    const base = events.map((e) => sidecarJson(e));
    const alphabet = ['"', '\\', ',', ':', '{', '}', '[', ']', '0', '1', '-', '.', 'e', 'a', 'é', 'null', '\\u0000'];
    fc.assert(
      fc.property(
        fc.nat(base.length - 1),
        fc.array(fc.tuple(fc.nat(), fc.nat(3), fc.constantFrom(...alphabet)), { maxLength: 3 }),
        (which, edits) => {
          let t = base[which];
          for (const [pos, del, ins] of edits) {
            const p = pos % (t.length - 80); // leave the hash member alone, or nothing is accepted
            t = t.slice(0, p) + ins + t.slice(p + del);
          }
          try {
            JSON.parse(t);
          } catch {
            expect(readCanonicalEvent(bytes(t))).toBeUndefined();
            return;
          }
          agrees(t);
        },
      ),
      { numRuns: 3000 },
    );
    const anything = fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constant(undefined));
    // Mostly the type the collector expects (so the accepting path is exercised), sometimes anything at all.
    const mostly = <T>(valid: fc.Arbitrary<T>) =>
      fc.oneof({ arbitrary: valid, weight: 12 }, { arbitrary: anything as fc.Arbitrary<unknown>, weight: 1 });
    const text = mostly(fc.string({ unit: 'binary', maxLength: 12 }));
    const opt = { requiredKeys: [] as never[] };
    let accepted = 0;
    fc.assert(
      fc.property(
        fc.record(
          {
            id: text,
            type: mostly(fc.constantFrom('statement', 'session.end', '')),
            time: mostly(fc.constantFrom('2026-11-30T12:00:00.000000Z', 'not a time')),
            session: mostly(
              fc.record(
                {
                  id: text,
                  seq: mostly(fc.oneof(fc.nat(), fc.integer(), fc.double({ noDefaultInfinity: true, noNaN: true }))),
                },
                opt,
              ),
            ),
            identity: mostly(
              fc.record({ namespace: text, serviceAccount: text, pod: text, user: text, groups: anything }, opt),
            ),
            statement: mostly(fc.record({ kind: text, tables: mostly(fc.array(text)), text: anything }, opt)),
            decision: mostly(fc.record({ action: text, rule: anything }, opt)),
            policy: mostly(fc.record({ name: text, hash: anything }, opt)),
            prevHash: mostly(fc.oneof(fc.constant(null), text)),
            extra: anything,
          },
          opt,
        ),
        (obj) => {
          if (agrees(seal(obj as Record<string, unknown>))) accepted++;
        },
      ),
      { numRuns: 3000 },
    );
    // The generator must reach the accepting path often, or the property proves little.
    expect(accepted).toBeGreaterThan(300);
  });
});
