import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type JetStreamClient, jetstream } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { type AuditEvent, auditSigner, auditSubject, hashEvent } from '@pgwarden/policy';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startNats, type TestNats } from '../../test/harness/index.js';
import { ROLES } from '../../test/harness/postgres.js';
import { type Collector, startCollector } from './collector.js';
import { makeSession, sidecarJson } from './testing/audit-events.js';
import { createTestDatabase } from './testing/test-database.js';

async function getJson(url: string, init?: RequestInit): Promise<{ status: number; body: any }> {
  const r = await fetch(url, init);
  return { status: r.status, body: await r.json() };
}

const waitFor = async (check: () => Promise<boolean>, ms = 15_000) => {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
};

/** A key pair as `pgwarden audit keygen` makes it. */
function keyPair() {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privatePem: String(privateKey.export({ type: 'pkcs8', format: 'pem' })),
    publicPem: String(publicKey.export({ type: 'spki', format: 'pem' })),
  };
}

/** The keys file as JSON (YAML reads it too); written as a Secret or ConfigMap update lands: renamed over. */
function writeKeys(path: string, keys: { name: string; publicKey: string; namespaces?: string[] }[]): void {
  writeFileSync(`${path}.tmp`, JSON.stringify({ keys }));
  renameSync(`${path}.tmp`, path);
}

/** What someone without the key can do to a stored trail: change an event and recompute every hash and link. */
function rewrite(events: AuditEvent[], seq: number, change: (e: AuditEvent) => AuditEvent): AuditEvent[] {
  const out: AuditEvent[] = [];
  for (const e of events) {
    const prev = out[out.length - 1];
    let next = e.session.seq === seq ? change(e) : { ...e };
    if (prev) next = { ...next, prevHash: prev.hash };
    out.push({ ...next, hash: hashEvent(next) });
  }
  return out;
}

