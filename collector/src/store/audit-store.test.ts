import { type AuditEvent, hashEvent, newChain, sealEvent } from '@pgwarden/policy';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { schemaV1Rules } from '../chain/chain-rules.js';
import { makeSession } from '../testing/audit-events.js';
import { useTestStore } from '../testing/test-store.js';
import { AuditStore } from './audit-store.js';
import { getSession, listSessions, searchEvents } from './queries.js';

describe('AuditStore on PostgreSQL', () => {
  const t = useTestStore();

  it('migrates once, stores events idempotently into day partitions, and verifies chains as they arrive', async () => {
    // Opening again applies nothing: the migrations table records each version once.
    const again = await AuditStore.open({ url: t.url, rules: schemaV1Rules });
    await again.close();
    const rows = await t.store.db.query<{ version: number }>(
      'SELECT version FROM pgwarden_schema_migrations ORDER BY version',
    );
    expect(rows.map((r) => r.version)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);

    // A session crossing midnight UTC lands in two partitions.
    const events = makeSession({
      id: 's-midnight',
      statements: 4,
      startMicros: (Date.UTC(2026, 10, 30) - 2) * 1000,
      denyEvery: 2,
    });
    const first = await t.store.ingest(events);
    expect(first.inserted).toHaveLength(6);
    expect(first.findings).toEqual([]);
    const again2 = await t.store.ingest([...events, events[0]]);
    expect(again2.inserted).toHaveLength(0);
    expect(again2.duplicates).toBe(7);
    expect(await t.store.partitions.list()).toEqual(['audit_events_p20261129', 'audit_events_p20261130']);

    const s = await getSession(t.store.db, 's-midnight');
    expect(s?.session).toMatchObject({
      events: 6,
      statements: 4,
      denied: 2,
      maxSeq: 6,
      verifiedSeq: 6,
      ended: true,
      chain: 'ok',
      namespace: 'agents',
    });
    expect(s?.events.map((e) => e.session.seq)).toEqual([1, 2, 3, 4, 5, 6]);
    expect((await t.store.verify(['s-midnight']))[0]).toMatchObject({ ok: true, events: 6 });
  });

  it('waits for out-of-order events, reports a hole that stays as a gap, and heals it when the event comes', async () => {
    const ev = makeSession({ id: 's-order', statements: 5 });
    await t.store.ingest([ev[0], ev[2], ev[1]]); // 1, 3, 2: contiguous after the batch
    await t.store.ingest([ev[4], ev[5]]); // 5, 6 while 4 is missing
    let s = await getSession(t.store.db, 's-order');
    expect(s?.session).toMatchObject({ verifiedSeq: 3, maxSeq: 6, chain: 'pending' });
    const gaps = await t.store.sweepGaps(0);
    expect(gaps).toEqual([expect.objectContaining({ kind: 'audit.gap', sessionId: 's-order', seqFrom: 4, seqTo: 4 })]);
    expect((await t.store.verify(['s-order']))[0].findings).toEqual([
      expect.objectContaining({ kind: 'audit.gap', seqFrom: 4, seqTo: 4 }),
    ]);
    s = await getSession(t.store.db, 's-order');
    expect(s?.session.chain).toBe('gap');

    const late = await t.store.ingest([ev[3], ev[6]]);
    expect(late.healed).toBe(1);
    s = await getSession(t.store.db, 's-order');
    expect(s?.session).toMatchObject({ verifiedSeq: 7, chain: 'ok' });
    expect(s?.findings[0].resolvedAt).not.toBeNull();
    expect((await t.store.verify(['s-order']))[0].ok).toBe(true);
  });

  it('flags a forged event at ingest and an event altered in the t.store at re-verification', async () => {
    const ev = makeSession({ id: 's-forged', statements: 3 });
    const forged = {
      ...ev[2],
      decision: { action: 'allow' as const, rule: 'read-orders' },
      statement: { ...ev[2].statement!, text: 'SELECT 1' },
    };
    const r = await t.store.ingest([ev[0], ev[1], forged, ev[3], ev[4]]);
    expect(r.findings).toEqual([
      expect.objectContaining({ kind: 'audit.tampered', sessionId: 's-forged', seqFrom: 3 }),
    ]);
    expect((await getSession(t.store.db, 's-forged'))?.session.chain).toBe('tampered');

    const clean = makeSession({ id: 's-altered', statements: 3 });
    await t.store.ingest(clean);
    await t.store.db.query(
      `UPDATE audit_events SET event = jsonb_set(event::jsonb, '{statement,text}', '"SELECT harmless"')::text WHERE id = $1`,
      ['s-altered.3'],
    );
    const reports = await t.store.verify();
    const bad = reports.filter((x) => !x.ok).map((x) => x.sessionId);
    expect(bad.sort()).toEqual(['s-altered', 's-forged', 's-order'].filter((x) => x !== 's-order').sort());
    expect(reports.find((x) => x.sessionId === 's-altered')?.findings).toEqual([
      expect.objectContaining({ kind: 'audit.tampered', seqFrom: 3 }),
    ]);

    // Deleting the tail (including session.end) is caught against the max seq recorded at ingest.
    const tail = makeSession({ id: 's-tail', statements: 2 });
    await t.store.ingest(tail);
    await t.store.db.query('DELETE FROM audit_events WHERE session_id = $1 AND seq >= 3', ['s-tail']);
    expect((await t.store.verify(['s-tail']))[0].findings).toEqual([
      expect.objectContaining({ kind: 'audit.gap', seqFrom: 3, seqTo: 4 }),
    ]);
  });

  it('reports a second event for a seq: after the seq was verified, at the same time, or with content its hash does not cover', async () => {
    const ev = makeSession({ id: 's-second', statements: 3 });
    await t.store.ingest(ev);
    const resealed = (e: AuditEvent, patch: Record<string, unknown>) => {
      const { hash: _old, ...rest } = { ...e, ...patch } as AuditEvent;
      return { ...rest, hash: hashEvent(rest as AuditEvent) } as AuditEvent;
    };
    const text = { ...ev[2].statement!, text: 'SELECT forged' };
    // Another time: another primary key, so it is stored beside the verified one (and shown, and exported).
    const later = resealed(ev[2], { time: '2026-11-30T12:00:00.999999Z', statement: text });
    const r1 = await t.store.ingest([later]);
    expect(r1.findings).toEqual([
      expect.objectContaining({ kind: 'audit.tampered', sessionId: 's-second', seqFrom: 3, seqTo: 3 }),
    ]);
    expect((await getSession(t.store.db, 's-second'))?.session.chain).toBe('tampered');

    // The same time: the primary key drops it as a duplicate, which must not pass in silence.
    const quiet = makeSession({ id: 's-quiet', statements: 3 });
    await t.store.ingest(quiet);
    const r2 = await t.store.ingest([resealed(quiet[2], { statement: text })]);
    expect(r2.duplicates).toBe(1);
    expect(r2.findings).toEqual([
      expect.objectContaining({ kind: 'audit.tampered', sessionId: 's-quiet', seqFrom: 3 }),
    ]);
    expect((await getSession(t.store.db, 's-quiet'))?.session.chain).toBe('tampered');

    // The stored event's hash over other content.
    const mimic = makeSession({ id: 's-mimic', statements: 3 });
    await t.store.ingest(mimic);
    const r3 = await t.store.ingest([{ ...mimic[2], statement: text } as AuditEvent]);
    expect(r3.findings).toEqual([
      expect.objectContaining({ kind: 'audit.tampered', sessionId: 's-mimic', seqFrom: 3 }),
    ]);

    // A redelivery of the very same events is no finding.
    const again = makeSession({ id: 's-again', statements: 3 });
    await t.store.ingest(again);
    const r4 = await t.store.ingest(again);
    expect(r4).toMatchObject({ duplicates: again.length, findings: [] });
    expect((await getSession(t.store.db, 's-again'))?.session.chain).toBe('ok');
  });

  it('reports an event naming another namespace than its session, and keeps the session where it was filed', async () => {
    const ev = makeSession({ id: 's-theirs', statements: 2, namespace: 'team-b', end: false });
    await t.store.ingest(ev);
    const last = ev[ev.length - 1];
    // What team-a's NATS user can publish (its own namespace, on its own subject), chained onto team-b's session.
    const { hash: _h, ...body } = {
      ...last,
      id: 's-theirs.4',
      session: { id: 's-theirs', seq: 4 },
      prevHash: last.hash,
      identity: { ...last.identity!, namespace: 'team-a' },
      statement: { ...last.statement!, text: 'SELECT injected' },
    } as AuditEvent;
    const injected = { ...body, hash: hashEvent(body as AuditEvent) } as AuditEvent;
    const r = await t.store.ingest([injected]);
    expect(r.findings).toEqual([
      expect.objectContaining({
        kind: 'audit.tampered',
        sessionId: 's-theirs',
        seqFrom: 4,
        detail: expect.stringContaining('names namespace "team-a", its session "team-b"'),
      }),
    ]);
    expect((await getSession(t.store.db, 's-theirs'))?.session).toMatchObject({
      chain: 'tampered',
      namespace: 'team-b',
    });
    expect((await t.store.verify(['s-theirs']))[0].findings).toEqual([
      expect.objectContaining({ kind: 'audit.tampered', seqFrom: 4 }),
    ]);
  });

  it('turns a sidecar-declared audit.gap event into findings on the sessions it names', async () => {
    const chain = newChain();
    const gapEvent = sealEvent(
      {
        v: 1,
        type: 'audit.gap',
        time: '2026-11-30T12:30:00.000000Z',
        session: { id: 'sidecar-instance-1' },
        gap: {
          dropped: 2,
          since: '2026-11-30T12:29:00.000000Z',
          until: '2026-11-30T12:30:00.000000Z',
          cause: 'spool full',
          sessions: [{ id: 's-declared', fromSeq: 3, toSeq: 4 }],
        },
      },
      chain,
    );
    const r = await t.store.ingest([gapEvent]);
    expect(r.findings).toEqual([
      expect.objectContaining({
        kind: 'audit.gap',
        sessionId: 's-declared',
        seqFrom: 3,
        seqTo: 4,
        detail: expect.stringContaining('spool full'),
      }),
    ]);
    const rows = await t.store.db.query<{ detail: string }>(
      `SELECT detail FROM audit_chain_findings WHERE session_id = 's-declared'`,
    );
    expect(rows).toHaveLength(1);
  });

  it('an fsync_failed audit.gap: a finding for what is missing, "may have lost", none for what arrived and links', async () => {
    // 8 events (start, 6 statements, end); 5..8 lost, 1..4 arrived before the declaration, as from a page cache.
    const lostTail = makeSession({ id: 's-fsync-lost', statements: 6 });
    expect(lostTail).toHaveLength(8);
    await t.store.ingest(lostTail.slice(0, 4));
    const whole = makeSession({ id: 's-fsync-kept', statements: 2 });
    await t.store.ingest(whole);
    const chain = newChain();
    const declare = (sessions: { id: string; fromSeq: number; toSeq: number }[]) =>
      sealEvent(
        {
          v: 1,
          type: 'audit.gap',
          time: '2026-11-30T12:40:00.000000Z',
          session: { id: 'sidecar-instance-fsync' },
          gap: {
            dropped: sessions.reduce((n, r) => n + r.toSeq - r.fromSeq + 1, 0),
            since: '2026-11-30T12:39:00.000000Z',
            until: '2026-11-30T12:40:00.000000Z',
            cause: 'fsync_failed',
            sessions,
          },
        },
        chain,
      );
    const r = await t.store.ingest([
      declare([
        { id: 's-fsync-lost', fromSeq: 3, toSeq: 8 },
        { id: 's-fsync-kept', fromSeq: 2, toSeq: 3 },
      ]),
    ]);
    expect(r.findings).toEqual([
      {
        kind: 'audit.gap',
        sessionId: 's-fsync-lost',
        seqFrom: 5,
        seqTo: 8,
        detail: 'sidecar may have lost events 3..8 (fsync_failed: an fdatasync of its audit file or spool failed)',
      },
    ]);
    const rows = await t.store.db.query<{ session_id: string; seq_from: number }>(
      `SELECT session_id, seq_from::int FROM audit_chain_findings WHERE session_id LIKE 's-fsync-%'`,
    );
    expect(rows).toEqual([{ session_id: 's-fsync-lost', seq_from: 5 }]);
  });

  it('a declaration naming more than the open hole starting at the same seq widens it; arrivals settle it', async () => {
    // 10 events; 1, 2, 5, 6 arrive, the sweep reports the hole 3..4; then the sidecar declares 3..8 possibly lost.
    const ev = makeSession({ id: 's-widen', statements: 8 });
    await t.store.ingest([ev[0], ev[1], ev[4], ev[5]]);
    expect(await t.store.sweepGaps(0)).toEqual([
      expect.objectContaining({ sessionId: 's-widen', seqFrom: 3, seqTo: 4 }),
    ]);
    const declared = 'sidecar may have lost events 3..8 (fsync_failed: an fdatasync of its audit file or spool failed)';
    const r = await t.store.ingest([
      sealEvent(
        {
          v: 1,
          type: 'audit.gap',
          time: '2026-11-30T12:41:00.000000Z',
          session: { id: 'sidecar-instance-widen' },
          gap: {
            dropped: 6,
            since: '2026-11-30T12:40:00.000000Z',
            until: '2026-11-30T12:41:00.000000Z',
            cause: 'fsync_failed',
            sessions: [{ id: 's-widen', fromSeq: 3, toSeq: 8 }],
          },
        },
        newChain(),
      ),
    ]);
    expect(r.findings).toEqual([expect.objectContaining({ sessionId: 's-widen', seqFrom: 3, seqTo: 8 })]);
    const findings = () =>
      t.store.db.query<{ seq_from: number; seq_to: number; detail: string; resolved: boolean }>(
        `SELECT seq_from::int, seq_to::int, detail, resolved_at IS NOT NULL AS resolved FROM audit_chain_findings
         WHERE session_id = 's-widen' ORDER BY id`,
      );
    // 7..8 were declared and never arrived: the open finding covers them too, and says both things.
    expect(await findings()).toEqual([
      { seq_from: 3, seq_to: 8, detail: `events 3..4 did not arrive within 0s; ${declared}`, resolved: false },
    ]);
    await t.store.ingest([ev[2], ev[3]]);
    expect((await findings()).map((f) => [f.seq_from, f.seq_to, f.resolved])).toEqual([
      [3, 8, true],
      [7, 8, false],
    ]);
    const late = await t.store.ingest(ev.slice(6));
    expect(late.healed).toBe(1);
    expect((await findings()).every((f) => f.resolved)).toBe(true);
  });

  it('keeps events PostgreSQL refuses in audit_rejected and stores the rest of the batch', async () => {
    const ev = makeSession({ id: 's-nul', statements: 2 });
    // A NUL in an indexed column cannot be stored as PostgreSQL text (22021); the JSON text itself escapes it.
    const bad = { ...ev[2], identity: { ...ev[2].identity!, user: 'mallory\u0000' } };
    const r = await t.store.ingest([ev[0], ev[1], bad]);
    expect(r.inserted.map((e) => e.session.seq)).toEqual([1, 2]);
    expect(r.rejected).toBe(1);
    const rej = await t.store.db.query<{ raw: string }>(`SELECT raw FROM audit_rejected WHERE raw LIKE '%s-nul.3%'`);
    expect(rej).toHaveLength(1);
  });

  it('lists sessions with filters and keyset paging, and searches events by table, kind and decision', async () => {
    for (let i = 0; i < 5; i++) {
      await t.store.ingest(
        makeSession({
          id: `s-page-${i}`,
          statements: 2,
          namespace: 'paging',
          user: i % 2 ? 'alice' : 'bob',
          startMicros: Date.UTC(2026, 10, 30, 14, i) * 1000,
          tables: [`public.t${i}`],
          denyEvery: i === 3 ? 1 : undefined,
        }),
      );
    }
    const p1 = await listSessions(t.store.db, { namespace: 'paging', limit: 2 });
    expect(p1.items.map((s) => s.id)).toEqual(['s-page-4', 's-page-3']);
    const p2 = await listSessions(t.store.db, { namespace: 'paging', limit: 2, cursor: p1.next! });
    expect(p2.items.map((s) => s.id)).toEqual(['s-page-2', 's-page-1']);
    const p3 = await listSessions(t.store.db, { namespace: 'paging', limit: 2, cursor: p2.next! });
    expect(p3.items.map((s) => s.id)).toEqual(['s-page-0']);
    expect(p3.next).toBeNull();
    expect(
      (await listSessions(t.store.db, { namespace: 'paging', identity: 'alice', limit: 10 })).items.map((s) => s.id),
    ).toEqual(['s-page-3', 's-page-1']);
    expect(
      (await listSessions(t.store.db, { namespace: 'paging', decision: 'deny', limit: 10 })).items.map((s) => s.id),
    ).toEqual(['s-page-3']);
    const from = new Date(Date.UTC(2026, 10, 30, 14, 2)).toISOString();
    expect(
      (
        await listSessions(t.store.db, {
          namespace: 'paging',
          from,
          to: new Date(Date.UTC(2026, 10, 30, 14, 3)).toISOString(),
          limit: 10,
        })
      ).items.map((s) => s.id),
    ).toEqual(['s-page-2']);

    const byTable = await searchEvents(t.store.db, { table: 'public.t2', limit: 10 });
    expect(byTable.items.map((e) => e.id)).toEqual(['s-page-2.3', 's-page-2.2']);
    const denied = await searchEvents(t.store.db, { namespace: 'paging', kind: 'delete', decision: 'deny', limit: 1 });
    expect(denied.items).toHaveLength(1);
    const more = await searchEvents(t.store.db, {
      namespace: 'paging',
      kind: 'delete',
      decision: 'deny',
      limit: 1,
      cursor: denied.next!,
    });
    expect(more.items[0].id).not.toBe(denied.items[0].id);
  });

  it('retention drops whole day partitions older than the window', async () => {
    await t.store.ingest(makeSession({ id: 's-old', statements: 1, startMicros: Date.UTC(2026, 0, 1) * 1000 }));
    expect(await t.store.partitions.list()).toContain('audit_events_p20260101');
    const dropped = await t.store.partitions.dropOlderThan(30, Date.UTC(2026, 10, 30, 12));
    expect(dropped).toEqual(['audit_events_p20260101']);
    const c = new pg.Client({ connectionString: t.url });
    await c.connect();
    const n = await c.query("SELECT count(*)::int AS n FROM audit_events WHERE session_id = 's-old'");
    await c.end();
    expect(n.rows[0].n).toBe(0);
    expect(await t.store.partitions.list()).toContain('audit_events_p20261130');
  });
});
