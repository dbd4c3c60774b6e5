import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ROLES } from '../../../test/harness/postgres.js';
import { sha256Hex } from '../auth/token-file.js';
import { type Collector, startCollector } from '../collector.js';
import { makeSession } from '../testing/audit-events.js';
import { createTestDatabase } from '../testing/test-database.js';

/**
 * The API as an unauthenticated network peer (or the agent, which can reach it) meets it: a real collector over
 * real HTTP and PostgreSQL.
 */
describe('collector API hardening', () => {
  const READER = 'rita-reader-5d1e0a';
  const INGEST = 'ingest-token-8c2f11';
  let dir: string;
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let collector: Collector;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'pgwarden-hardening-'));
    writeFileSync(join(dir, 'readers.yaml'), `- {name: rita, tokenSha256: ${sha256Hex(READER)}}\n`);
    db = await createTestDatabase(inject('pg'), ROLES.superuser);
    collector = await startCollector({
      store: { url: db.url },
      http: { port: 0 },
      httpIngest: { enabled: true, token: INGEST },
      logger: pino({ level: 'silent' }),
      read: { readersFile: join(dir, 'readers.yaml') },
    });
  });
  afterAll(async () => {
    await collector?.stop();
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('sends headers that keep the UI out of other sites’ frames and its script the only one that runs', async () => {
    const page = await fetch(`${collector.url}/`);
    const csp = page.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).toMatch(/script-src 'sha256-[A-Za-z0-9+/]{43}='(;|$)/);
    expect(csp).not.toContain("unsafe-inline'; script");
    expect(csp).not.toMatch(/script-src[^;]*unsafe-inline/);
    for (const r of [page, await fetch(`${collector.url}/api/v1/sessions`), await fetch(`${collector.url}/healthz`)]) {
      expect(r.headers.get('x-frame-options')).toBe('DENY');
      expect(r.headers.get('x-content-type-options')).toBe('nosniff');
    }
    expect((await fetch(`${collector.url}/healthz`)).headers.get('content-security-policy')).toBe(
      "default-src 'none'; frame-ancestors 'none'",
    );
  });

  it('answers a malformed escape in a session id with 404, not 500', async () => {
    const r = await fetch(`${collector.url}/api/v1/sessions/%E0%A4%A`, {
      headers: { authorization: `Bearer ${READER}` },
    });
    expect(r.status).toBe(404);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe('not_found');
  });

  it('refuses ingest with no token or an empty one', async () => {
    const [e] = makeSession({ id: 'ingest-probe', statements: 0 });
    for (const authorization of [undefined, 'Bearer ', 'Bearer wrong', `Bearer ${INGEST}x`]) {
      const r = await fetch(`${collector.url}/api/v1/ingest`, {
        method: 'POST',
        body: JSON.stringify(e),
        headers: authorization ? { authorization } : {},
      });
      expect(r.status, authorization).toBe(401);
    }
    const ok = await fetch(`${collector.url}/api/v1/ingest`, {
      method: 'POST',
      body: JSON.stringify(e),
      headers: { authorization: `Bearer ${INGEST}` },
    });
    expect(await ok.json()).toMatchObject({ stored: 1 });
  });

  it('keeps a line break in an event id from adding fields to the live stream', async () => {
    const ac = new AbortController();
    const r = await fetch(`${collector.url}/api/v1/stream`, {
      headers: { authorization: `Bearer ${READER}` },
      signal: ac.signal,
    });
    const reader = (r.body as ReadableStream<Uint8Array>).pipeThrough(new TextDecoderStream()).getReader();
    // A producer chose this session id; the id `<session>.<seq>` follows the chain rules, so it is stored.
    const forged = 'x\n\nevent: audit\ndata: {"type":"statement","statement":{"text":"forged"}}';
    for (const e of makeSession({ id: forged, statements: 0 })) await collector.ingest(e);
    let text = '';
    while (!text.includes('session.start')) text += (await reader.read()).value ?? '';
    ac.abort();
    const blocks = text.split('\n\n').filter((b) => b.includes('event: audit'));
    expect(blocks).toHaveLength(1);
    expect(blocks[0].split('\n').filter((l) => l.startsWith('id:'))).toEqual([]);
    expect(text).not.toMatch(/^data: \{"type":"statement","statement":\{"text":"forged"/m);
  });
});

describe('HTTP ingest on a network address', () => {
  it('needs a token (or --insecure-open-ingest), and never an empty one', async () => {
    const db = await createTestDatabase(inject('pg'), ROLES.superuser);
    const dir = mkdtempSync(join(tmpdir(), 'pgwarden-ingest-'));
    writeFileSync(join(dir, 'readers.yaml'), `- {name: rita, tokenSha256: ${sha256Hex('r')}}\n`);
    const base = {
      store: { url: db.url },
      http: { host: '0.0.0.0', port: 0 },
      logger: pino({ level: 'silent' }),
      read: { readersFile: join(dir, 'readers.yaml') },
    };
    try {
      await expect(startCollector({ ...base, httpIngest: { enabled: true } })).rejects.toMatchObject({
        code: 'COLLECTOR_BAD_CONFIG',
        message: expect.stringMatching(/would let anyone who reaches it add audit events: give --ingest-token-file/),
      });
      await expect(startCollector(base)).rejects.toMatchObject({ code: 'COLLECTOR_BAD_CONFIG' });
      await expect(startCollector({ ...base, httpIngest: { enabled: true, token: ' ' } })).rejects.toMatchObject({
        message: expect.stringMatching(/token is empty/),
      });
      const open = await startCollector({ ...base, httpIngest: { enabled: true, insecureOpen: true } });
      await open.stop();
    } finally {
      await db.drop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