describe('signed audit checkpoints, ingested from NATS JetStream into PostgreSQL', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-signed-audit-'));
  const keysFile = join(dir, 'audit-keys.json');
  const agents = keyPair();
  const stranger = keyPair();
  const signer = auditSigner(agents.privatePem);
  const strangerSigner = auditSigner(stranger.privatePem);
  const agentsKey = { name: 'agents-2026', publicKey: agents.publicPem, namespaces: ['agents'] };
  let nats: TestNats;
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let collector: Collector;
  let nc: NatsConnection;
  let js: JetStreamClient;

  /** Published as a sidecar does: its canonical text, one message per event, the event id as message id. */
  const publish = async (events: AuditEvent[]) => {
    for (const e of events) await js.publish(auditSubject(e), sidecarJson(e), { msgID: e.id });
  };
  const session = async (id: string) => (await getJson(`${collector.url}/api/v1/sessions/${id}`)).body;
  const stored = (id: string, events: number) => waitFor(async () => (await session(id)).session?.events === events);
  const verify = async (body: unknown) =>
    (await getJson(`${collector.url}/api/v1/verify`, { method: 'POST', body: JSON.stringify(body) })).body;
  const metrics = async () => (await fetch(`${collector.url}/metrics`)).text();

  beforeAll(async () => {
    writeKeys(keysFile, [agentsKey]);
    [nats, db] = await Promise.all([startNats(), createTestDatabase(inject('pg'), ROLES.superuser)]);
    collector = await startCollector({
      nats: { url: nats.url },
      store: { url: db.url },
      http: { port: 0 },
      logger: pino({ level: 'silent' }),
      // No grace: --require-signed-audit judges the sessions as soon as they are stored.
      gapGraceMs: 0,
      signatures: { keysFile, requireSigned: true },
    });
    await waitFor(async () => (await getJson(`${collector.url}/readyz`)).body.checks?.nats === true);
    nc = await connect({ servers: nats.url });
    js = jetstream(nc);
  });
  afterAll(async () => {
    await nc?.close();
    await collector?.stop();
    await db?.drop();
    await nats?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('judges each checkpoint at ingest and records how far valid ones vouch, and by which key', async () => {
    const change = (e: AuditEvent) => ({ ...e, statement: { ...e.statement!, text: 'SELECT 1' } });
    const sessions = {
      // start, 2 statements, checkpoint, 2 statements, checkpoint, end, checkpoint (signing the end): 9 events
      ok: makeSession({ id: 'sig-ok', statements: 4, signer, checkpointEvery: 2 }),
      partial: makeSession({ id: 'sig-partial', statements: 3, signer, checkpointEvery: 2, end: false }),
      forged: rewrite(makeSession({ id: 'sig-forged', statements: 4, signer, checkpointEvery: 2 }), 2, change),
      stranger: makeSession({ id: 'sig-stranger', statements: 1, signer: strangerSigner }),
      billing: makeSession({ id: 'sig-billing', statements: 1, signer, namespace: 'billing' }),
      none: makeSession({ id: 'sig-none', statements: 2 }),
    };
    for (const events of Object.values(sessions)) await publish(events);
    for (const events of Object.values(sessions)) await stored(events[0].session.id, events.length);

    expect(await session('sig-ok')).toMatchObject({
      session: {
        chain: 'ok',
        ended: true,
        signature: 'signed',
        signedSeq: 8,
        signedBy: 'agents-2026',
        unsignedEvents: 0,
      },
      findings: [],
    });
    // The checkpoint after session.end is the last event, and an ordinary one of the chain.
    expect((await session('sig-ok')).events.map((e: AuditEvent) => e.type).slice(-2)).toEqual([
      'session.end',
      'audit.checkpoint',
    ]);
    expect((await session('sig-partial')).session).toMatchObject({
      chain: 'ok',
      ended: false,
      signature: 'partial',
      signedSeq: 3,
      signedBy: 'agents-2026',
      unsignedEvents: 1,
    });
    expect((await session('sig-none')).session).toMatchObject({
      chain: 'ok',
      signature: 'unsigned',
      signedSeq: null,
      unsignedEvents: 4,
    });
    // The rewritten session's chain is consistent again; its checkpoints no longer sign what precedes them.
    const forged = await session('sig-forged');
    expect(forged.session).toMatchObject({ chain: 'tampered', signature: 'unsigned', signedSeq: null });
    expect(forged.findings.map((f: { kind: string; seqFrom: number; detail: string }) => [f.kind, f.seqFrom])).toEqual([
      ['audit.tampered', 4],
      ['audit.tampered', 7],
      ['audit.tampered', 9],
    ]);
    expect(forged.findings[0].detail).toMatch(
      new RegExp(`^checkpoint sig-forged\\.4 not-preceding: .*key agents-2026 \\(${signer.keyId}\\)`),
    );
    expect(await session('sig-stranger')).toMatchObject({
      session: { chain: 'tampered', signature: 'unsigned' },
      findings: [
        {
          kind: 'audit.tampered',
          detail: `checkpoint sig-stranger.4 unknown-key: signed by key ${strangerSigner.keyId}, which is not in the audit keys`,
        },
      ],
    });
    expect((await session('sig-billing')).findings[0].detail).toBe(
      `checkpoint sig-billing.4 wrong-namespace: signed by key agents-2026 (${signer.keyId}), which may not vouch for namespace "billing"`,
    );

    const signedOnly = await getJson(`${collector.url}/api/v1/sessions?signature=signed`);
    expect(signedOnly.body.items.map((s: { id: string }) => s.id)).toEqual(['sig-ok']);
    const m = await metrics();
    expect(m).toMatch(/pgwarden_collector_events_ingested_total\{type="audit.checkpoint"\} 9/);
    expect(m).toMatch(/pgwarden_collector_chain_findings_total\{kind="audit.tampered"\} 5/);
    expect(m).toMatch(/pgwarden_collector_audit_keys 1/);
    expect(m).toMatch(/pgwarden_collector_audit_keys_file_invalid 0/);
  });

  it('verifies on demand: each session’s signature state, and --require-signed-audit fails an unsigned one', async () => {
    const all = await verify({});
    expect(all).toMatchObject({
      ok: false,
      sessions: 6,
      signatures: { signed: 1, partial: 1, unsigned: 4, unverified: 0 },
      auditKeys: { keys: ['agents-2026'] },
    });
    expect(all).not.toHaveProperty('reports');
    const failed = Object.fromEntries(
      all.failed.map((r: { sessionId: string; findings: { kind: string; detail: string }[] }) => [
        r.sessionId,
        r.findings.map((f) => f.kind),
      ]),
    );
    expect(failed).toEqual({
      'sig-billing': ['audit.tampered', 'audit.unsigned'],
      'sig-forged': ['audit.tampered', 'audit.tampered', 'audit.tampered', 'audit.unsigned'],
      'sig-none': ['audit.unsigned'],
      'sig-stranger': ['audit.tampered', 'audit.unsigned'],
    });
    expect(all.failed.find((r: { sessionId: string }) => r.sessionId === 'sig-none')).toMatchObject({
      signature: { state: 'unsigned', signedSeq: null },
      findings: [
        { kind: 'audit.unsigned', seqFrom: 1, seqTo: 4, detail: 'the session ended without a valid checkpoint' },
      ],
    });
    // Named sessions come back in full (`details`), the ones that verify too.
    const named = await verify({ sessions: ['sig-ok', 'sig-partial'], details: true });
    expect(named).toMatchObject({ ok: true, failed: [], signatures: { signed: 1, partial: 1 } });
    expect(named.reports.map((r: { sessionId: string; signature: unknown }) => [r.sessionId, r.signature])).toEqual([
      ['sig-ok', { state: 'signed', signedSeq: 8, signedBy: 'agents-2026', unsignedEvents: 0 }],
      ['sig-partial', { state: 'partial', signedSeq: 3, signedBy: 'agents-2026', unsignedEvents: 1 }],
    ]);
    expect((await getJson(`${collector.url}/api/v1/verify`, { method: 'POST', body: '{"details":1}' })).status).toBe(
      400,
    );
  });

  it('follows the keys file: a key added counts at once, a broken replacement keeps the keys in force and shows', async () => {
    writeKeys(keysFile, [agentsKey, { name: 'stranger-2026', publicKey: stranger.publicPem }]);
    const later = makeSession({ id: 'sig-stranger-2', statements: 1, signer: strangerSigner });
    await publish(later);
    await stored('sig-stranger-2', later.length);
    expect((await session('sig-stranger-2')).session).toMatchObject({
      chain: 'ok',
      signature: 'signed',
      signedBy: 'stranger-2026',
    });
    // A full verification judges with the keys as they are now, whatever was recorded at ingest.
    expect(await verify({ sessions: ['sig-stranger'] })).toMatchObject({
      ok: true,
      auditKeys: { keys: ['agents-2026', 'stranger-2026'] },
    });

    // A private key pasted in by mistake: refused, reported, and the keys read before stay in force.
    writeFileSync(`${keysFile}.tmp`, JSON.stringify({ keys: [{ name: 'oops', publicKey: agents.privatePem }] }));
    renameSync(`${keysFile}.tmp`, keysFile);
    const m = await metrics();
    expect(m).toMatch(/pgwarden_collector_audit_keys_file_invalid 1/);
    expect(m).toMatch(/pgwarden_collector_audit_keys 2/);
    const third = makeSession({ id: 'sig-stranger-3', statements: 1, signer: strangerSigner });
    await publish(third);
    await stored('sig-stranger-3', third.length);
    expect((await session('sig-stranger-3')).session).toMatchObject({ signature: 'signed', signedBy: 'stranger-2026' });
    const v = await verify({ sessions: ['sig-stranger-3'] });
    expect(v.auditKeys).toEqual({
      keys: ['agents-2026', 'stranger-2026'],
      error: expect.stringMatching(/entry 0 \(oops\): publicKey: this is a private key/),
    });
    expect(JSON.stringify(v)).not.toContain(agents.privatePem.split('\n')[1]);

    writeKeys(keysFile, [agentsKey]);
    expect(await metrics()).toMatch(/pgwarden_collector_audit_keys_file_invalid 0/);
    expect((await verify({ sessions: ['sig-stranger-3'] })).auditKeys).toEqual({ keys: ['agents-2026'] });
  });

  it('without keys, stores checkpoints as unverified and cannot tell a consistent rewrite; refuses bad settings', async () => {
    const plainDb = await createTestDatabase(inject('pg'), ROLES.superuser);
    const plain = await startCollector({
      nats: { url: nats.url, durable: 'without-keys' },
      store: { url: plainDb.url },
      http: { port: 0 },
      logger: pino({ level: 'silent' }),
    });
    try {
      await waitFor(async () => (await plain.store.sessionIds()).length === 8);
      const reports = await plain.verify(['sig-ok', 'sig-forged', 'sig-none']);
      expect(reports.map((r) => [r.sessionId, r.ok, r.signature.state])).toEqual([
        ['sig-ok', true, 'unverified'],
        ['sig-forged', true, 'unverified'],
        ['sig-none', true, 'unsigned'],
      ]);
      const r = await getJson(`${plain.url}/api/v1/sessions/sig-ok`);
      expect(r.body.session).toMatchObject({ chain: 'ok', signature: 'unverified', signedSeq: null });
    } finally {
      await plain.stop();
      await plainDb.drop();
    }
    const base = { store: { url: db.url }, http: { port: 0 }, logger: pino({ level: 'silent' }) };
    await expect(startCollector({ ...base, signatures: { requireSigned: true } })).rejects.toThrow(
      '--require-signed-audit needs --audit-keys',
    );
    const bad = join(dir, 'bad-keys.yaml');
    writeFileSync(
      bad,
      `keys:\n  - name: k\n    publicKey: |\n      ${agents.privatePem.trim().split('\n').join('\n      ')}\n`,
    );
    await expect(startCollector({ ...base, signatures: { keysFile: bad } })).rejects.toThrow(
      /^audit keys file .*bad-keys\.yaml: entry 0 \(k\): publicKey: this is a private key/,
    );
  });
});
