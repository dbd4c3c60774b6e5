import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ROLES } from '../../../test/harness/postgres.js';
import { schemaV1Rules } from '../chain/chain-rules.js';
import { makeGapDeclaration, makeSession } from '../testing/audit-events.js';
import { createTestDatabase } from '../testing/test-database.js';
import { AuditStore } from './audit-store.js';
import { closeFinding } from './finding-close.js';
import { listFindings } from './queries.js';

/** A store to open, close and open again (a collector restart), on PostgreSQL or on PGlite in a data directory. */
interface Backend {
  open(): Promise<AuditStore>;
  drop(): Promise<void>;
}

const BACKENDS: Record<string, () => Promise<Backend>> = {
  postgres: async () => {
    const db = await createTestDatabase(inject('pg'), ROLES.superuser);
    return { open: () => AuditStore.open({ url: db.url, rules: schemaV1Rules }), drop: () => db.drop() };
  },
  pglite: async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgwarden-findings-pglite-'));
    return {
      open: () => AuditStore.open({ dataDir: dir, rules: schemaV1Rules }),
      drop: async () => rmSync(dir, { recursive: true, force: true }),
    };
  },
};

for (const [name, make] of Object.entries(BACKENDS)) {
  describe(`declared gaps and closed findings (${name})`, () => {
    let backend: Backend;
    let store: AuditStore;
    beforeAll(async () => {
      backend = await make();
      store = await backend.open();
    });
    afterAll(async () => {
      await store?.close();
      await backend?.drop();
    });

    const rows = (like: string) =>
      store.db.query<{ session_id: string; kind: string; seq_from: number; seq_to: number; open: boolean }>(
        `SELECT session_id, kind, seq_from::int, seq_to::int, resolved_at IS NULL AND closed_at IS NULL AS open
         FROM audit_chain_findings WHERE session_id LIKE $1 ORDER BY id`,
        [like],
      );

    it('a restarted sidecar declaring the same loss again: the same findings, reported once', async () => {
      // What the at-risk record carried: one range, and a list cut short (so an unattributed finding too). The
      // restarted sidecar has a new instance (and chain) in the same pod, and declares `until` at `since`.
      const loss = { pod: 'orders-7f9', sessions: [{ id: 'redeclared-s', fromSeq: 3, toSeq: 8 }], truncated: true };
      const first = await store.ingest([makeGapDeclaration({ instance: 'redeclared-run1', ...loss })]);
      expect(first.findings.map((f) => [f.kind, f.sessionId])).toEqual([
        ['audit.gap', 'redeclared-s'],
        ['audit.gap.unattributed', 'sidecar-redeclared-run1'],
      ]);
      const again = makeGapDeclaration({ instance: 'redeclared-run2', ...loss, until: '2026-11-30T12:39:00.000000Z' });
      expect((await store.ingest([again])).findings).toEqual([]);
      expect(await rows('%redeclared%')).toEqual([
        { session_id: 'redeclared-s', kind: 'audit.gap', seq_from: 3, seq_to: 8, open: true },
        {
          session_id: 'sidecar-redeclared-run1',
          kind: 'audit.gap.unattributed',
          seq_from: 1,
          seq_to: 1,
          open: true,
        },
      ]);
      // Not the same loss: another pod saying the same, or the same pod declaring more.
      const other = await store.ingest([
        makeGapDeclaration({ instance: 'redeclared-other', ...loss, pod: 'orders-x' }),
      ]);
      expect(other.findings.map((f) => f.sessionId)).toEqual(['sidecar-redeclared-other']);
      const more = await store.ingest([makeGapDeclaration({ instance: 'redeclared-run3', ...loss, dropped: 40 })]);
      expect(more.findings.map((f) => f.sessionId)).toEqual(['sidecar-redeclared-run3']);
      // No fingerprint of the declaration in what is reported (live stream, audit.finding events).
      expect(Object.keys(more.findings[0]).sort()).toEqual(['detail', 'kind', 'seqFrom', 'seqTo', 'sessionId']);
    });

    it('files the findings of audit.gap events stored without them, once, across restarts', async () => {
      const arrived = makeSession({ id: 'backfill-arrived', statements: 3 });
      await store.ingest(arrived);
      await store.ingest([
        makeGapDeclaration({
          instance: 'backfill-run1',
          pod: 'backfill-0',
          sessions: [
            { id: 'backfill-lost', fromSeq: 2, toSeq: 5 },
            { id: 'backfill-arrived', fromSeq: 2, toSeq: 3 },
          ],
          truncated: true,
        }),
      ]);
      // A store written by a collector that filed no findings for declarations.
      await store.db.query(`DELETE FROM audit_chain_findings WHERE session_id LIKE '%backfill%'`);
      const filed = await store.fileStoredDeclarations();
      expect(filed.map((f) => [f.kind, f.sessionId, f.seqFrom, f.seqTo])).toEqual([
        ['audit.gap', 'backfill-lost', 2, 5],
        ['audit.gap.unattributed', 'sidecar-backfill-run1', 1, 1],
      ]);
      expect(await store.fileStoredDeclarations()).toEqual([]);
      await store.close();
      store = await backend.open();
      expect(await store.fileStoredDeclarations()).toEqual([]);
      expect((await rows('%backfill%')).map((r) => r.session_id)).toEqual(['backfill-lost', 'sidecar-backfill-run1']);

      // An unattributed finding filed before findings carried their declaration gets it: a restarted sidecar's
      // re-declaration of that loss is then no new finding either.
      await store.db.query(`UPDATE audit_chain_findings SET declaration = NULL WHERE session_id LIKE '%backfill%'`);
      expect(await store.fileStoredDeclarations()).toEqual([]);
      const redeclared = makeGapDeclaration({
        instance: 'backfill-run2',
        pod: 'backfill-0',
        sessions: [
          { id: 'backfill-lost', fromSeq: 2, toSeq: 5 },
          { id: 'backfill-arrived', fromSeq: 2, toSeq: 3 },
        ],
        truncated: true,
      });
      expect((await store.ingest([redeclared])).findings).toEqual([]);
      expect(await rows('%backfill%')).toHaveLength(2);
    });

    it('closes an open finding once, with who and why; it stays closed and is not raised again', async () => {
      const declared = { pod: 'closing-0', sessions: [{ id: 'closing-s', fromSeq: 3, toSeq: 8 }] };
      await store.ingest([makeGapDeclaration({ instance: 'closing-run1', ...declared })]);
      const [open] = (await listFindings(store.db, { session: 'closing-s', limit: 10 })).items;
      expect(open).toMatchObject({ kind: 'audit.gap', seqFrom: 3, seqTo: 8, closed: null });
      const everyone = () => true;
      const by = { name: 'cleo', oidc: { issuer: 'https://idp.example', subject: 'u-42' } };
      expect(
        await closeFinding(store.db, open.id, by, 'node disk replaced; lost events accepted', () => false),
      ).toEqual({
        refused: 'not_found',
      });
      const outcome = await closeFinding(store.db, open.id, by, 'node disk replaced; lost events accepted', everyone);
      const closed = {
        at: expect.stringMatching(/Z$/),
        by: 'cleo',
        reason: 'node disk replaced; lost events accepted',
      };
      expect(outcome).toEqual({ closed: { ...open, closed: { ...closed, oidc: by.oidc } } });
      expect(await closeFinding(store.db, open.id, { name: 'dan' }, 'again', everyone)).toMatchObject({
        refused: 'already_closed',
        finding: { closed: { by: 'cleo' } },
      });
      expect(await closeFinding(store.db, 999_999, { name: 'dan' }, 'none', everyone)).toEqual({
        refused: 'not_found',
      });
      expect((await listFindings(store.db, { session: 'closing-s', limit: 10 })).items).toEqual([]);
      expect((await listFindings(store.db, { state: 'closed', session: 'closing-s', limit: 10 })).items).toEqual([
        { ...open, closed: { ...closed, oidc: by.oidc } },
      ]);

      // Part of the events arrive, the sidecar declares the rest again after a restart: what is closed stays closed,
      // and what it covers is no new finding.
      await store.ingest(makeSession({ id: 'closing-s', statements: 6 }).slice(0, 5));
      expect((await store.ingest([makeGapDeclaration({ instance: 'closing-run2', ...declared })])).findings).toEqual(
        [],
      );
      expect(await rows('closing-s')).toEqual([
        { session_id: 'closing-s', kind: 'audit.gap', seq_from: 3, seq_to: 8, open: false },
      ]);
      const [after] = (await listFindings(store.db, { state: 'all', session: 'closing-s', limit: 10 })).items;
      expect(after).toMatchObject({ resolvedAt: null, closed: { by: 'cleo' } });

      // A resolved finding has nothing left to close.
      await store.ingest([
        makeGapDeclaration({ instance: 'closing-run3', sessions: [{ id: 'healed-s', fromSeq: 2, toSeq: 3 }] }),
      ]);
      await store.ingest(makeSession({ id: 'healed-s', statements: 3 }));
      const [healed] = (await listFindings(store.db, { state: 'resolved', session: 'healed-s', limit: 10 })).items;
      expect(await closeFinding(store.db, healed.id, { name: 'dan' }, 'late', everyone)).toMatchObject({
        refused: 'resolved',
      });
    });
  });
}
