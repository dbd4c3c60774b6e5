import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { auditSubject } from '@pgwarden/policy';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startNats, type TestNats } from '../../test/harness/index.js';
import { ROLES } from '../../test/harness/postgres.js';
import { type Collector, startCollector } from './collector.js';
import { jsonlFileExporter } from './exports/jsonl-file.js';
import { makeSession } from './testing/audit-events.js';
import { createTestDatabase } from './testing/test-database.js';

async function getJson(url: string): Promise<{ status: number; body: any }> {
  const r = await fetch(url);
  return { status: r.status, body: await r.json() };
}

/** Reads server-sent events until `count` `audit` messages arrived. */
function readSse(url: string, count: number): Promise<{ id: string; data: any }[]> {
  return new Promise((resolve, reject) => {
    const got: { id: string; data: any }[] = [];
    const req = request(url, (res) => {
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        let i = buf.indexOf('\n\n');
        while (i !== -1) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const fields = Object.fromEntries(
            block
              .split('\n')
              .filter((l) => !l.startsWith(':'))
              .map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 2)]),
          );
          if (fields.event === 'audit') got.push({ id: fields.id, data: JSON.parse(fields.data) });
          if (got.length >= count) {
            req.destroy();
            resolve(got);
            return;
          }
          i = buf.indexOf('\n\n');
        }
      });
    });
    req.on('error', (e) => (got.length >= count ? undefined : reject(e)));
    req.end();
  });
}

const waitFor = async (check: () => Promise<boolean>, ms = 15_000) => {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
};

