import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { auditSubject } from '@pgwarden/policy';
import { afterEach, describe, expect, it } from 'vitest';
import { createAuditRecorder } from './audit-recorder.js';
import { DiskSpool, type SpoolRecord } from './disk-spool.js';
import { messageId } from './message-id.js';
import { selectRecord, sessionInfo } from './nats-test-kit.js';

const dirs: string[] = [];
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'pgwarden-spool-line-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const rec = (i: number) => ({ subject: 'pgwarden.audit.ns.p', msgID: `s.${i}`, data: JSON.stringify({ i, p: 'abc' }) });
const SEGMENT = 'audit-000000000001.jsonl';

/** What a spool opened afresh on `dir` reads (no cursor: from the start), damaged lines shown as `damaged`. */
function readFresh(dir: string): (string | SpoolRecord)[] {
  rmSync(join(dir, 'cursor'), { force: true });
  const spool = new DiskSpool({ dir, maxBytes: 1e8, fsync: 'never' });
  try {
    return spool.read(100).map((r) => (r.damaged ? 'damaged' : r));
  } finally {
    spool.close();
  }
}
const ids = (rs: (string | SpoolRecord)[]) => rs.map((r) => (typeof r === 'string' ? r : r.msgID));

/** Real sealed events as the recorder makes them (JSON text, session and seq). */
function sealedEvents(n: number): { json: string; session: string; seq: number }[] {
  const out: { json: string; session: string; seq: number }[] = [];
  const rec = createAuditRecorder(
    {
      emit: () => {},
      emitJson: (json, session, seq) => out.push({ json, session, seq }),
      ready: () => true,
      close: async () => {},
    },
    { instanceId: 'legacy', checkpointIntervalMs: 600_000 },
  );
  const s = rec.openSession(sessionInfo('old-run'));
  for (let i = 1; out.length < n; i++) s.statement(selectRecord(i));
  return out.slice(0, n);
}

/** A line as builds before the checksum wrote it: `<subject>\t<msgID>\t<event JSON>\n`. */
function olderBuildLine(e: { json: string; session: string; seq: number }, bareId = false): string {
  const event = JSON.parse(e.json) as { hash: string };
  const id = messageId(`${e.session}.${e.seq}`, bareId ? undefined : event.hash);
  return `${auditSubject(event)}\t${id}\t${e.json}\n`;
}

describe('spool lines: damage is never read as a record', () => {
  it('a line altered at any byte but its newline reads as damaged, tabs kept or not; its neighbours are read', () => {
    const dir = tempDir();
    const spool = new DiskSpool({ dir, maxBytes: 1e8, fsync: 'never' });
    spool.append([rec(1), rec(2), rec(3)]);
    spool.close();
    const original = readFileSync(join(dir, SEGMENT));
    const from = original.indexOf(10) + 1;
    const to = original.indexOf(10, from);
    expect(ids(readFresh(dir))).toEqual(['s.1', 's.2', 's.3']);
    for (let at = from; at < to; at++) {
      const damaged = Buffer.from(original);
      damaged[at] = damaged[at] === 0x78 ? 0x79 : 0x78; // 'x' or 'y': never a tab or a newline
      writeFileSync(join(dir, SEGMENT), damaged);
      expect(ids(readFresh(dir)), `byte ${at - from} of the line altered`).toEqual(['s.1', 'damaged', 's.3']);
    }
  });

  it('a block of another file over the middle of a line, both tabs kept, reads as damaged', () => {
    const dir = tempDir();
    const spool = new DiskSpool({ dir, maxBytes: 1e8, fsync: 'never' });
    spool.append([rec(1), { ...rec(2), data: JSON.stringify({ i: 2, p: 'y'.repeat(200) }) }, rec(3)]);
    spool.close();
    const bytes = readFileSync(join(dir, SEGMENT));
    const line = bytes.indexOf(10) + 1;
    // Bytes from elsewhere over the middle of the event: the line keeps its tabs and its end.
    const before = readFileSync(join(dir, SEGMENT));
    Buffer.from('"k":1,"v":"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz","w":0').copy(bytes, line + 60);
    const tabs = (b: Buffer) => b.toString('latin1').split('\n')[1].split('\t').length;
    expect(tabs(bytes)).toBe(tabs(before));
    writeFileSync(join(dir, SEGMENT), bytes);
    const spool2 = new DiskSpool({ dir, maxBytes: 1e8, fsync: 'never' });
    const got = spool2.read(10);
    expect(got.map((r) => (r.damaged ? 'damaged' : r.msgID))).toEqual(['s.1', 'damaged', 's.3']);
    expect(spool2.skippedLines).toBe(1);
    // Acknowledging the records on both sides moves the cursor past the damaged line: nothing waits behind it.
    spool2.ack(got[2].end);
    expect(spool2.empty).toBe(true);
    spool2.close();
  });
});

