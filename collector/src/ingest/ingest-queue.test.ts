import { describe, expect, it } from 'vitest';
import { makeSession, sidecarJson } from '../testing/audit-events.js';
import { useTestStore } from '../testing/test-store.js';
import { IngestQueue, ItemFifo, type QueueItem } from './ingest-queue.js';

/**
 * Bodies arrive as bytes from NATS: the queue hands the t.store those bytes to hash and copy only when they are
 * exactly the encoding of the decoded text, so what is stored and the chain verdicts never depend on the path.
 */
describe('ingest queue, byte bodies', () => {
  const t = useTestStore();

  /** Pushes byte bodies through a queue; resolves with each outcome and the chain findings raised. */
  async function ingestBodies(bodies: Uint8Array[]) {
    const queue = new IngestQueue(t.store, { maxBatch: 100, maxDelayMs: 1 });
    const findings: unknown[] = [];
    queue.on('finding', (f) => findings.push(f));
    const outcomes = await Promise.all(bodies.map((body) => queue.push({ body, source: 'test' })));
    await queue.stop();
    return { outcomes, findings };
  }
  const storedText = async (sid: string) =>
    (
      await t.store.db.query<{ event: string }>('SELECT event FROM audit_events WHERE session_id = $1 ORDER BY seq', [
        sid,
      ])
    ).map((r) => r.event);

  it('stores the decoded text of canonical, BOM-prefixed and pretty-printed bodies, with intact chains', async () => {
    const evs = makeSession({ id: 'q-bytes', statements: 4, tables: ['public."ünï\\t"'] });
    const texts = evs.map((e) => sidecarJson(e));
    const bodies: Uint8Array[] = texts.map((t) => Buffer.from(t));
    bodies[1] = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), bodies[1]]); // the decoder drops a BOM
    texts[2] = JSON.stringify(evs[2], null, '\t'); // raw tabs and newlines, not canonical
    bodies[2] = Buffer.from(texts[2]);
    const { outcomes, findings } = await ingestBodies(bodies);
    expect(outcomes).toEqual(bodies.map(() => 'stored'));
    expect(await storedText('q-bytes')).toEqual(texts);
    expect(findings).toEqual([]);
    expect((await t.store.verify(['q-bytes']))[0]).toMatchObject({ ok: true, events: 6 });
  });

  it('stores invalid UTF-8 as decoded (U+FFFD) and flags that event, as when it arrives as text', async () => {
    const evs = makeSession({ id: 'q-badutf8', statements: 3 });
    const bodies: Uint8Array[] = evs.map((e) => Buffer.from(sidecarJson(e)));
    const at = bodies[2].indexOf('SELECT');
    bodies[2] = Buffer.concat([bodies[2].subarray(0, at), Buffer.from([0x80]), bodies[2].subarray(at)]);
    const { outcomes, findings } = await ingestBodies(bodies);
    expect(outcomes).toEqual(bodies.map(() => 'stored'));
    expect(await storedText('q-badutf8')).toEqual(bodies.map((b) => new TextDecoder().decode(b)));
    expect(findings).toEqual([expect.objectContaining({ kind: 'audit.tampered', seqFrom: 3 })]);
    expect((await t.store.verify(['q-badutf8']))[0].findings).toEqual([
      expect.objectContaining({ kind: 'audit.tampered', seqFrom: 3 }),
    ]);
  });

  it('reads canonical bodies without parsing them: same verdicts, rejects and stored text; whole events to listeners', async () => {
    const evs = makeSession({ id: 'q-read', statements: 5, denyEvery: 2 });
    const texts = evs.map((e) => sidecarJson(e));
    const altered = texts[3].replace('WHERE id = 2', 'WHERE id = 9'); // hash kept: still canonical
    expect(altered).not.toBe(texts[3]);
    texts[3] = altered;
    const noSession = JSON.parse(texts[4]);
    delete noSession.session;
    const bodies = [...texts, JSON.stringify(noSession)].map((x) => Buffer.from(x));
    const queue = new IngestQueue(t.store, { maxBatch: 100, maxDelayMs: 1 });
    const findings: unknown[] = [];
    const heard: unknown[] = [];
    queue.on('finding', (f) => findings.push(f));
    queue.on('stored', (events) => heard.push(...events.map((e) => JSON.parse(JSON.stringify(e)))));
    const outcomes = await Promise.all(bodies.map((body) => queue.push({ body, source: 'test' })));
    await queue.stop();
    expect(outcomes).toEqual([...texts.map(() => 'stored'), 'rejected']);
    expect(findings).toEqual([expect.objectContaining({ kind: 'audit.tampered', seqFrom: 4, seqTo: 4 })]);
    expect(heard).toEqual(texts.map((x) => JSON.parse(x)));
    expect(await storedText('q-read')).toEqual(texts);
    const [rejected] = await t.store.db.query<{ raw: string }>('SELECT raw FROM audit_rejected WHERE raw LIKE $1', [
      '%q-read.5%',
    ]);
    expect(rejected?.raw).toBe(JSON.stringify(noSession));
    expect((await t.store.verify(['q-read']))[0].findings).toEqual([
      expect.objectContaining({ kind: 'audit.tampered', seqFrom: 4 }),
    ]);
  });
});

