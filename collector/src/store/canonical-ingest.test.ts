import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ROLES } from '../../../test/harness/postgres.js';
import { schemaV1Rules } from '../chain/chain-rules.js';
import { makeSession, sidecarJson } from '../testing/audit-events.js';
import { createTestDatabase } from '../testing/test-database.js';
import { AuditStore } from './audit-store.js';

/**
 * Events arriving as the sidecar's canonical text are hashed from that text (chain/canonical-text.ts); the
 * verdicts must be exactly those of re-encoding, both at ingest and in a full re-verification.
 */
describe('ingest of canonical sidecar text', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let store: AuditStore;

  beforeAll(async () => {
    db = await createTestDatabase(inject('pg'), ROLES.superuser);
    store = await AuditStore.open({ url: db.url, rules: schemaV1Rules });
  });
  afterAll(async () => {
    await store?.close();
    await db?.drop();
  });

  const asReceived = (raw: string) => ({ event: JSON.parse(raw), raw });

  it('verifies intact sessions and catches an altered event whose hash was kept', async () => {
    const intact = makeSession({ id: 'ct-intact', statements: 30, denyEvery: 4 }).map((e) =>
      asReceived(sidecarJson(e)),
    );
    const forged = makeSession({ id: 'ct-forged', statements: 5 }).map((e) => sidecarJson(e));
    // Still canonical text, so the fast path hashes it: the content no longer matches the carried hash.
    forged[3] = forged[3].replace('WHERE id = 2', 'WHERE id = 9');
    const r = await store.ingest([...intact, ...forged.map(asReceived)]);
    expect(r.inserted).toHaveLength(32 + 7);
    expect(r.findings).toEqual([
      expect.objectContaining({ kind: 'audit.tampered', sessionId: 'ct-forged', seqFrom: 4, seqTo: 4 }),
    ]);
    const reports = await store.verify(['ct-intact', 'ct-forged']);
    expect(reports.find((x) => x.sessionId === 'ct-intact')).toMatchObject({ ok: true, events: 32 });
    expect(reports.find((x) => x.sessionId === 'ct-forged')?.findings).toEqual([
      expect.objectContaining({ kind: 'audit.tampered', seqFrom: 4 }),
    ]);
  });

  it('takes the re-encoding path for text that is not canonical, with the same verdict', async () => {
    const evs = makeSession({ id: 'ct-pretty', statements: 3 });
    const r = await store.ingest(evs.map((e) => asReceived(JSON.stringify(e, null, 1))));
    expect(r.findings).toEqual([]);
    expect((await store.verify(['ct-pretty']))[0]).toMatchObject({ ok: true, events: 5 });
  });
});