describe('spool lines: a spool an older build left', () => {
  it('is read (subjects and ids as written, either id form), and new records are appended after it', () => {
    const dir = tempDir();
    const events = sealedEvents(3);
    writeFileSync(
      join(dir, SEGMENT),
      olderBuildLine(events[0]) + olderBuildLine(events[1], true) + olderBuildLine(events[2]),
    );
    const spool = new DiskSpool({ dir, maxBytes: 1e8, fsync: 'never' });
    const got = spool.read(10);
    expect(got.map((r) => [r.subject, r.msgID, r.data, r.damaged])).toEqual(
      events.map((e, i) => {
        const [subject, msgID] = olderBuildLine(e, i === 1).split('\t');
        return [subject, msgID, e.json, undefined];
      }),
    );
    expect(got[1].subject).toBe('pgwarden.audit.agents.analytics_agent');
    spool.append([rec(9)]);
    expect(spool.read(10).map((r) => r.msgID)).toEqual(['s.9']);
    spool.close();
    expect(ids(readFresh(dir))).toEqual([...got.map((r) => r.msgID), 's.9']);
  });

  it('a line of an older build whose event was altered (still valid JSON, tabs kept) reads as damaged', () => {
    const dir = tempDir();
    const events = sealedEvents(3);
    const altered = olderBuildLine(events[1]).replace(/SELECT \d+/, 'SELECT 77');
    expect(altered).not.toBe(olderBuildLine(events[1]));
    writeFileSync(join(dir, SEGMENT), olderBuildLine(events[0]) + altered + olderBuildLine(events[2]));
    const got = readFresh(dir);
    expect(got).toHaveLength(3);
    expect(got[1]).toBe('damaged');
    expect((got[2] as SpoolRecord).data).toBe(events[2].json);
  });

  it("an older build's piece with the next record joined to it: the record is read whole, the piece as damaged", () => {
    // Builds before PIECE_END left the piece of a cut-short write on an append-only segment unended, and the next
    // write's first record followed it on the same line. Cut at every byte: the piece holds 0, 1 or 2 tabs.
    const dir = tempDir();
    const [a, b, c] = sealedEvents(3);
    const lineA = olderBuildLine(a);
    const lineB = olderBuildLine(b);
    const [subjectB, idB] = lineB.split('\t');
    for (let cut = 1; cut < lineA.length - 1; cut++) {
      writeFileSync(join(dir, SEGMENT), lineA.slice(0, cut) + lineB + olderBuildLine(c));
      const got = readFresh(dir);
      expect(got.length, `piece of ${cut} bytes`).toBe(3);
      expect(got[0], `piece of ${cut} bytes`).toBe('damaged');
      expect(got[1]).toMatchObject({ subject: subjectB, msgID: idB, data: b.json });
      expect((got[2] as SpoolRecord).data).toBe(c.json);
    }
  });

  it('segments an older build left are drained with the new ones, oldest first', () => {
    const dir = tempDir();
    const events = sealedEvents(4);
    writeFileSync(join(dir, SEGMENT), olderBuildLine(events[0]) + olderBuildLine(events[1]));
    writeFileSync(join(dir, 'audit-000000000002.jsonl'), olderBuildLine(events[2]) + olderBuildLine(events[3]));
    const spool = new DiskSpool({ dir, maxBytes: 1e8, fsync: 'never', segmentBytes: 1000 });
    spool.append([rec(1)]);
    expect(spool.read(10).map((r) => r.data)).toEqual([...events.map((e) => e.json), rec(1).data]);
    spool.close();
    expect(readdirSync(dir).filter((f) => f.endsWith('.jsonl'))).toHaveLength(2);
  });
});
