import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { schemaV1Rules } from '../chain/chain-rules.js';
import type { AuditEvent } from '../event.js';
import { makeSession, sidecarJson } from '../testing/audit-events.js';
import { useTestStore } from '../testing/test-store.js';
import { BinaryCopyPayload, pgTimestampMicros } from './copy-binary.js';
import { type IngestItem, writeBatch } from './ingest-writer.js';
import { dayKey } from './partitions.js';

/**
 * Binary COPY must store exactly the rows the text COPY stores: the same events are written once each way, into two
 * databases, and every column is compared as PostgreSQL itself renders it.
 */
describe('binary COPY', () => {
  const text = useTestStore();
  const binary = useTestStore();

  it('computes the microseconds PostgreSQL reads from the same text, or declines', async () => {
    const fixed = [
      '2000-01-01T00:00:00Z',
      '1999-12-31T23:59:59.999999Z',
      '1970-01-01T00:00:00.5Z',
      '2000-02-29T12:34:56.000001Z',
      '1900-03-01T00:00:00.12Z',
      '2100-02-28T23:59:59.1234Z',
      '2284-12-31T23:59:59.999999Z',
      '1716-01-01T00:00:00Z',
    ];
    const min = Date.UTC(1716, 0, 1);
    const max = Date.UTC(2284, 0, 1);
    const random = fc.sample(
      fc.tuple(fc.integer({ min, max }), fc.integer({ min: 0, max: 999 }), fc.integer({ min: 0, max: 6 })),
      { numRuns: 2000, seed: 5 },
    );
    const times = [
      ...fixed,
      ...random.map(([ms, us, digits]) => {
        const iso = new Date(ms).toISOString().slice(0, 19);
        const millis = String(((ms % 1000) + 1000) % 1000).padStart(3, '0');
        const frac = `${millis}${String(us).padStart(3, '0')}`.slice(0, digits);
        return `${iso}${digits ? `.${frac}` : ''}Z`;
      }),
    ];
    const rows = await text.store.db.query<{ us: string }>(
      `SELECT (extract(epoch FROM t::timestamptz) * 1000000 - 946684800000000)::bigint::text AS us
       FROM unnest($1::text[]) WITH ORDINALITY AS u(t, n) ORDER BY n`,
      [times],
    );
    expect(times.map((t) => String(pgTimestampMicros(t)))).toEqual(rows.map((r) => r.us));
    // Left to PostgreSQL's text input: offsets, sub-microsecond digits, leap seconds, impossible or far dates.
    for (const t of [
      '2026-11-30T12:00:00+02:00',
      '2026-11-30T12:00:00.1234567Z',
      '2026-11-30T12:00:60Z',
      '2026-02-29T00:00:00Z',
      '2026-13-01T00:00:00Z',
      '2026-11-30 12:00:00Z',
      '0001-01-01T00:00:00Z',
      '9999-12-31T23:59:59Z',
    ])
      expect(pgTimestampMicros(t), t).toBeUndefined();
  });

  it('reads times character by character exactly as the RFC 3339 UTC pattern it replaced accepts them', () => {
    // The former implementation, kept as the reference.
    const pattern = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?Z$/;
    const matches = (t: string) => pattern.test(t);
    const valid = fc
      .date({ min: new Date(Date.UTC(1716, 0, 1)), max: new Date(Date.UTC(2284, 11, 31)), noInvalidDate: true })
      .chain((d) =>
        fc.tuple(fc.constant(d.toISOString()), fc.integer({ min: 0, max: 7 }), fc.integer({ min: 0, max: 9_999_999 })),
      )
      .map(([iso, digits, f]) =>
        digits === 0
          ? iso.replace(/\.\d+Z$/, 'Z')
          : iso.replace(/\.\d+Z$/, `.${String(f).padStart(7, '0').slice(0, digits)}Z`),
      );
    // Near misses: one character of a valid time replaced, dropped or doubled, from an alphabet of what times hold.
    const mutated = fc
      .tuple(valid, fc.nat(), fc.constantFrom('0', '9', '-', ':', 'T', 'Z', '.', ' ', '+', 'z', '٣', ''), fc.boolean())
      .map(([t, at, c, insert]) => {
        const i = at % (t.length + 1);
        return insert ? t.slice(0, i) + c + t.slice(i) : t.slice(0, i) + c + t.slice(i + 1);
      });
    fc.assert(
      fc.property(fc.oneof(valid, mutated, fc.string({ maxLength: 30 })), (t) => {
        const micros = pgTimestampMicros(t);
        if (!matches(t)) expect(micros, t).toBeUndefined();
        else if (micros !== undefined) {
          const [, frac = ''] = /(?:\.(\d+))?Z$/.exec(t) ?? [];
          const whole = Date.parse(t.replace(/\.\d+Z$/, 'Z'));
          expect(micros, t).toBe((whole / 1000 - 946_684_800) * 1_000_000 + Number(frac.padEnd(6, '0')));
        }
      }),
      { numRuns: 20_000 },
    );
  });

  /** Both ways through the real writer, each in its own database (the same rows cannot be stored twice in one). */
  const writeBoth = async (items: IngestItem[]) => {
    const days = new Set(items.map((it) => dayKey(it.event.time)));
    await text.store.partitions.ensure(days);
    await binary.store.partitions.ensure(days);
    await text.store.db.transaction((tx) => writeBatch(tx, items, schemaV1Rules, { copy: true, binary: false }));
    await binary.store.db.transaction((tx) => writeBatch(tx, items, schemaV1Rules, { copy: true }));
  };

  const ROW = `SELECT id, (extract(epoch FROM time) * 1000000)::bigint::text AS us, session_id, seq::text, type, namespace,
    policy, identity, kind, decision, tables::text AS tables, array_ndims(tables) AS ndims, prev_hash, hash, event
    FROM audit_events ORDER BY session_id, seq`;

  it('stores the same rows as the text COPY, for ordinary and odd events, from text or bytes', async () => {
    const odd = ['public."t\tab"', 'x\\y', 'line\nbreak', '\\.', '{"a",b}', 'ünï 😀', 'NULL', ''];
    const sessions: AuditEvent[][] = [
      makeSession({ id: 'b-plain', statements: 30, denyEvery: 3 }),
      makeSession({ id: 'b-odd\\\t', namespace: 'ns\\\t', user: 'u\r\n\\N', statements: 4, tables: odd }),
      makeSession({ id: 'b-none', statements: 3, tables: [] }),
      makeSession({ id: 'b-1999', statements: 3, startMicros: Date.UTC(1999, 11, 31, 23, 59, 59) * 1000 + 998_500 }),
      makeSession({ id: 'b-1900', statements: 2, startMicros: Date.UTC(1900, 1, 28, 23, 59, 59) * 1000 + 999_000 }),
      makeSession({ id: 'b-ünï', policy: 'pölicy 😀', statements: 2 }),
    ];
    const asItems = (evs: AuditEvent[], bytes: boolean): IngestItem[] =>
      evs.map((e) => {
        const raw = sidecarJson(e);
        return { event: JSON.parse(raw), raw, utf8: bytes ? Buffer.from(raw) : undefined };
      });
    for (const [i, evs] of sessions.entries()) {
      const items = asItems(evs, i % 2 === 0);
      // Each of these batches goes binary: every row has a binary form.
      const probe = new BinaryCopyPayload(0);
      expect(items.every((it) => probe.row(it.event, it.raw, it.utf8))).toBe(true);
      probe.release();
      await writeBoth(items);
    }
    // A time only PostgreSQL may read sends its whole batch as text, and the rows still agree.
    const shifted = asItems(makeSession({ id: 'b-offset', statements: 2 }), true);
    shifted[1].event.time = '2026-11-30T14:00:00.001+02:00';
    await writeBoth(shifted);

    const a = await text.store.db.query<Record<string, unknown>>(ROW);
    const b = await binary.store.db.query<Record<string, unknown>>(ROW);
    expect(b.length).toBe(sessions.flat().length + shifted.length);
    expect(b).toEqual(a);
    expect(a.find((r) => r.session_id === 'b-none' && r.seq === '1')).toMatchObject({ tables: '{}', ndims: null });
    expect((await binary.store.verify(['b-plain', 'b-odd\\\t', 'b-1999']))[0]).toMatchObject({ ok: true });
  });
});
