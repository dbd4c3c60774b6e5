import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ROLES } from '../../../test/harness/postgres.js';
import { type Collector, startCollector } from '../collector.js';
import { approversYaml } from '../testing/approvals-fixture.js';
import { makeSession } from '../testing/audit-events.js';
import { createTestDatabase } from '../testing/test-database.js';
import { sha256Hex } from './token-file.js';

const READER = 'reader-token-5b2f0a';
const APPROVER = 'approver-token-91c3de';
const SCOPED = 'team-a-reader-77e0b2';

describe('who may read the audit trail over HTTP', () => {
  let dir: string;
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let collector: Collector;
  let readersFile: string;
  const logLines: string[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'pgwarden-readers-'));
    readersFile = join(dir, 'readers.yaml');
    writeFileSync(
      readersFile,
      `${approversYaml({ rita: { token: READER, groups: ['audit'] } })}- {name: tess, tokenSha256: ${sha256Hex(SCOPED)}, namespaces: [team-a]}\n`,
    );
    const approversFile = join(dir, 'approvers.yaml');
    writeFileSync(approversFile, approversYaml({ alice: { token: APPROVER, groups: ['dba'] } }));
    db = await createTestDatabase(inject('pg'), ROLES.superuser);
    collector = await startCollector({
      store: { url: db.url },
      http: { port: 0 },
      logger: pino({ level: 'info' }, { write: (line: string) => void logLines.push(line) }),
      approvals: { approversFile },
      read: { readersFile },
    });
    for (const e of [
      ...makeSession({ id: 'read-sess', statements: 2 }),
      ...makeSession({ id: 'team-a-sess', statements: 1, namespace: 'team-a' }),
    ])
      expect(await collector.ingest(e)).toBe('stored');
  });
  afterAll(async () => {
    await collector?.stop();
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  const get = (path: string, token?: string, init: RequestInit = {}) =>
    fetch(`${collector.url}${path}`, {
      ...init,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(init.headers ?? {}) },
    });

  it('refuses every read route without a reader’s or approver’s token, and serves it with one', async () => {
    const routes: [string, RequestInit?][] = [
      ['/api/v1/sessions'],
      ['/api/v1/sessions/read-sess'],
      ['/api/v1/events?session=read-sess'],
      ['/api/v1/verify', { method: 'POST', body: '{}' }],
    ];
    for (const [path, init] of routes) {
      for (const token of [undefined, 'wrong-token']) {
        const r = await get(path, token, init);
        expect(r.status, `${path} with ${token}`).toBe(401);
        expect(r.headers.get('www-authenticate')).toBe('Bearer realm="pgwarden"');
        const body = (await r.json()) as { error: { code: string; message: string } };
        expect(body.error.code).toBe('unauthorized');
        // The refusal never echoes what was sent.
        expect(JSON.stringify(body)).not.toContain('wrong-token');
      }
      for (const token of [READER, APPROVER]) expect((await get(path, token, init)).status, path).toBe(200);
    }
    const events = (await (await get('/api/v1/events?session=read-sess', READER)).json()) as { items: unknown[] };
    expect(events.items).toHaveLength(4);
  });

  it('a reader limited to some namespaces reads only those, and learns nothing of the others', async () => {
    const json = async (path: string, init?: RequestInit) => {
      const r = await get(path, SCOPED, init);
      return { status: r.status, body: (await r.json()) as any };
    };
    const ids = (items: { id?: string; session?: { id: string } }[]) => items.map((x) => x.id ?? x.session?.id);
    expect(ids((await json('/api/v1/sessions')).body.items)).toEqual(['team-a-sess']);
    expect((await json('/api/v1/sessions?namespace=agents')).body.items).toEqual([]);
    expect((await json('/api/v1/sessions/team-a-sess')).status).toBe(200);
    expect((await json('/api/v1/sessions/read-sess')).status).toBe(404);
    const events = (await json('/api/v1/events')).body.items as { session: { id: string } }[];
    expect(new Set(events.map((e) => e.session.id))).toEqual(new Set(['team-a-sess']));
    expect((await json('/api/v1/events?session=read-sess')).body.items).toEqual([]);
    // Verification: only named sessions of its namespaces.
    expect((await json('/api/v1/verify', { method: 'POST', body: '{}' })).body.error.code).toBe('scoped_reader');
    const other = await json('/api/v1/verify', { method: 'POST', body: JSON.stringify({ sessions: ['read-sess'] }) });
    expect(other.status).toBe(404);
    const own = await json('/api/v1/verify', { method: 'POST', body: JSON.stringify({ sessions: ['team-a-sess'] }) });
    expect(own).toMatchObject({ status: 200, body: { ok: true, sessions: 1 } });
    // The live stream carries only its namespaces' events.
    const ac = new AbortController();
    const r = await get('/api/v1/stream', SCOPED, { signal: ac.signal });
    const reader = r.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = '';
    const read = (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        text += value;
        if (text.includes('"id":"live-a"')) return;
      }
    })();
    for (const e of [
      ...makeSession({ id: 'live-other', statements: 1 }),
      ...makeSession({ id: 'live-a', statements: 1, namespace: 'team-a' }),
    ])
      expect(await collector.ingest(e)).toBe('stored');
    await read;
    ac.abort();
    expect(text).toContain('"id":"live-a"');
    expect(text).not.toContain('live-other');
  });

  it('logs who read what (never the token), and nothing for a refused read', async () => {
    const before = logLines.length;
    expect((await get('/api/v1/events?session=read-sess&type=statement', READER)).status).toBe(200);
    expect((await get('/api/v1/sessions', 'wrong-token')).status).toBe(401);
    const reads = logLines
      .slice(before)
      .map((l) => JSON.parse(l))
      .filter((l) => l.msg === 'audit trail read');
    expect(reads).toEqual([
      expect.objectContaining({
        reader: 'rita',
        method: 'GET',
        path: '/api/v1/events',
        query: '?session=read-sess&type=statement',
      }),
    ]);
    expect(logLines.join('\n')).not.toContain(READER);
    expect(logLines.join('\n')).not.toContain('wrong-token');
  });

  it('the live stream needs a token too', async () => {
    expect((await get('/api/v1/stream')).status).toBe(401);
    const ac = new AbortController();
    const r = await get('/api/v1/stream', READER, { signal: ac.signal });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/event-stream/);
    ac.abort();
  });

  it('health, readiness, metrics and the page itself stay open (they carry no audit data)', async () => {
    for (const path of ['/healthz', '/readyz', '/metrics', '/']) expect((await get(path)).status, path).toBe(200);
  });

  it('a readers file that turns invalid refuses readers with 503 until fixed; approvers still read', async () => {
    writeFileSync(readersFile, '- {name: rita, token: plain-text-by-mistake}\n');
    try {
      const r = await get('/api/v1/sessions', READER);
      expect(r.status).toBe(503);
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe('readers_unavailable');
      expect((await get('/api/v1/sessions', APPROVER)).status).toBe(200);
    } finally {
      writeFileSync(readersFile, approversYaml({ rita: { token: READER } }));
    }
    expect((await get('/api/v1/sessions', READER)).status).toBe(200);
  });
});

describe('an open audit API only where nobody else can connect', () => {
  it('refuses to start on a network address without a readers file, unless told to', async () => {
    const db = await createTestDatabase(inject('pg'), ROLES.superuser);
    try {
      await expect(
        startCollector({
          store: { url: db.url },
          http: { host: '0.0.0.0', port: 0 },
          logger: pino({ level: 'silent' }),
        }),
      ).rejects.toMatchObject({
        code: 'COLLECTOR_BAD_CONFIG',
        message: expect.stringMatching(/would let anyone who reaches it read the audit trail: give --readers-file/),
      });
      const open = await startCollector({
        store: { url: db.url },
        http: { host: '0.0.0.0', port: 0 },
        logger: pino({ level: 'silent' }),
        read: { insecureOpen: true },
        // Tokenless ingest off loopback is refused on its own account (api-hardening.test.ts).
        httpIngest: { enabled: false },
      });
      try {
        const port = new URL(open.url).port;
        expect((await fetch(`http://127.0.0.1:${port}/api/v1/sessions`)).status).toBe(200);
      } finally {
        await open.stop();
      }
    } finally {
      await db.drop();
    }
  });
});
