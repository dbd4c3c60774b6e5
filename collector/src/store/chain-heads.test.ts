import { describe, expect, it } from 'vitest';
import { verifyEvents } from '../chain/verify-events.js';
import { makeHeads, makeSession } from '../testing/audit-events.js';
import { useTestStore } from '../testing/test-store.js';
import { getSession, listSessions } from './queries.js';

/**
 * A chain's tail can be cut without leaving a hole: what remains is consecutive, its hashes link, and with signing
 * it may even end on a valid checkpoint. The sidecar's own chain records the heads of its session chains
 * (audit.heads); these tests hold the store, and files, to them. Real PostgreSQL (the suite's server).
 */
describe('chain heads (audit.heads) in the store', () => {
  const t = useTestStore();

  it('finds a tail cut in the store, even when the attacker keeps the session record consistent', async () => {
    const instance = 'sidecar-cut';
    const s = makeSession({ id: 'heads-cut', statements: 4, instance }); // seq 1..6
    const heads = makeHeads(instance, [[s.slice(0, 3)], [s]]);
    expect((await t.store.ingest([...s, ...heads])).findings).toEqual([]);
    expect((await t.store.verify(['heads-cut']))[0]).toMatchObject({ ok: true });
    expect(await t.store.sweepGaps(0)).toEqual([]);

    // Someone with write access to the store removes the last three events and makes the session row agree.
    await t.store.db.query('DELETE FROM audit_events WHERE session_id = $1 AND seq > 3', ['heads-cut']);
    await t.store.db.query(
      `UPDATE audit_sessions SET max_seq = 3, verified_seq = 3, verified_hash = $2, end_seq = NULL, events = 3
       WHERE session_id = $1`,
      ['heads-cut', s[2].hash],
    );
    const [report] = await t.store.verify(['heads-cut']);
    expect(report.ok).toBe(false);
    expect(report.findings).toEqual([
      expect.objectContaining({
        kind: 'audit.gap',
        seqFrom: 4,
        seqTo: 6,
        detail: `events 4..6 are missing: the sidecar's ${heads[1].id} recorded the chain up to seq 6`,
      }),
    ]);
    // The periodic sweep raises it too, once, and marks the session.
    const swept = await t.store.sweepGaps(0);
    expect(swept).toEqual([
      expect.objectContaining({ kind: 'audit.gap', sessionId: 'heads-cut', seqFrom: 4, seqTo: 6 }),
    ]);
    expect(await t.store.sweepGaps(0)).toEqual([]);
    const stored = await getSession(t.store.db, 'heads-cut');
    expect(stored?.session.chain).toBe('gap');
    expect(stored?.findings).toEqual([expect.objectContaining({ kind: 'audit.gap', seqFrom: 4, seqTo: 6 })]);
  });

  it('finds an event replaced at a recorded head, a chain deleted whole, and ignores heads of other sidecars', async () => {
    const instance = 'sidecar-replaced';
    const a = makeSession({ id: 'heads-replaced', statements: 2, instance }); // seq 1..4
    const gone = makeSession({ id: 'heads-gone', statements: 1, instance });
    const quiet = makeSession({ id: 'heads-quiet', statements: 1, instance });
    const heads = makeHeads(instance, [[a, gone, quiet]]);
    // A publisher that is not the session's sidecar claims the quiet chain is far longer.
    const longer = [{ ...quiet[2], session: { id: 'heads-quiet', seq: 99 } }];
    const forged = makeHeads('another-sidecar', [[longer]]);
    // So does one that names the right sidecar but publishes from another namespace (another NATS user).
    const elsewhere = makeHeads(instance, [[], [longer]], { namespace: 'elsewhere' }).slice(1);
    // The deleted chain's events never reached the store; a's last event arrives with other content (re-hashed).
    const replaced = makeSession({ id: 'heads-replaced', statements: 2, tables: ['public.other'], instance });
    await t.store.ingest([...replaced, ...quiet, ...heads, ...forged, ...elsewhere]);

    const reports = await t.store.verify(['heads-replaced', 'heads-gone', 'heads-quiet']);
    const byId = new Map(reports.map((r) => [r.sessionId, r]));
    expect(byId.get('heads-replaced')?.findings).toEqual([
      expect.objectContaining({ kind: 'audit.tampered', seqFrom: 4, seqTo: 4 }),
    ]);
    expect(byId.get('heads-gone')).toMatchObject({ ok: false, events: 0 });
    expect(byId.get('heads-gone')?.findings).toEqual([
      expect.objectContaining({
        kind: 'audit.gap',
        seqFrom: 1,
        seqTo: 3,
        detail: `the whole chain is missing: the sidecar's ${heads[0].id} recorded it up to seq 3`,
      }),
    ]);
    expect(byId.get('heads-quiet')).toMatchObject({ ok: true });
    // A whole-chain loss is listed for verification of the whole store.
    expect((await t.store.sessionIds()).includes('heads-gone')).toBe(true);
    const swept = await t.store.sweepGaps(0);
    expect(swept.map((f) => [f.sessionId, f.seqFrom, f.seqTo])).toEqual([['heads-gone', 1, 3]]);
    expect(await t.store.sweepGaps(0)).toEqual([]);
  });

  it('waits out the grace period: a head may arrive before the events it names', async () => {
    const instance = 'sidecar-early';
    const s = makeSession({ id: 'heads-early', statements: 2, instance });
    const heads = makeHeads(instance, [[s]]);
    await t.store.ingest([...s.slice(0, 2), ...heads]);
    expect(await t.store.sweepGaps(60_000)).toEqual([]);
    await t.store.ingest(s.slice(2));
    expect(await t.store.sweepGaps(0)).toEqual([]);
    expect((await t.store.verify(['heads-early']))[0]).toMatchObject({ ok: true });
  });
});

