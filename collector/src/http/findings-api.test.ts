import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { auditEventSchema } from '@pgwarden/policy';
import { Ajv } from 'ajv';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ROLES } from '../../../test/harness/postgres.js';
import { sha256Hex } from '../auth/token-file.js';
import { type Collector, startCollector } from '../collector.js';
import { buildExporter } from '../exports/export-config.js';
import type { FindingRow, Page } from '../store/queries.js';
import { makeGapDeclaration, makeHeads, makeSession } from '../testing/audit-events.js';
import { createTestDatabase } from '../testing/test-database.js';

/**
 * GET /api/v1/findings over real HTTP, a real collector and PostgreSQL: every chain finding in one list, including
 * chains deleted whole, which have no session record to open. Reads of it are audited like every read of the trail.
 */
describe('chain findings API', () => {
  const ADMIN = 'ada-admin-7f3c21';
  const TEAM_A = 'tom-team-a-91b0e4';
  const APPROVER = 'cleo-approver-5d2e80';
  const APPROVER_A = 'ted-approver-a-0c4b19';
  let dir: string;
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let collector: Collector;
  const get = async (path: string, token = ADMIN) => {
    const r = await fetch(collector.url + path, { headers: { authorization: `Bearer ${token}` } });
    return { status: r.status, body: (await r.json()) as Page<FindingRow> & { error?: { code: string } } };
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'pgwarden-findings-'));
    const readersFile = join(dir, 'readers.yaml');
    writeFileSync(
      readersFile,
      `- {name: ada, tokenSha256: ${sha256Hex(ADMIN)}}\n- {name: tom, tokenSha256: ${sha256Hex(TEAM_A)}, namespaces: [team-a]}\n`,
    );
    const approversFile = join(dir, 'approvers.yaml');
    writeFileSync(
      approversFile,
      `- {name: cleo, groups: [], tokenSha256: ${sha256Hex(APPROVER)}}\n` +
        `- {name: ted, groups: [], tokenSha256: ${sha256Hex(APPROVER_A)}, namespaces: [team-a]}\n`,
    );
    db = await createTestDatabase(inject('pg'), ROLES.superuser);
    collector = await startCollector({
      store: { url: db.url },
      http: { port: 0 },
      logger: pino({ level: 'silent' }),
      read: { readersFile },
      approvals: { approversFile },
      readAudit: { repeatWindowMs: 0 },
      gapGraceMs: 0,
      exporters: [buildExporter({ type: 'jsonl', name: 'siem', path: join(dir, 'siem.jsonl'), format: 'ocsf' })],
    });
    // team-a: a session whose tail never arrived, and a chain that never arrived at all (named by its sidecar's
    // heads); team-b: a session with a hole in its middle.
    const cut = makeSession({ id: 'fa-cut', statements: 3, namespace: 'team-a', instance: 'side-a' });
    const gone = makeSession({ id: 'fa-gone', statements: 1, namespace: 'team-a', instance: 'side-a' });
    const holed = makeSession({ id: 'fb-holed', statements: 3, namespace: 'team-b', instance: 'side-b' });
    const events = [
      ...cut.slice(0, 2),
      ...holed.filter((e) => e.session.seq !== 3),
      ...makeHeads('side-a', [[cut, gone]], { namespace: 'team-a' }),
    ];
    for (const e of events) expect(await collector.ingest(e)).toBe('stored');
    // The periodic sweep (every second with no grace) turns them into findings.
    const until = Date.now() + 15_000;
    while ((await get('/api/v1/findings')).body.items?.length !== 3 && Date.now() < until)
      await new Promise((r) => setTimeout(r, 200));
  });
  afterAll(async () => {
    await collector?.stop();
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('lists every open finding, newest first, with the namespace of the session or of the sidecar that named it', async () => {
    const { status, body } = await get('/api/v1/findings');
    expect(status).toBe(200);
    const bySession = new Map(body.items.map((f) => [f.sessionId, f]));
    expect([...bySession.keys()].sort()).toEqual(['fa-cut', 'fa-gone', 'fb-holed']);
    expect(bySession.get('fa-cut')).toMatchObject({
      kind: 'audit.gap',
      namespace: 'team-a',
      sessionKnown: true,
      seqFrom: 3,
      seqTo: 5,
      resolvedAt: null,
    });
    expect(bySession.get('fa-gone')).toMatchObject({ namespace: 'team-a', sessionKnown: false, seqFrom: 1, seqTo: 3 });
    expect(bySession.get('fa-gone')?.detail).toMatch(/^the whole chain is missing/);
    expect(bySession.get('fb-holed')).toMatchObject({ namespace: 'team-b', seqFrom: 3, seqTo: 3 });
    expect(body.items.map((f) => f.id)).toEqual([...body.items.map((f) => f.id)].sort((a, b) => b - a));
  });

  it('filters by kind, session and namespace, pages with a cursor, and limits a scoped reader to its namespaces', async () => {
    expect((await get('/api/v1/findings?kind=audit.tampered')).body.items).toEqual([]);
    expect((await get('/api/v1/findings?session=fb-holed')).body.items.map((f) => f.sessionId)).toEqual(['fb-holed']);
    expect((await get('/api/v1/findings?namespace=team-b')).body.items.map((f) => f.sessionId)).toEqual(['fb-holed']);
    const first = await get('/api/v1/findings?limit=2');
    expect(first.body.items).toHaveLength(2);
    const rest = await get(`/api/v1/findings?limit=2&cursor=${first.body.next}`);
    expect(rest.body).toMatchObject({ next: null });
    expect([...first.body.items, ...rest.body.items].map((f) => f.sessionId).sort()).toEqual([
      'fa-cut',
      'fa-gone',
      'fb-holed',
    ]);
    const scoped = await get('/api/v1/findings', TEAM_A);
    expect(scoped.body.items.map((f) => f.sessionId).sort()).toEqual(['fa-cut', 'fa-gone']);
    expect((await get('/api/v1/findings?namespace=team-b', TEAM_A)).body.items).toEqual([]);
    expect((await get('/api/v1/findings?state=later')).status).toBe(400);
    expect((await get('/api/v1/findings', 'not-a-token')).status).toBe(401);
  });

  it('moves a finding to resolved when the missing events arrive', async () => {
    const holed = makeSession({ id: 'fb-holed', statements: 3, namespace: 'team-b', instance: 'side-b' });
    expect(await collector.ingest(holed[2])).toBe('stored');
    expect((await get('/api/v1/findings?session=fb-holed')).body.items).toEqual([]);
    const resolved = (await get('/api/v1/findings?state=resolved')).body.items;
    expect(resolved.map((f) => f.sessionId)).toEqual(['fb-holed']);
    expect(resolved[0].resolvedAt).not.toBeNull();
    expect((await get('/api/v1/findings?state=all')).body.items).toHaveLength(3);
  });

  it('records each read of the findings as an audit.read event', async () => {
    await get('/api/v1/findings?kind=audit.gap&limit=7', TEAM_A);
    const reads = await collector.store.db.query<{ event: string }>(
      "SELECT event FROM audit_events WHERE type = 'audit.read' ORDER BY ingest_seq DESC LIMIT 20",
    );
    const found = reads.map((r) => JSON.parse(r.event).read).find((r) => r.query?.limit === '7');
    expect(found).toMatchObject({
      reader: 'tom',
      route: '/api/v1/findings',
      query: { kind: 'audit.gap', limit: '7' },
      namespaces: ['team-a'],
      status: 200,
      items: 2,
    });
  });

  it('records each finding as an audit.finding event in its own chain, which the exports carry to the SIEM', async () => {
    const rows = await collector.store.db.query<{ event: string }>(
      "SELECT event FROM audit_events WHERE type = 'audit.finding' ORDER BY ingest_seq",
    );
    const events = rows.map((r) => JSON.parse(r.event));
    const validate = new Ajv({ allErrors: true }).compile(auditEventSchema);
    for (const e of events) expect(validate(e), JSON.stringify(validate.errors)).toBe(true);
    expect(events.map((e) => [e.finding.session, e.finding.kind, e.finding.seqFrom, e.finding.seqTo]).sort()).toEqual([
      ['fa-cut', 'audit.gap', 3, 5],
      ['fa-gone', 'audit.gap', 1, 3],
      ['fb-holed', 'audit.gap', 3, 3],
    ]);
    expect(new Set(events.map((e) => e.session.id)).size).toBe(1);
    expect(events[0].session.id).toMatch(/^collector-/);
    // The OCSF export: a failed, high-severity record naming the session and what is missing.
    const siem = join(dir, 'siem.jsonl');
    const by = Date.now() + 15_000;
    const exported = () =>
      existsSync(siem)
        ? readFileSync(siem, 'utf8')
            .trim()
            .split('\n')
            .map((l) => JSON.parse(l))
            .filter((r) => r.activity_name === 'audit.finding')
        : [];
    while (exported().length < 3 && Date.now() < by) await new Promise((r) => setTimeout(r, 200));
    const gone = exported().find((r) => r.unmapped.finding.session === 'fa-gone');
    expect(gone).toMatchObject({
      severity_id: 4,
      status_id: 2,
      status_code: 'audit.gap',
      status_detail: expect.stringMatching(/^session fa-gone: the whole chain is missing/),
    });
  });
  it('lets an approver close an open finding with a reason, once; the listing shows who closed it, the trail the act', async () => {
    const close = async (id: number | string, body: unknown, token = APPROVER, method = 'POST') => {
      const r = await fetch(`${collector.url}/api/v1/findings/${id}/close`, {
        method,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        ...(method === 'POST' ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
      });
      return { status: r.status, body: (await r.json()) as { finding?: FindingRow; error?: { code: string } } };
    };
    const open = (await get('/api/v1/findings')).body.items;
    const gone = open.find((f) => f.sessionId === 'fa-gone') as FindingRow;
    const reason = 'fa-gone was a test pod deleted with its volume; nothing to recover';
    // Readers read, approvers act: a reader's token is no approver's.
    expect(await close(gone.id, { reason }, ADMIN)).toMatchObject({
      status: 401,
      body: { error: { code: 'unauthorized' } },
    });
    expect(await close(gone.id, {})).toMatchObject({ status: 400, body: { error: { code: 'bad_reason' } } });
    expect(await close(gone.id, { reason: '  ' })).toMatchObject({
      status: 400,
      body: { error: { code: 'bad_reason' } },
    });
    expect(await close(gone.id, 'not json')).toMatchObject({ status: 400, body: { error: { code: 'bad_json' } } });
    expect(await close(987_654, { reason })).toMatchObject({ status: 404, body: { error: { code: 'not_found' } } });
    expect(await close('x1', { reason })).toMatchObject({ status: 404, body: { error: { code: 'not_found' } } });
    expect(await close(gone.id, undefined, APPROVER, 'GET')).toMatchObject({ status: 405 });
    // A scoped approver closes their namespaces' findings only; others' do not exist for them.
    const holed = (await get('/api/v1/findings?state=all&session=fb-holed')).body.items[0];
    expect(await close(holed.id, { reason }, APPROVER_A)).toMatchObject({ status: 404 });
    // fb-holed's events arrived (the test before): nothing is left to close.
    expect(await close(holed.id, { reason })).toMatchObject({
      status: 409,
      body: { error: { code: 'finding_resolved' } },
    });

    const done = await close(gone.id, { reason }, APPROVER_A);
    expect(done.status).toBe(200);
    expect(done.body.finding).toEqual({ ...gone, closed: { at: expect.stringMatching(/Z$/), by: 'ted', reason } });
    expect(await close(gone.id, { reason: 'again' })).toMatchObject({
      status: 409,
      body: { error: { code: 'already_closed' } },
    });
    expect((await get('/api/v1/findings')).body.items.map((f) => f.sessionId)).toEqual(['fa-cut']);
    expect((await get('/api/v1/findings?state=closed')).body.items).toEqual([done.body.finding]);
    const all = (await get('/api/v1/findings?state=all')).body.items;
    expect(all.find((f) => f.id === gone.id)?.closed).toMatchObject({ by: 'ted', reason });

    // Each attempt is in the collector's chain as who asked for what and the answer, as every control action is.
    const reads = await collector.store.db.query<{ event: string }>(
      "SELECT event FROM audit_events WHERE type = 'audit.read' ORDER BY ingest_seq",
    );
    const attempts = reads
      .map((r) => JSON.parse(r.event).read)
      .filter((r) => r.route === `/api/v1/findings/${gone.id}/close`);
    expect(attempts.map((r) => [r.reader, r.status])).toEqual([
      ['unknown', 401],
      ['cleo', 400],
      ['cleo', 400],
      ['cleo', 400],
      // The method is refused before anyone is recognised, as on the control routes.
      ['unknown', 405],
      ['ted', 200],
      ['cleo', 409],
    ]);
    expect(attempts[5]).toMatchObject({ namespaces: ['team-a'], items: 1 });
    // Why, too, wherever the request got as far as an accepted reason: the close and the refused second one.
    expect(attempts.map((r) => r.reason)).toEqual([
      undefined,
      undefined,
      undefined,
      undefined,
      undefined,
      reason,
      'again',
    ]);

    // The reason is covered by the collector's chain: altered in the store, verification calls it tampered.
    const session = collector.readAuditSession as string;
    const [closing] = await collector.store.db.query<{ id: string; seq: number; event: string }>(
      "SELECT id, seq, event FROM audit_events WHERE session_id = $1 AND type = 'audit.read' AND event::jsonb #>> '{read,status}' = '200' AND event::jsonb #>> '{read,route}' = $2",
      [session, `/api/v1/findings/${gone.id}/close`],
    );
    const validate = new Ajv({ allErrors: true }).compile(auditEventSchema);
    expect(validate(JSON.parse(closing.event)), JSON.stringify(validate.errors)).toBe(true);
    expect((await collector.store.verify([session]))[0]).toMatchObject({ ok: true });
    await collector.store.db.query(
      `UPDATE audit_events SET event = jsonb_set(event::jsonb, '{read,reason}', '"closed by mistake"')::text WHERE id = $1`,
      [closing.id],
    );
    expect((await collector.store.verify([session]))[0].findings).toEqual([
      expect.objectContaining({ kind: 'audit.tampered', seqFrom: Number(closing.seq) }),
    ]);
  });
});

describe('findings of audit.gap events stored without them', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  beforeAll(async () => {
    db = await createTestDatabase(inject('pg'), ROLES.superuser);
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('are filed when the collector starts, and reported, once however often it restarts', async () => {
    const start = () =>
      startCollector({
        store: { url: db.url },
        http: { port: 0 },
        logger: pino({ level: 'silent' }),
        readAudit: { repeatWindowMs: 0 },
      });
    const findingEvents = async () => {
      const sql = new pg.Client({ connectionString: db.url });
      await sql.connect();
      try {
        const { rows } = await sql.query(
          "SELECT count(*)::int AS n FROM audit_events WHERE type = 'audit.finding' AND event LIKE '%boot-lost%'",
        );
        return rows[0].n as number;
      } finally {
        await sql.end();
      }
    };
    let c = await start();
    const gap = makeGapDeclaration({
      instance: 'boot-run1',
      pod: 'boot-0',
      sessions: [{ id: 'boot-lost', fromSeq: 2, toSeq: 4 }],
      truncated: true,
    });
    expect(await c.ingest(gap)).toBe('stored');
    // As a collector that did not file declarations left its store.
    await c.store.db.query('DELETE FROM audit_chain_findings');
    await c.stop();
    expect(await findingEvents()).toBe(1);
    for (const round of [1, 2]) {
      c = await start();
      try {
        const page = (await (await fetch(`${c.url}/api/v1/findings`)).json()) as Page<FindingRow>;
        expect(page.items.map((f) => [f.kind, f.sessionId]).sort(), `start ${round}`).toEqual([
          ['audit.gap', 'boot-lost'],
          ['audit.gap.unattributed', 'sidecar-boot-run1'],
        ]);
      } finally {
        await c.stop();
      }
      // Filed (and so reported as an audit.finding) at the first start only.
      expect(await findingEvents(), `start ${round}`).toBe(2);
    }
  }, 60_000);
});
