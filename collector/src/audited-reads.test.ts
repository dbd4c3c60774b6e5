import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { type AuditEvent, auditEventSchema, auditSubject } from '@pgwarden/policy';
import { Ajv } from 'ajv';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startNats, type TestNats } from '../../test/harness/index.js';
import { ROLES } from '../../test/harness/postgres.js';
import { sha256Hex } from './auth/token-file.js';
import { type Collector, startCollector } from './collector.js';
import { jsonlFileExporter } from './exports/jsonl-file.js';
import { approversYaml } from './testing/approvals-fixture.js';
import { makeSession, sidecarJson } from './testing/audit-events.js';
import { createTestDatabase } from './testing/test-database.js';

const READER = 'rita-token-0c6e41a9';
const SCOPED = 'tess-token-5d02b7e3';
const APPROVER = 'alice-token-9e1f4c70';
const WRONG = 'guessed-token-77aa31';

const validate = new Ajv({ allErrors: true }).compile(auditEventSchema);

const waitFor = async (check: () => Promise<boolean>, ms = 15_000) => {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
};

describe('reads of the audit trail, audited in the collector’s own chain', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-audited-reads-'));
  const exportFile = join(dir, 'export', 'audit.jsonl');
  const keysFile = join(dir, 'audit-keys.json');
  const signingKeyFile = join(dir, 'collector-signing.pem');
  const logLines: string[] = [];
  let nats: TestNats;
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let sql: pg.Client;
  let collector: Collector;
  let nc: NatsConnection;

  const get = (path: string, token?: string, init: RequestInit = {}) =>
    fetch(`${collector.url}${path}`, {
      ...init,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(init.headers ?? {}) },
    });
  /** The collector's chain as stored, read from the database (reading it over HTTP would add to it). */
  const chain = async (): Promise<AuditEvent[]> =>
    (
      await sql.query<{ event: string }>('SELECT event FROM audit_events WHERE session_id = $1 ORDER BY seq', [
        collector.readAuditSession,
      ])
    ).rows.map((r) => JSON.parse(r.event) as AuditEvent);
  const reads = async () => (await chain()).filter((e) => e.type === 'audit.read');
  /** The reads recorded after the first `before` (each read's event is stored before it is answered). */
  const lastReads = async (before: number) => (await reads()).slice(before).map((e) => e.read);

  beforeAll(async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    writeFileSync(signingKeyFile, String(privateKey.export({ type: 'pkcs8', format: 'pem' })), { mode: 0o600 });
    writeFileSync(
      keysFile,
      JSON.stringify({
        keys: [{ name: 'collector-2026', publicKey: String(publicKey.export({ type: 'spki', format: 'pem' })) }],
      }),
    );
    const readersFile = join(dir, 'readers.yaml');
    writeFileSync(
      readersFile,
      `${approversYaml({ rita: { token: READER, groups: ['audit'] } })}- {name: tess, tokenSha256: ${sha256Hex(SCOPED)}, namespaces: [team-a]}\n`,
    );
    const approversFile = join(dir, 'approvers.yaml');
    writeFileSync(approversFile, approversYaml({ alice: { token: APPROVER, groups: ['dba'] } }));
    [nats, db] = await Promise.all([startNats(), createTestDatabase(inject('pg'), ROLES.superuser)]);
    sql = new pg.Client({ connectionString: db.url });
    await sql.connect();
    collector = await startCollector({
      nats: { url: nats.url },
      store: { url: db.url },
      http: { port: 0 },
      logger: pino({ level: 'info' }, { write: (line: string) => void logLines.push(line) }),
      gapGraceMs: 60_000,
      approvals: { approversFile },
      read: { readersFile },
      signatures: { keysFile },
      // Every read its own event here, so each can be checked; folding repeats is read-recorder.test.ts's (and the
      // last test below shows it against the real store).
      readAudit: { signingKeyFile, checkpointIntervalMs: 200, timeoutMs: 1500, repeatWindowMs: 0 },
      exporters: [jsonlFileExporter({ path: exportFile })],
    });
    nc = await connect({ servers: nats.url });
    const js = jetstream(nc);
    await waitFor(async () => (await (await get('/readyz')).json()).checks?.nats === true);
    for (const e of [
      ...makeSession({ id: 'agents-sess', statements: 3 }),
      ...makeSession({ id: 'team-a-sess', statements: 1, namespace: 'team-a' }),
    ])
      await js.publish(auditSubject(e), sidecarJson(e), { msgID: e.id });
    await waitFor(
      async () =>
        (await sql.query("SELECT count(*)::int AS n FROM audit_sessions WHERE session_id LIKE '%-sess'")).rows[0].n ===
        2,
    );
  });
  afterAll(async () => {
    await nc?.close();
    await collector?.stop();
    await sql?.end();
    await db?.drop();
    await nats?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('records each read by a named reader (name, route, query, status, items) in a chain that verifies', async () => {
    expect(collector.readAuditSession).toMatch(/^collector-[0-9a-f-]{36}$/);
    const before = (await reads()).length;
    expect((await get('/api/v1/sessions?limit=10&namespace=agents', READER)).status).toBe(200);
    expect((await get('/api/v1/sessions/agents-sess', READER)).status).toBe(200);
    // A token put in the URL by mistake is not kept: the API takes none there.
    const events = await get('/api/v1/events?session=agents-sess&type=statement&access_token=leaked-1f2e', READER);
    expect(((await events.json()) as { items: unknown[] }).items).toHaveLength(3);
    expect((await get('/api/v1/sessions/no-such-session', READER)).status).toBe(404);
    const verifyOne = await get('/api/v1/verify', READER, {
      method: 'POST',
      body: JSON.stringify({ sessions: ['agents-sess'] }),
    });
    expect(verifyOne.status).toBe(200);
    // The approval queue holds statement text: listing it is a read too, by the approver.
    expect((await get('/api/v1/approvals?state=all', APPROVER)).status).toBe(200);

    expect(await lastReads(before)).toEqual([
      { reader: 'rita', route: '/api/v1/sessions', query: { limit: '10', namespace: 'agents' }, status: 200, items: 1 },
      { reader: 'rita', route: '/api/v1/sessions/agents-sess', status: 200, items: 5 },
      {
        reader: 'rita',
        route: '/api/v1/events',
        query: { session: 'agents-sess', type: 'statement', access_token: '***' },
        status: 200,
        items: 3,
      },
      { reader: 'rita', route: '/api/v1/sessions/no-such-session', status: 404 },
      { reader: 'rita', route: '/api/v1/verify', status: 200, items: 1 },
      { reader: 'alice', route: '/api/v1/approvals', query: { state: 'all' }, status: 200, items: 0 },
    ]);
    const stored = await chain();
    for (const e of stored) expect(validate(e), JSON.stringify(validate.errors)).toBe(true);
    expect(stored[0]).toMatchObject({
      type: 'audit.read',
      session: { id: collector.readAuditSession, seq: 1 },
      source: { instance: collector.readAuditSession?.slice('collector-'.length), version: expect.any(String) },
      identity: { groups: [] },
      prevHash: null,
    });
    expect(JSON.stringify(stored)).not.toContain('leaked-1f2e');

    // Reading the collector's own chain is a read like any other, and the whole trail verifies.
    const own = await get(`/api/v1/sessions/${collector.readAuditSession}`, READER);
    const body = (await own.json()) as { session: { chain: string }; events: AuditEvent[] };
    expect(body.session.chain).toBe('ok');
    expect(body.events.filter((e) => e.type === 'audit.read').length).toBeGreaterThanOrEqual(6);
    const verify = await get('/api/v1/verify', READER, { method: 'POST', body: '{}' });
    expect(await verify.json()).toMatchObject({ ok: true, sessions: 3, failed: [] });
    expect((await lastReads(before)).slice(-2)).toEqual([
      {
        reader: 'rita',
        route: `/api/v1/sessions/${collector.readAuditSession}`,
        status: 200,
        items: body.events.length,
      },
      { reader: 'rita', route: '/api/v1/verify', status: 200, items: 3 },
    ]);
  });

  it('records refused reads with their status and no token material, in the store or the log', async () => {
    const before = (await reads()).length;
    expect((await get('/api/v1/sessions', WRONG)).status).toBe(401);
    expect((await get('/api/v1/events?session=agents-sess')).status).toBe(401);
    expect((await get('/api/v1/approvals', WRONG)).status).toBe(401);
    // A reader is not an approver: the approvals queue refuses rita's token.
    expect((await get('/api/v1/approvals', READER)).status).toBe(401);
    expect(await lastReads(before)).toEqual([
      { reader: 'unknown', route: '/api/v1/sessions', status: 401 },
      { reader: 'unknown', route: '/api/v1/events', query: { session: 'agents-sess' }, status: 401 },
      { reader: 'unknown', route: '/api/v1/approvals', status: 401 },
      { reader: 'unknown', route: '/api/v1/approvals', status: 401 },
    ]);
    const everything = (await sql.query<{ event: string }>('SELECT event FROM audit_events')).rows
      .map((r) => r.event)
      .join('\n');
    const logs = logLines.join('\n');
    for (const token of [READER, SCOPED, APPROVER, WRONG]) {
      for (const [where, text] of [
        ['store', everything],
        ['log', logs],
      ]) {
        expect(text, `${where} holds a token`).not.toContain(token);
        expect(text, `${where} holds a token hash`).not.toContain(sha256Hex(token));
      }
    }
    expect(everything).not.toMatch(/bearer|authorization/i);
  });

  it('records nothing for health, readiness, metrics and the page itself', async () => {
    // Counted in audit.read events: a checkpoint over the previous test's reads may still come in meanwhile.
    const before = (await reads()).length;
    for (const path of ['/healthz', '/readyz', '/metrics', '/']) expect((await get(path)).status, path).toBe(200);
    expect((await get('/api/v1/no-such-route', READER)).status).toBe(404);
    expect(await reads()).toHaveLength(before);
  });

  it('lists a namespace-scoped reader’s namespaces, and keeps the collector’s chain from them', async () => {
    const before = (await reads()).length;
    const page = (await (await get('/api/v1/sessions', SCOPED)).json()) as { items: { id: string }[] };
    expect(page.items.map((s) => s.id)).toEqual(['team-a-sess']);
    // The collector's chain has no namespace: other readers' reads are not a scoped reader's business.
    expect((await get(`/api/v1/sessions/${collector.readAuditSession}`, SCOPED)).status).toBe(404);
    expect(await lastReads(before)).toEqual([
      { reader: 'tess', route: '/api/v1/sessions', namespaces: ['team-a'], status: 200, items: 1 },
      { reader: 'tess', route: `/api/v1/sessions/${collector.readAuditSession}`, namespaces: ['team-a'], status: 404 },
    ]);
  });

  it('records the live stream when it opens, and the stream carries later reads', async () => {
    const before = (await reads()).length;
    const ac = new AbortController();
    const r = await get('/api/v1/stream?type=audit.read', READER, { signal: ac.signal });
    expect(r.status).toBe(200);
    expect(await lastReads(before)).toEqual([
      { reader: 'rita', route: '/api/v1/stream', query: { type: 'audit.read' }, status: 200 },
    ]);
    const text = (async () => {
      const reader = r.body!.pipeThrough(new TextDecoderStream()).getReader();
      let got = '';
      while (!got.includes('"reader":"alice"')) got += (await reader.read()).value ?? '';
      return got;
    })();
    expect((await get('/api/v1/sessions/team-a-sess', APPROVER)).status).toBe(200);
    expect(await text).toMatch(/event: audit\nid: collector-[0-9a-f-]+\.\d+\ndata: \{.*"type":"audit\.read"/);
    ac.abort();
  });

  it('signs the chain with --audit-signing-key, which --audit-keys then vouches for as signed', async () => {
    expect((await get('/api/v1/sessions', READER)).status).toBe(200);
    // Checkpoints follow reads within the interval (200 ms here); wait (in process: a read over HTTP would add an
    // event) for one covering the last read. Each HTTP read below is answered before its own event is appended.
    const signed = async () => (await collector.verify([collector.readAuditSession!]))[0].signature.state === 'signed';
    await waitFor(signed);
    const [report] = await collector.verify([collector.readAuditSession!]);
    expect(report).toMatchObject({ ok: true, signature: { state: 'signed', signedBy: 'collector-2026' } });
    const verify = (await (await get('/api/v1/verify', READER, { method: 'POST', body: '{}' })).json()) as {
      ok: boolean;
      signatures: Record<string, number>;
    };
    // The collector's chain signed; the two sidecar sessions were published without checkpoints.
    expect(verify).toMatchObject({ ok: true, signatures: { signed: 1, unsigned: 2 } });
    await waitFor(signed);
    const session = (await (await get(`/api/v1/sessions/${collector.readAuditSession}`, READER)).json()) as {
      session: unknown;
      events: AuditEvent[];
    };
    expect(session.session).toMatchObject({ signature: 'signed', signedBy: 'collector-2026', unsignedEvents: 0 });
    const checkpoints = session.events.filter((e) => e.type === 'audit.checkpoint');
    expect(checkpoints.length).toBeGreaterThanOrEqual(1);
    expect(checkpoints[0]).toMatchObject({
      source: { instance: expect.any(String) },
      identity: { groups: [] },
      checkpoint: { key: expect.stringMatching(/^[0-9a-f]{16}$/) },
    });
    expect(logLines.join('\n')).not.toContain(readFileSync(signingKeyFile, 'utf8').split('\n')[1]);
  });

  it('exports the reads like any other events (jsonl)', async () => {
    const stored = await chain();
    const last = stored[stored.length - 1];
    await waitFor(async () => {
      try {
        return readFileSync(exportFile, 'utf8').includes(`"id":"${last.id}"`);
      } catch {
        return false;
      }
    });
    const exported = readFileSync(exportFile, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as AuditEvent)
      .filter((e) => e.session.id === collector.readAuditSession);
    expect(exported.map((e) => e.hash)).toEqual(stored.slice(0, exported.length).map((e) => e.hash));
    expect(exported.find((e) => e.type === 'audit.read' && e.read?.reader === 'tess')?.read).toMatchObject({
      namespaces: ['team-a'],
    });
  });

  it('refuses reads with 503 while their events cannot be stored, then stores them late without a hole', async () => {
    const lock = new pg.Client({ connectionString: db.url });
    await lock.connect();
    const before = (await reads()).length;
    try {
      // Writes wait for the lock, reads of the trail do not: the read is answered but cannot be recorded.
      await lock.query('BEGIN');
      await lock.query('LOCK TABLE audit_events IN EXCLUSIVE MODE');
      const r = await get('/api/v1/sessions', READER);
      expect(r.status).toBe(503);
      expect(await r.json()).toEqual({
        error: {
          code: 'read_unrecorded',
          message:
            'the read could not be recorded in the audit trail: its audit.read event was not stored within 1500 ms: refusing to serve it',
        },
      });
      expect(await (await get('/metrics')).text()).toMatch(/^pgwarden_collector_reads_unrecorded_total 1$/m);
      expect(logLines.map((l) => JSON.parse(l))).toContainEqual(
        expect.objectContaining({
          msg: 'read of the audit trail not recorded',
          reader: 'rita',
          route: '/api/v1/sessions',
          served: false,
        }),
      );
      await lock.query('COMMIT');
    } finally {
      await lock.end();
    }
    // Held, not lost: the event is stored once the lock goes (saying what would have been answered), no hole.
    await waitFor(async () => (await reads()).length === before + 1);
    await waitFor(async () => logLines.some((l) => l.includes('audit.read event stored late')));
    expect((await get('/api/v1/sessions', READER)).status).toBe(200);
    const [report] = await collector.verify([collector.readAuditSession!]);
    expect(report).toMatchObject({ ok: true, findings: [] });
  });
});

describe('the collector’s chain at shutdown', () => {
  it('gets a last checkpoint over the reads no checkpoint covered yet, repeated ones folded in', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgwarden-audited-reads-stop-'));
    const db = await createTestDatabase(inject('pg'), ROLES.superuser);
    try {
      const keyFile = join(dir, 'signing.pem');
      const { privateKey } = generateKeyPairSync('ed25519');
      writeFileSync(keyFile, String(privateKey.export({ type: 'pkcs8', format: 'pem' })), { mode: 0o600 });
      const collector = await startCollector({
        store: { url: db.url },
        http: { port: 0 },
        logger: pino({ level: 'silent' }),
        // An interval longer than the test: only the first read (signed at once) and the shutdown sign.
        readAudit: { signingKeyFile: keyFile, checkpointIntervalMs: 600_000 },
      });
      // A read whose answer cannot change meanwhile (the sessions list would gain the collector's own chain).
      for (let i = 0; i < 3; i++)
        expect((await fetch(`${collector.url}/api/v1/events?type=statement`)).status).toBe(200);
      const session = collector.readAuditSession;
      await collector.stop();
      const sql = new pg.Client({ connectionString: db.url });
      await sql.connect();
      try {
        const events = (
          await sql.query<{ event: string }>('SELECT event FROM audit_events WHERE session_id = $1 ORDER BY seq', [
            session,
          ])
        ).rows.map((r) => JSON.parse(r.event) as AuditEvent);
        // The two identical reads after the first were folded into one event (default window: 60 s), which the
        // shutdown recorded before its last checkpoint.
        expect(events.map((e) => e.type)).toEqual(['audit.read', 'audit.checkpoint', 'audit.read', 'audit.checkpoint']);
        expect(events[0].read).toEqual({
          reader: 'open',
          route: '/api/v1/events',
          query: { type: 'statement' },
          status: 200,
          items: 0,
        });
        expect(events[2].read).toEqual({ ...events[0].read, repeated: 2 });
      } finally {
        await sql.end();
      }
    } finally {
      await db.drop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('--audit-signing-key that is not a private key', () => {
  it('refuses the start in one line naming the file, never the key', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgwarden-audited-reads-key-'));
    try {
      const keyFile = join(dir, 'public.pem');
      const pem = String(generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }));
      writeFileSync(keyFile, pem);
      const started = startCollector({
        http: { port: 0 },
        logger: pino({ level: 'silent' }),
        readAudit: { signingKeyFile: keyFile },
      });
      await expect(started).rejects.toMatchObject({
        code: 'COLLECTOR_BAD_CONFIG',
        message: `audit signing key ${keyFile}: this is a public key: give the private key (the public one goes in the collector's --audit-keys)`,
      });
      await expect(
        startCollector({ http: { port: 0 }, readAudit: { signingKeyFile: join(dir, 'missing.pem') } }),
      ).rejects.toThrow(`audit signing key ${join(dir, 'missing.pem')} cannot be read: ENOENT`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('--insecure-unrecorded-reads', () => {
  it('serves a read whose event cannot be stored, logging and counting it', async () => {
    const db = await createTestDatabase(inject('pg'), ROLES.superuser);
    const logLines: string[] = [];
    const collector = await startCollector({
      store: { url: db.url },
      http: { port: 0 },
      logger: pino({ level: 'info' }, { write: (line: string) => void logLines.push(line) }),
      readAudit: { failOpen: true, timeoutMs: 500 },
    });
    const lock = new pg.Client({ connectionString: db.url });
    await lock.connect();
    try {
      expect((await fetch(`${collector.url}/api/v1/sessions`)).status).toBe(200);
      await lock.query('BEGIN');
      await lock.query('LOCK TABLE audit_events IN EXCLUSIVE MODE');
      expect((await fetch(`${collector.url}/api/v1/sessions`)).status).toBe(200);
      expect(await (await fetch(`${collector.url}/metrics`)).text()).toMatch(
        /^pgwarden_collector_reads_unrecorded_total 1$/m,
      );
      expect(logLines.map((l) => JSON.parse(l))).toContainEqual(
        expect.objectContaining({ msg: 'read of the audit trail not recorded', reader: 'open', served: true }),
      );
      await lock.query('COMMIT');
    } finally {
      await lock.end();
      await collector.stop();
      await db.drop();
    }
  });
});
