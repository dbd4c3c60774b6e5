import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { makeSession, sidecarJson } from '../testing/audit-events.js';
import { useTestStore } from '../testing/test-store.js';

/**
 * Events arriving as the sidecar's canonical text are hashed from that text (chain/canonical-text.ts); the
 * verdicts must be exactly those of re-encoding, both at ingest and in a full re-verification.
 */
describe('ingest of canonical sidecar text', () => {
  const t = useTestStore();

  it.each([
    ['text', false],
    ['UTF-8 bytes', true],
  ])('verifies intact sessions and catches an altered event whose hash was kept (%s)', async (how, bytes) => {
    const asReceived = (raw: string) =>
      bytes ? { event: JSON.parse(raw), raw, utf8: Buffer.from(raw) } : { event: JSON.parse(raw), raw };
    const [intactId, forgedId, relinkedId] = ['ct-intact', 'ct-forged', 'ct-relinked'].map((x) => `${x}-${how}`);
    const intact = makeSession({ id: intactId, statements: 30, denyEvery: 4 }).map((e) => asReceived(sidecarJson(e)));
    const forged = makeSession({ id: forgedId, statements: 5 }).map((e) => sidecarJson(e));
    // Still canonical text, so the fast path hashes it: the content no longer matches the carried hash.
    forged[3] = forged[3].replace('WHERE id = 2', 'WHERE id = 9');
    // A forger who rehashes altered text that is not canonical (a space added): the carried hash matches those
    // bytes, but not the event's canonical encoding (whitespace between tokens), so it is the altered event that is flagged, as re-encoding does.
    const relinked = makeSession({ id: relinkedId, statements: 5 }).map((e) => sidecarJson(e));
    const body = relinked[3]
      .slice(0, relinked[3].lastIndexOf(',"hash":'))
      .replace('"kind":"select"', '"kind": "delete"');
    relinked[3] = `${body},"hash":"${createHash('sha256').update(`${body}}`).digest('hex')}"}`;
    const r = await t.store.ingest([...intact, ...forged.map(asReceived), ...relinked.map(asReceived)]);
    expect(r.inserted).toHaveLength(32 + 7 + 7);
    expect(r.findings).toEqual([
      expect.objectContaining({ kind: 'audit.tampered', sessionId: forgedId, seqFrom: 4, seqTo: 4 }),
      expect.objectContaining({ kind: 'audit.tampered', sessionId: relinkedId, seqFrom: 4, seqTo: 4 }),
      expect.objectContaining({ kind: 'audit.tampered', sessionId: relinkedId, seqFrom: 5, seqTo: 5 }),
    ]);
    const reports = await t.store.verify([intactId, forgedId, relinkedId]);
    expect(reports.find((x) => x.sessionId === intactId)).toMatchObject({ ok: true, events: 32 });
    expect(reports.find((x) => x.sessionId === forgedId)?.findings).toEqual([
      expect.objectContaining({ kind: 'audit.tampered', seqFrom: 4 }),
    ]);
    expect(reports.find((x) => x.sessionId === relinkedId)?.findings.map((f) => f.seqFrom)).toEqual([4, 5]);
  });

  it('takes the re-encoding path for text that is not canonical, with the same verdict', async () => {
    const evs = makeSession({ id: 'ct-pretty', statements: 3 });
    const r = await t.store.ingest(
      evs.map((e) => {
        const raw = JSON.stringify(e, null, 1);
        return { event: JSON.parse(raw), raw, utf8: Buffer.from(raw) };
      }),
    );
    expect(r.findings).toEqual([]);
    expect((await t.store.verify(['ct-pretty']))[0]).toMatchObject({ ok: true, events: 5 });
  });
});