describe('collector over NATS JetStream into PostgreSQL', () => {
  const exportFile = join(mkdtempSync(join(tmpdir(), 'pgwarden-collector-export-')), 'audit.jsonl');
  let nats: TestNats;
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let collector: Collector;

  beforeAll(async () => {
    nats = await startNats();
    db = await createTestDatabase(inject('pg'), ROLES.superuser);
    collector = await startCollector({
      nats: { url: nats.url },
      store: { url: db.url },
      http: { port: 0 },
      logger: pino({ level: 'silent' }),
      gapGraceMs: 60_000,
      exporters: [jsonlFileExporter({ path: exportFile })],
    });
  });
  afterAll(async () => {
    await collector?.stop();
    await db?.drop();
    await nats?.stop();
  });

  it('consumes the stream it created, deduplicates republished messages, and serves sessions, events and live tail', async () => {
    const sse = readSse(`${collector.url}/api/v1/stream?decision=deny`, 2);
    // The tail is live only: wait until the collector counts the client before publishing.
    await waitFor(async () =>
      /pgwarden_collector_stream_clients 1/.test(await (await fetch(`${collector.url}/metrics`)).text()),
    );
    // Ready means the collector created the stream and its consumer: publishing earlier finds no responders.
    await waitFor(async () => (await getJson(`${collector.url}/readyz`)).body.checks?.nats === true);
    const nc = await connect({ servers: nats.url });
    const js = jetstream(nc);
    const a = makeSession({ id: 'sess-a', statements: 10, denyEvery: 5 });
    const b = makeSession({ id: 'sess-b', statements: 3, namespace: 'other', user: 'carol' });
    for (const e of [...a, ...b]) await js.publish(auditSubject(e), JSON.stringify(e), { msgID: e.id });
    // Same msgIDs again within the duplicate window: JetStream drops them; a raw publish without msgID gets through
    // and the collector's id check must drop it.
    for (const e of a.slice(0, 3)) await js.publish(auditSubject(e), JSON.stringify(e), { msgID: e.id });
    await js.publish(auditSubject(a[0]), JSON.stringify(a[0]));
    await waitFor(async () => (await getJson(`${collector.url}/api/v1/sessions?limit=10`)).body.items.length === 2);
    await waitFor(async () => (await getJson(`${collector.url}/api/v1/sessions/sess-a`)).body.events?.length === 12);

    const live = await sse;
    expect(live.map((x) => x.id)).toEqual(['sess-a.6', 'sess-a.11']);
    expect(live[0].data.decision.action).toBe('deny');

    const sa = await getJson(`${collector.url}/api/v1/sessions/sess-a`);
    expect(sa.body.session).toMatchObject({
      id: 'sess-a',
      events: 12,
      statements: 10,
      denied: 2,
      chain: 'ok',
      ended: true,
    });
    expect(sa.body.events.map((e: any) => e.session.seq)).toEqual([...Array(12).keys()].map((i) => i + 1));
    expect(sa.body.findings).toEqual([]);

    const filtered = await getJson(`${collector.url}/api/v1/sessions?namespace=other&identity=carol`);
    expect(filtered.body.items.map((s: any) => s.id)).toEqual(['sess-b']);
    const ev = await getJson(`${collector.url}/api/v1/events?table=public.orders&kind=delete&decision=deny`);
    expect(ev.body.items.map((e: any) => e.id).sort()).toEqual(['sess-a.11', 'sess-a.6']);

    // The raw republish was the last message sent, so it may still be in flight when sess-a is complete.
    await waitFor(async () =>
      /pgwarden_collector_events_duplicate_total 1/.test(await (await fetch(`${collector.url}/metrics`)).text()),
    );
    const metrics = await (await fetch(`${collector.url}/metrics`)).text();
    expect(metrics).toMatch(/pgwarden_collector_events_ingested_total\{type="statement"\} 13/);
    expect(metrics).toMatch(/pgwarden_collector_events_duplicate_total 1/);
    expect((await getJson(`${collector.url}/readyz`)).body.checks).toEqual({ store: true, nats: true });

    // The configured exporter was fed from the store as events arrived.
    await waitFor(
      async () => existsSync(exportFile) && readFileSync(exportFile, 'utf8').trim().split('\n').length === 17,
    );
    expect(
      new Set(
        readFileSync(exportFile, 'utf8')
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l).id),
      ).size,
    ).toBe(17);
    const v = await fetch(`${collector.url}/api/v1/verify`, { method: 'POST', body: '{}' });
    expect(await v.json()).toMatchObject({ ok: true, sessions: 2, failed: [] });
    await nc.close();
  });

  it('serves every path docs/api/openapi.yaml documents (and the document lists exactly the API routes)', async () => {
    const { readFileSync } = await import('node:fs');
    const { parse } = await import('yaml');
    const doc = parse(readFileSync(new URL('../../docs/api/openapi.yaml', import.meta.url), 'utf8')) as {
      paths: Record<string, Record<string, unknown>>;
    };
    const documented = Object.entries(doc.paths).flatMap(([p, ops]) =>
      Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`),
    );
    expect(documented.sort()).toEqual(
      [
        'GET /',
        'GET /api/v1/sessions',
        'GET /api/v1/sessions/{id}',
        'GET /api/v1/events',
        'GET /api/v1/findings',
        'POST /api/v1/findings/{id}/close',
        'GET /api/v1/approvals',
        'GET /api/v1/approvals/{id}',
        'POST /api/v1/approvals/{id}',
        'POST /api/v1/approvals/{id}/revoke',
        'POST /api/v1/sessions/{id}/terminate',
        'POST /api/v1/policies/{namespace}/{name}/{action}',
        'GET /api/v1/suspensions',
        'GET /api/v1/control/{id}',
        'GET /api/v1/stream',
        'POST /api/v1/verify',
        'POST /api/v1/ingest',
        'GET /healthz',
        'GET /readyz',
        'GET /metrics',
      ].sort(),
    );
    for (const route of documented) {
      const [method, path] = route.split(' ');
      if (path === '/api/v1/stream') continue; // endless; covered by the live-tail test
      const concrete = path
        .replace('{id}', 'sess-a')
        .replace('{namespace}/{name}/{action}', 'agents/analytics-agent/suspend');
      const r = await fetch(`${collector.url}${concrete}`, {
        method,
        body: method === 'POST' ? '{}' : undefined,
      });
      const body = await r.text();
      // Ingest is disabled on this collector (404 ingest_disabled), but the route exists.
      expect(body, route).not.toContain('no route');
    }
    const ui = await (await fetch(`${collector.url}/`)).text();
    expect(ui).toContain('<title>pgwarden collector</title>');
  });

  it('answers bad requests with a 4xx and a reason, and keeps serving', async () => {
    expect((await getJson(`${collector.url}/api/v1/sessions?limit=0`)).status).toBe(400);
    expect((await getJson(`${collector.url}/api/v1/sessions?from=yesterday`)).body.error.code).toBe('bad_time');
    expect((await getJson(`${collector.url}/api/v1/sessions?cursor=!!!`)).body.error.code).toBe('bad_cursor');
    expect((await getJson(`${collector.url}/api/v1/sessions/nope`)).status).toBe(404);
    // No NATS-less fallback on this collector: ingest is off unless asked for.
    expect((await fetch(`${collector.url}/api/v1/ingest`, { method: 'POST', body: '{}' })).status).toBe(404);
    expect((await getJson(`${collector.url}/healthz`)).body).toEqual({ status: 'ok' });
  });

  it('resumes from its durable consumer after a restart without losing or duplicating events', async () => {
    await collector.stop();
    const nc = await connect({ servers: nats.url });
    const js = jetstream(nc);
    const c = makeSession({ id: 'sess-c', statements: 20 });
    for (const e of c) await js.publish(auditSubject(e), JSON.stringify(e), { msgID: e.id });
    await nc.close();
    collector = await startCollector({
      nats: { url: nats.url },
      store: { url: db.url },
      http: { port: 0 },
      logger: pino({ level: 'silent' }),
    });
    await waitFor(async () => (await getJson(`${collector.url}/api/v1/sessions/sess-c`)).body.session?.events === 22);
    const n = await collector.store.db.query<{ n: number; d: number }>(
      'SELECT count(*)::int AS n, count(DISTINCT id)::int AS d FROM audit_events',
    );
    expect(n[0]).toEqual({ n: 12 + 5 + 22, d: 12 + 5 + 22 });
    expect((await collector.verify()).every((r) => r.ok)).toBe(true);
  });
});

describe('collector started before NATS is up', () => {
  it('serves its API, reports not ready, and consumes once nats-server starts', async () => {
    const nats = await startNats();
    await nats.kill();
    const db = await createTestDatabase(inject('pg'), ROLES.superuser);
    const c = await startCollector({
      nats: { url: nats.url },
      store: { url: db.url },
      http: { port: 0 },
      logger: pino({ level: 'silent' }),
    });
    try {
      const r = await fetch(`${c.url}/readyz`);
      expect(r.status).toBe(503);
      expect((await r.json()).checks).toEqual({ store: true, nats: false });
      await nats.start();
      await waitFor(async () => (await fetch(`${c.url}/readyz`)).status === 200, 30_000);
      const nc = await connect({ servers: nats.url });
      const js = jetstream(nc);
      const ev = makeSession({ id: 'late-nats', statements: 2 });
      // The collector created the stream once it connected; publishing needs it to exist.
      await waitFor(async () => {
        try {
          await js.publish(auditSubject(ev[0]), JSON.stringify(ev[0]), { msgID: ev[0].id });
          return true;
        } catch {
          return false;
        }
      });
      for (const e of ev.slice(1)) await js.publish(auditSubject(e), JSON.stringify(e), { msgID: e.id });
      await nc.close();
      await waitFor(async () => (await getJson(`${c.url}/api/v1/sessions/late-nats`)).body.session?.events === 4);
    } finally {
      await c.stop();
      await db.drop();
      await nats.stop();
    }
  }, 60_000);
});
