import { describe, expect, it } from 'vitest';
import { makeSession, sidecarJson } from '../testing/audit-events.js';
import { useTestStore } from '../testing/test-store.js';
import { copyField } from './copy-in.js';

/**
 * Ingest writes batches with COPY and falls back to INSERT … ON CONFLICT when a batch repeats stored events; both
 * must t.store the same bytes and the same verdicts.
 */
describe('COPY ingest', () => {
  const t = useTestStore();

  const asReceived = (raw: string) => ({ event: JSON.parse(raw), raw });

  it('escapes what COPY text format treats specially', () => {
    expect(copyField(null)).toBe('\\N');
    expect(copyField(7)).toBe('7');
    expect(copyField('\\N')).toBe('\\\\N');
    expect(copyField('a\tb\nc\rd\\.')).toBe('a\\tb\\nc\\rd\\\\.');
  });

  it.each([
    ['as text', false],
    ['as UTF-8 bytes', true],
  ])(
    'stores text with tabs, newlines, backslashes and quotes byte for byte, in every column (%s)',
    async (_, bytes) => {
      const odd = ['public."t\tab"', 'x\\y', 'line\nbreak', '\\.', '{"a",b}', 'ünï 😀'];
      const sid = `cp-odd\\${bytes ? 'b' : 't'}`;
      const evs = makeSession({ id: sid, namespace: 'ns\\\t', user: 'u\r\n\\N', statements: 4, tables: odd });
      // Pretty-printed JSON has raw newlines and spaces: stored as received (and hashed by re-encoding).
      const items = evs.map((e, i) => {
        const raw = i % 2 ? sidecarJson(e) : JSON.stringify(e, null, '\t');
        return bytes ? { ...asReceived(raw), utf8: Buffer.from(raw) } : asReceived(raw);
      });
      const r = await t.store.ingest(items);
      expect(r.inserted).toHaveLength(6);
      expect(r.findings).toEqual([]);
      const rows = await t.store.db.query<{ event: string; namespace: string; identity: string; tables: string[] }>(
        `SELECT event, namespace, identity, tables FROM audit_events WHERE session_id = $1 ORDER BY seq`,
        [sid],
      );
      expect(rows.map((x) => x.event)).toEqual(items.map((x) => x.raw));
      expect(rows[1]).toMatchObject({ namespace: 'ns\\\t', identity: 'u\r\n\\N', tables: odd });
      expect((await t.store.verify([sid]))[0]).toMatchObject({ ok: true, events: 6 });
    },
  );

  it('stores each event once when batches repeat stored events or repeat within themselves', async () => {
    const evs = makeSession({ id: 'cp-redeliver', statements: 60 }).map((e) => asReceived(sidecarJson(e)));
    const first = await t.store.ingest(evs.slice(0, 20));
    expect(first.inserted).toHaveLength(20);
    // Half already stored (COPY refuses the batch, INSERT takes it), one repeated inside the batch.
    const mixed = await t.store.ingest([...evs.slice(10, 30), evs[25]]);
    expect(mixed.inserted.map((e) => e.session.seq)).toEqual(evs.slice(20, 30).map((x) => x.event.session.seq));
    expect(mixed.duplicates).toBe(11);
    // The following batches (INSERT for 16 batches, then COPY again) keep storing the rest exactly once.
    for (let i = 30; i < evs.length; i++) {
      const r = await t.store.ingest([evs[i], evs[i]]);
      expect(r.inserted).toHaveLength(1);
    }
    const [{ n }] = await t.store.db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM audit_events WHERE session_id = 'cp-redeliver'`,
    );
    expect(n).toBe(62);
    expect((await t.store.verify(['cp-redeliver']))[0]).toMatchObject({ ok: true, events: 62 });
  });
});
