import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { auditEventSchema } from '@pgwarden/policy';
import { Ajv } from 'ajv';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ROLES } from '../../../test/harness/postgres.js';
import { sha256Hex } from '../auth/token-file.js';
import { type Collector, startCollector } from '../collector.js';
import { buildExporter } from '../exports/export-config.js';
import type { FindingRow, Page } from '../store/queries.js';
import { makeHeads, makeSession } from '../testing/audit-events.js';
import { createTestDatabase } from '../testing/test-database.js';

/**
 * GET /api/v1/findings over real HTTP, a real collector and PostgreSQL: every chain finding in one list, including
 * chains deleted whole, which have no session record to open. Reads of it are audited like every read of the trail.
 */
describe('chain findings API', () => {
  const ADMIN = 'ada-admin-7f3c21';
  const TEAM_A = 'tom-team-a-91b0e4';
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
    db = await createTestDatabase(inject('pg'), ROLES.superuser);
    collector = await startCollector({
      store: { url: db.url },
      http: { port: 0 },
      logger: pino({ level: 'silent' }),
      read: { readersFile },
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
});
