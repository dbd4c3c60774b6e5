import { describe, expect, it } from 'vitest';
import { makeSession, sidecarJson } from '../testing/audit-events.js';
import { useTestStore } from '../testing/test-store.js';
import { CopyRows } from './copy-rows.js';
import type { IngestItem } from './ingest-writer.js';

const received = (raw: string): IngestItem => ({ event: JSON.parse(raw), raw, utf8: Buffer.from(raw) });
const payloadBytes = (rows: CopyRows, count: number) => {
  const claimed = rows.claim(count);
  if (!claimed?.binary) throw new Error('no binary payload');
  return Buffer.from(claimed.binary.message());
};

/** The ingest queue builds a batch's COPY rows part by part while the previous batch is in PostgreSQL. */
describe('COPY rows built ahead', () => {
  const t = useTestStore();

  it('built in parts split at every offset, the payload is byte for byte the one built at once', () => {
    const items = makeSession({ id: 'rows-split', statements: 5, tables: ['ünï'] }).map((e) =>
      received(sidecarJson(e)),
    );
    const whole = payloadBytes(CopyRows.of(items, true), items.length);
    for (let a = 0; a <= items.length; a++)
      for (let b = a; b <= items.length; b++) {
        const rows = new CopyRows();
        rows.add(items.slice(0, a));
        rows.add(items.slice(a, b));
        rows.add(items.slice(b));
        expect(payloadBytes(rows, items.length).equals(whole)).toBe(true);
      }
  });

  it('drops repeats of a primary key within the batch, across parts', () => {
    const items = makeSession({ id: 'rows-repeat', statements: 2 }).map((e) => received(sidecarJson(e)));
    const rows = new CopyRows();
    rows.add([items[0], items[1]]);
    rows.add([items[1], items[2], items[0]]);
    expect(rows.rows).toEqual([items[0], items[1], items[2]]);
    expect([...rows.ids]).toEqual(items.slice(0, 3).map((x) => x.event.id));
  });

  it('is handed to one COPY only, and only for as many items as it was built from', () => {
    const items = makeSession({ id: 'rows-claim', statements: 1 }).map((e) => received(sidecarJson(e)));
    const rows = new CopyRows();
    rows.add(items);
    expect(rows.claim(items.length - 1)).toBeUndefined();
    expect(rows.claim(items.length)?.rows).toBe(rows);
    expect(rows.claim(items.length)).toBeUndefined();
  });

  it('stores the batch from rows built ahead; a write whose rows were already sent or are not its own builds its own', async () => {
    const evs = makeSession({ id: 'rows-store', statements: 8 }).map((e) => received(sidecarJson(e)));
    const first = evs.slice(0, 4);
    const ahead = t.store.copyRows();
    expect(ahead).toBeDefined();
    ahead?.add(first);
    expect((await t.store.ingest(first, ahead)).inserted).toHaveLength(4);
    // Claimed already (as by an attempt that failed after sending it): its buffer may hold another batch by now.
    const rest = evs.slice(4);
    const sent = new CopyRows();
    sent.add(rest);
    sent.claim(rest.length);
    expect((await t.store.ingest(rest.slice(0, 2), sent)).inserted).toHaveLength(2);
    // Built from a different batch (of another size): the write must not send it.
    const other = new CopyRows();
    other.add(evs.slice(0, 2));
    expect((await t.store.ingest(rest.slice(2), other)).inserted).toHaveLength(rest.length - 2);
    const stored = await t.store.db.query<{ event: string }>(
      `SELECT event FROM audit_events WHERE session_id = 'rows-store' ORDER BY seq`,
    );
    expect(stored.map((r) => r.event)).toEqual(evs.map((x) => x.raw));
    expect((await t.store.verify(['rows-store']))[0]).toMatchObject({ ok: true, events: evs.length });
  });
});
