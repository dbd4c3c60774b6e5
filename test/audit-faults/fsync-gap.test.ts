import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AuditEvent } from '@pgwarden/policy';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { useTestStore } from '../../collector/src/testing/test-store.js';
import { createAuditRecorder } from '../../sidecar/src/audit/audit-recorder.js';
import { type FailingDisk, mountFailingDisk } from '../../sidecar/src/audit/failing-disk.js';
import { createFileSink } from '../../sidecar/src/audit/line-sinks.js';
import { noting, selectRecord, sessionInfo } from '../../sidecar/src/audit/nats-test-kit.js';

/**
 * The file sink's fdatasync really fails (failing-disk.ts), the disk recovers, and a crash then loses the events the
 * failed sync covered. The collector must see that hole as the sidecar declared it (an `audit.gap` with cause
 * `fsync_failed`), not as an unexplained one, and nothing in the trail as tampered.
 */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const SESSION = 'fsync-collector';

// Root only (mount, losetup), as the sessions and CI here run.
describe.skipIf(process.getuid?.() !== 0)('events a failed fdatasync may have lost, through the collector', () => {
  const t = useTestStore();
  let disk: FailingDisk | undefined;
  afterEach(() => disk?.close());

  it('the collector reports the lost range once, as the sidecar declared it, and the full verify agrees', async () => {
    disk = mountFailingDisk();
    const path = join(disk.dir, 'audit.jsonl');
    const sink = createFileSink({ path, fsync: 'batch', registry: new Registry() });
    const seqs: number[] = [];
    const rec = createAuditRecorder(noting(sink, SESSION, seqs), {
      instanceId: 'fsync-collector',
      checkpointIntervalMs: 600_000,
    });
    const s = rec.openSession(sessionInfo(SESSION));
    let i = 0;
    for (; i < 5; i++) s.statement(selectRecord(i));
    await sink.whenIdle!();

    disk.fill();
    // One write and one sync per round: the sync that fails covered exactly that round.
    let fromSeq = 0;
    let toSeq = 0;
    for (let round = 0; round < 300 && sink.ready(); round++) {
      const before = seqs.length;
      for (let k = 0; k < 8; k++) s.statement(selectRecord(i++));
      await sink.whenIdle!();
      fromSeq = seqs[before];
      toSeq = seqs.at(-1)!;
    }
    expect(sink.ready()).toBe(false);
    disk.free();
    for (let k = 0; k < 300 && !sink.ready(); k++) {
      s.statement(selectRecord(i++));
      await sleep(10);
    }
    expect(sink.ready()).toBe(true);
    s.end({});
    await sink.whenIdle!();
    await sink.close();

    // What a crash then leaves: the page cache showed every event, the disk lost those of the failed sync.
    const trail = readFileSync(path, 'utf8')
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as AuditEvent)
      .filter((e) => e.session.id !== SESSION || e.session.seq < fromSeq || e.session.seq > toSeq);
    const r = await t.store.ingest(trail);
    expect(r.rejected).toBe(0);
    const detail = `sidecar may have lost events ${fromSeq}..${toSeq} (fsync_failed: an fdatasync of its audit file or spool failed)`;
    expect(r.findings).toEqual([{ kind: 'audit.gap', sessionId: SESSION, seqFrom: fromSeq, seqTo: toSeq, detail }]);
    // The hole the chain shows is that one: the sweep adds nothing, the stored finding is the declared one.
    await t.store.sweepGaps(0);
    const stored = await t.store.db.query<{ kind: string; session_id: string; seq_from: number; seq_to: number }>(
      'SELECT kind, session_id, seq_from::int, seq_to::int, detail FROM audit_chain_findings ORDER BY id',
    );
    expect(stored).toEqual([{ kind: 'audit.gap', session_id: SESSION, seq_from: fromSeq, seq_to: toSeq, detail }]);
    // The full re-verification finds exactly that hole, and the sidecar's own chain (with the gap event) intact.
    const reports = await t.store.verify();
    expect(reports.flatMap((x) => x.findings.map((f) => [f.kind, f.sessionId, f.seqFrom, f.seqTo]))).toEqual([
      ['audit.gap', SESSION, fromSeq, toSeq],
    ]);
  }, 60_000);
});