describe('session state from chain heads', () => {
  const t = useTestStore();

  it('calls a session interrupted when its sidecar stopped naming it for three refresh periods, open while it names it', async () => {
    const instance = 'sidecar-live';
    const dead = makeSession({ id: 'st-dead', statements: 1, instance, end: false });
    const ended = makeSession({ id: 'st-ended', statements: 1, instance });
    const unnamed = makeSession({ id: 'st-unnamed', statements: 1, instance: 'sidecar-old', end: false });
    const now = Date.now() * 1000;
    // The dead session was last named 4 minutes ago with a 1-minute refresh; the quiet one 10 s ago.
    const old = makeHeads(instance, [[dead, ended]], { refreshMs: 60_000, startMicros: now - 240e6 });
    const quiet = makeSession({ id: 'st-quiet', statements: 1, instance: `${instance}-2`, end: false });
    const fresh = makeHeads(`${instance}-2`, [[quiet]], { refreshMs: 60_000, startMicros: now - 10e6 });
    await t.store.ingest([...dead, ...ended, ...unnamed, ...quiet, ...old, ...fresh]);
    const states = new Map(
      (await listSessions(t.store.db, { limit: 100 })).items
        .filter((s) => s.id.startsWith('st-'))
        .map((s) => [s.id, [s.state, s.lastHeard !== null]]),
    );
    expect(states).toEqual(
      new Map([
        ['st-quiet', ['open', true]],
        ['st-dead', ['interrupted', true]],
        ['st-ended', ['ended', true]],
        ['st-unnamed', ['open', false]],
      ]),
    );
    const interrupted = await listSessions(t.store.db, { limit: 100, state: 'interrupted' });
    expect(interrupted.items.map((s) => s.id)).toEqual(['st-dead']);
    // The periodic sweep reports each interrupted session once (metric and log in collector.ts).
    const swept = await t.store.sweepInterrupted();
    expect(swept).toEqual([
      { sessionId: 'st-dead', namespace: 'agents', lastHeard: expect.stringMatching(/^\d{4}-\d\d-\d\dT.*Z$/) },
    ]);
    expect(await t.store.sweepInterrupted()).toEqual([]);
    expect((await getSession(t.store.db, 'st-dead'))?.session.lastHeard).toMatch(/^\d{4}-\d\d-\d\dT/);
    // Named again (a refresh, the same head): open again.
    await t.store.ingest(makeHeads(instance, [[], [], [dead]], { refreshMs: 60_000, startMicros: now - 2e6 }).slice(2));
    expect((await getSession(t.store.db, 'st-dead'))?.session.state).toBe('open');
  });
});

describe('chain heads in files (verifyEvents)', () => {
  it('finds a cut tail and a deleted chain in a trail that holds the sidecar chain', () => {
    const a = makeSession({ id: 'f-a', statements: 3 });
    const b = makeSession({ id: 'f-b', statements: 1 });
    const heads = makeHeads('test-sidecar', [[a, b]]);
    expect(verifyEvents([...a, ...b, ...heads]).every((r) => r.ok)).toBe(true);
    const reports = verifyEvents([...a.slice(0, 2), ...heads]);
    const byId = new Map(reports.map((r) => [r.sessionId, r]));
    expect(byId.get('f-a')?.findings).toEqual([expect.objectContaining({ kind: 'audit.gap', seqFrom: 3, seqTo: 5 })]);
    expect(byId.get('f-b')?.findings).toEqual([expect.objectContaining({ kind: 'audit.gap', seqFrom: 1, seqTo: 3 })]);
    // Asked about one session only, heads of the others are not reported.
    expect(verifyEvents([...a, ...heads], { sessions: ['f-a'] }).map((r) => [r.sessionId, r.ok])).toEqual([
      ['f-a', true],
    ]);
  });
});