/** The queue overlaps its work with the store's: what each batch waits for, and what runs meanwhile. */
describe('ingest queue, overlap with the store', () => {
  const t = useTestStore();

  /** Wraps `store.ingest` for one test: `onCall` runs as each write starts. */
  async function withIngestSpy(onCall: () => void, run: () => Promise<void>) {
    const store = t.store;
    const ingest = store.ingest;
    store.ingest = (...args) => {
      onCall();
      return ingest.apply(store, args);
    };
    try {
      await run();
    } finally {
      store.ingest = ingest;
    }
  }

  it("starts the next batch's transaction before acknowledging the previous batch", async () => {
    const bodies = makeSession({ id: 'q-overlap', statements: 28 }).map((e) => Buffer.from(sidecarJson(e)));
    const log: string[] = [];
    const queue = new IngestQueue(t.store, { maxBatch: 10, maxDelayMs: 1 });
    await withIngestSpy(
      () => log.push('write'),
      async () => {
        bodies.forEach((body, i) => {
          queue.enqueue({ body, source: 'test', ack: () => log.push(`ack ${Math.floor(i / 10)}`) });
        });
        await queue.stop();
      },
    );
    const firstAck = (batch: number) => log.indexOf(`ack ${batch}`);
    expect(log.filter((x) => x.startsWith('ack'))).toHaveLength(30);
    // Batch 1's write started before batch 0 was acknowledged, batch 2's before batch 1 was.
    expect(log.slice(0, firstAck(0)).filter((x) => x === 'write')).toHaveLength(2);
    expect(log.slice(0, firstAck(1)).filter((x) => x === 'write')).toHaveLength(3);
    expect((await t.store.verify(['q-overlap']))[0]).toMatchObject({ ok: true, events: 30 });
  });

  it('lets the event loop turn while it parses a large batch (the running transaction needs it)', async () => {
    const bodies = makeSession({ id: 'q-slices', statements: 598 }).map((e) => Buffer.from(sidecarJson(e)));
    const queue = new IngestQueue(t.store, { maxBatch: 600, maxDelayMs: 1 });
    let turned = false;
    let turnedBeforeWrite: boolean | undefined;
    await withIngestSpy(
      () => {
        turnedBeforeWrite ??= turned;
      },
      async () => {
        // The batch is full at the last of these: parsing starts inside that call.
        for (const body of bodies) queue.enqueue({ body, source: 'test' });
        setImmediate(() => {
          turned = true;
        });
        await queue.stop();
      },
    );
    expect(turnedBeforeWrite).toBe(true);
    expect((await t.store.verify(['q-slices']))[0]).toMatchObject({ ok: true, events: 600 });
  });
});

describe('ItemFifo', () => {
  it('hands items out oldest first in batches, across compactions, with interleaved pushes', () => {
    const fifo = new ItemFifo();
    const item = (i: number) => ({ d: { body: new Uint8Array(), source: String(i) } }) as unknown as QueueItem;
    let pushed = 0;
    const taken: string[] = [];
    // Enough items and uneven batches to pass the compaction threshold several times.
    for (let round = 0; round < 40; round++) {
      for (let k = 0; k < 700; k++) fifo.push(item(pushed++));
      for (const it of fifo.take(round % 3 === 0 ? 1000 : 333)) taken.push(it.d.source);
      expect(fifo.length).toBe(pushed - taken.length);
    }
    while (fifo.length > 0) for (const it of fifo.take(1000)) taken.push(it.d.source);
    expect(taken).toEqual(Array.from({ length: pushed }, (_, i) => String(i)));
    expect(fifo.take(10)).toEqual([]);
  });
});
