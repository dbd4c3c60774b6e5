import { type AuditEvent, verifyChain } from '@pgwarden/policy';
import { describe, expect, it } from 'vitest';
import type { DeliveryOutcome } from '../ingest/ingest-queue.js';
import { ReadRecorder } from './read-recorder.js';

/**
 * The folding of repeated reads, on the recorder alone: what it hands the store is the whole observable. (The
 * store path itself, PostgreSQL and all, is audited-reads.test.ts.)
 */
function recorder(opts: { repeatWindowMs: number; outcome?: () => Promise<DeliveryOutcome> }) {
  const stored: AuditEvent[] = [];
  const r = new ReadRecorder({
    store: async (json) => {
      const outcome = opts.outcome ? await opts.outcome() : 'stored';
      if (outcome !== 'rejected') stored.push(JSON.parse(json) as AuditEvent);
      return outcome;
    },
    repeatWindowMs: opts.repeatWindowMs,
    timeoutMs: 1000,
  });
  return { r, stored, reads: () => stored.filter((e) => e.type === 'audit.read').map((e) => e.read) };
}

const poll = { reader: 'rita', route: '/api/v1/approvals', query: { state: 'pending' }, status: 200, items: 0 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('ReadRecorder: repeated identical reads', () => {
  it('records the first read at once and folds identical ones within the window into one `repeated` event', async () => {
    const { r, stored, reads } = recorder({ repeatWindowMs: 150 });
    await r.record(poll);
    await Promise.all([r.record(poll), r.record(poll), r.record({ ...poll })]);
    // A read that differs in anything recorded (here the item count: new data was seen) is its own event.
    await r.record({ ...poll, items: 1 });
    expect(reads()).toEqual([poll, { ...poll, items: 1 }]);
    await sleep(300);
    expect(reads()).toEqual([poll, { ...poll, items: 1 }, { ...poll, repeated: 3 }]);
    // After the window the next identical read is recorded on its own again.
    await r.record(poll);
    expect(reads()).toHaveLength(4);
    expect(reads()[3]).toEqual(poll);
    r.close();
    expect(verifyChain(stored)).toMatchObject({ ok: true, events: 4 });
  });

  it('close records the repeats already answered', async () => {
    const { r, reads } = recorder({ repeatWindowMs: 60_000 });
    await r.record(poll);
    await r.record(poll);
    r.close();
    await sleep(10);
    expect(reads()).toEqual([poll, { ...poll, repeated: 1 }]);
  });

  it('fails closed: a repeat of a read whose event was refused is refused too, and nothing is folded into it', async () => {
    let outcome: DeliveryOutcome = 'rejected';
    const { r, reads } = recorder({ repeatWindowMs: 60_000, outcome: async () => outcome });
    const first = r.record(poll);
    const repeat = r.record(poll);
    await expect(first).rejects.toMatchObject({ code: 'COLLECTOR_READ_UNRECORDED' });
    await expect(repeat).rejects.toMatchObject({ code: 'COLLECTOR_READ_UNRECORDED' });
    outcome = 'stored';
    await r.record(poll);
    r.close();
    await sleep(10);
    expect(reads()).toEqual([poll]);
  });

  it('repeatWindowMs 0 records every read on its own', async () => {
    const { r, reads } = recorder({ repeatWindowMs: 0 });
    for (let i = 0; i < 3; i++) await r.record(poll);
    expect(reads()).toEqual([poll, poll, poll]);
    r.close();
  });
});
