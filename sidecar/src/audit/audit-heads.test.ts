import { type AuditEvent, auditEventSchema, verifyChain } from '@pgwarden/policy';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { createAuditRecorder } from './audit-recorder.js';
import type { AuditSink } from './audit-sink.js';
import { selectRecord, sessionInfo } from './nats-test-kit.js';

const validate = new Ajv({ allErrors: true }).compile(auditEventSchema);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function textSink(): { sink: AuditSink; events: AuditEvent[] } {
  const events: AuditEvent[] = [];
  return {
    events,
    sink: {
      ready: () => true,
      close: async () => {},
      emit: (e) => void events.push(JSON.parse(JSON.stringify(e))),
      emitJson: (j) => void events.push(JSON.parse(j)),
    },
  };
}

const headsEvents = (events: AuditEvent[]) => events.filter((e) => e.type === 'audit.heads');
/** The latest event of a chain, as the heads must name it. */
const tailOf = (events: AuditEvent[], id: string) => events.filter((e) => e.session.id === id).at(-1)!;

describe('audit.heads: the sidecar chain records the session chains it wrote', () => {
  it('names each chain that grew, once per tick, with the seq and hash of its latest event', async () => {
    const { sink, events } = textSink();
    // A tick far longer than the test: heads are written only where the test asks (close), so counts are exact.
    const rec = createAuditRecorder(sink, { instanceId: 'h1', checkpointIntervalMs: 600_000 });
    const a = rec.openSession(sessionInfo('sess-a'));
    const b = rec.openSession(sessionInfo('sess-b'));
    a.statement(selectRecord(1));
    b.statement(selectRecord(2));
    b.end({});
    const idle = rec.openSession(sessionInfo('sess-idle'));
    void idle;
    // Nothing per statement.
    expect(headsEvents(events)).toEqual([]);
    await rec.close();
    const [heads] = headsEvents(events);
    expect(headsEvents(events)).toHaveLength(1);
    expect(heads.session.id).toBe('sidecar-h1');
    const named = new Map(heads.heads!.chains.map((c) => [c.id, c]));
    for (const id of ['sess-a', 'sess-b', 'sess-idle']) {
      const last = tailOf(
        events.filter((e) => e !== heads),
        id,
      );
      expect(named.get(id)).toEqual({ id, seq: last.session.seq, hash: last.hash });
    }
    expect(named.get('sess-b')?.seq).toBe(3); // session.start, statement, session.end
    for (const e of events) expect(validate(e), JSON.stringify(validate.errors)).toBe(true);
    expect(verifyChain(events)).toMatchObject({ ok: true });
  });

  it('leaves chains that did not grow out of the next heads, and writes none when nothing grew', async () => {
    const { sink, events } = textSink();
    const rec = createAuditRecorder(sink, { instanceId: 'h2', checkpointIntervalMs: 30 });
    const a = rec.openSession(sessionInfo('sess-a'));
    const b = rec.openSession(sessionInfo('sess-b'));
    a.statement(selectRecord(1));
    b.statement(selectRecord(2));
    await sleep(150);
    expect(headsEvents(events)).toHaveLength(1);
    expect(
      headsEvents(events)[0]
        .heads?.chains.map((c) => c.id)
        .sort(),
    ).toEqual(['sess-a', 'sess-b']);
    a.statement(selectRecord(3));
    await sleep(150);
    const after = headsEvents(events);
    expect(after).toHaveLength(2);
    expect(after[1].heads?.chains).toEqual([{ id: 'sess-a', seq: 3, hash: tailOf(events, 'sess-a').hash }]);
    // An ended session is named once more, with its session.end.
    b.end({});
    await sleep(150);
    const ends = headsEvents(events);
    expect(ends).toHaveLength(3);
    const end = tailOf(events, 'sess-b');
    expect(end.type).toBe('session.end');
    expect(ends[2].heads?.chains).toEqual([{ id: 'sess-b', seq: end.session.seq, hash: end.hash }]);
    await sleep(150);
    expect(headsEvents(events)).toHaveLength(3);
    await rec.close();
    expect(headsEvents(events)).toHaveLength(3);
  });

  it('names open chains again once per refresh period, grown or not, and ended ones never again', async () => {
    const { sink, events } = textSink();
    const rec = createAuditRecorder(sink, { instanceId: 'h4', checkpointIntervalMs: 20, headsRefreshMs: 200 });
    const open = rec.openSession(sessionInfo('still-open'));
    const done = rec.openSession(sessionInfo('done'));
    open.statement(selectRecord(1));
    done.end({});
    await sleep(100);
    const first = headsEvents(events);
    expect(first).toHaveLength(1);
    expect(first[0].heads).toMatchObject({ refreshMs: 200 });
    expect(first[0].heads?.chains.map((c) => c.id).sort()).toEqual(['done', 'still-open']);
    // Nothing grows for a while: only the open chain is named again, with the same head, once per period.
    await sleep(700);
    const later = headsEvents(events).slice(1);
    expect(later.length).toBeGreaterThanOrEqual(2);
    expect(later.length).toBeLessThanOrEqual(5);
    for (const e of later)
      expect(e.heads?.chains).toEqual([{ id: 'still-open', seq: 2, hash: tailOf(events, 'still-open').hash }]);
    await rec.close();
  });

  it('splits the heads of many chains over several bounded events', async () => {
    const { sink, events } = textSink();
    const rec = createAuditRecorder(sink, { instanceId: 'h3', checkpointIntervalMs: 600_000 });
    for (let i = 0; i < 450; i++) rec.openSession(sessionInfo(`s-${i}`)).statement(selectRecord(i));
    await rec.close();
    const heads = headsEvents(events);
    expect(heads.map((e) => e.heads?.chains.length)).toEqual([200, 200, 50]);
    const named = new Set(heads.flatMap((e) => e.heads!.chains.map((c) => c.id)));
    expect(named.size).toBe(450);
    expect(JSON.stringify(heads[0]).length).toBeLessThan(40_000);
  });
});
