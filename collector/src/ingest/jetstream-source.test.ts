import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, headers, type NatsConnection } from '@nats-io/transport-node';
import { type AuditEvent, auditSubject } from '@pgwarden/policy';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startNats, type TestNats } from '../../../test/harness/index.js';
import { ROLES } from '../../../test/harness/postgres.js';
import { type Collector, startCollector } from '../collector.js';
import { makeSession } from '../testing/audit-events.js';
import { createTestDatabase } from '../testing/test-database.js';
import type { IngestQueue } from './ingest-queue.js';
import { AUDIT_STREAM, JetStreamSource, splitEvents } from './jetstream-source.js';

const text = (parts: Uint8Array[]) => parts.map((p) => new TextDecoder().decode(p));
const bytes = (s: string) => new TextEncoder().encode(s);

describe('splitEvents', () => {
  it('one event without a newline is the body itself; lines are events; empty lines are skipped', () => {
    const one = bytes('{"a":1}');
    expect(splitEvents(one)[0]).toBe(one);
    expect(text(splitEvents(bytes('{"a":1}\n{"b":2}\n{"c":3}')))).toEqual(['{"a":1}', '{"b":2}', '{"c":3}']);
    expect(text(splitEvents(bytes('\n{"a":1}\n\n{"b":2}\n')))).toEqual(['{"a":1}', '{"b":2}']);
    // Nothing but newlines stays one (invalid) delivery, so it is kept in audit_rejected rather than vanishing.
    expect(text(splitEvents(bytes('\n\n')))).toEqual(['\n\n']);
    expect(text(splitEvents(bytes('')))).toEqual(['']);
  });

  it('keeps multi-byte UTF-8 inside lines intact', () => {
    const lines = ['{"t":"Grüße 🙂"}', '{"t":"日本"}'];
    expect(text(splitEvents(bytes(lines.join('\n'))))).toEqual(lines);
  });
});

const waitFor = async (check: () => Promise<boolean>, ms = 15_000) => {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
};

/** Publishes events as the sidecar batches them: JSON lines, `Pgwarden-Batch: <n>`, id `<first id>+<n>`. */
async function publishBatch(nc: NatsConnection, events: (AuditEvent | string)[], msgID?: string) {
  const lines = events.map((e) => (typeof e === 'string' ? e : JSON.stringify(e)));
  const first = events.find((e): e is AuditEvent => typeof e !== 'string')!;
  const h = headers();
  h.set('Pgwarden-Batch', String(lines.length));
  return jetstream(nc).publish(auditSubject(first), lines.join('\n'), {
    msgID: msgID ?? `${first.id}+${lines.length}`,
    headers: h,
  });
}

describe('collector consuming batched messages (real nats-server and PostgreSQL)', () => {
  let nats: TestNats;
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let collector: Collector;
  let nc: NatsConnection;

  const session = async (id: string) => (await (await fetch(`${collector.url}/api/v1/sessions/${id}`)).json()) as any;
  const metric = async (name: string) => {
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)`, 'gm');
    const body = await (await fetch(`${collector.url}/metrics`)).text();
    return [...body.matchAll(m)].reduce((n, x) => n + Number(x[1]), 0);
  };
  const consumerSettled = async () => {
    const info = await (await jetstreamManager(nc)).consumers.info(AUDIT_STREAM, 'pgwarden-collector');
    return info.num_ack_pending === 0 && info.num_pending === 0;
  };

  beforeAll(async () => {
    nats = await startNats();
    db = await createTestDatabase(inject('pg'), ROLES.superuser);
    collector = await startCollector({
      nats: { url: nats.url },
      store: { url: db.url },
      http: { port: 0 },
      logger: pino({ level: 'silent' }),
      gapGraceMs: 60_000,
    });
    await waitFor(async () => ((await (await fetch(`${collector.url}/readyz`)).json()) as any).checks?.nats === true);
    nc = await connect({ servers: nats.url });
  });
  afterAll(async () => {
    await nc?.close();
    await collector?.stop();
    await db?.drop();
    await nats?.stop();
  });

  it('stores each event of a batch on its own, mixed with single-event messages; chains verify', async () => {
    const a = makeSession({ id: 'batch-a', statements: 40, denyEvery: 7 });
    const b = makeSession({ id: 'batch-b', statements: 3 });
    for (let i = 0; i < a.length; i += 10) await publishBatch(nc, a.slice(i, i + 10));
    for (const e of b) await jetstream(nc).publish(auditSubject(e), JSON.stringify(e), { msgID: e.id });
    await waitFor(async () => (await session('batch-a')).session?.events === 42);
    await waitFor(async () => (await session('batch-b')).session?.events === 5);
    const sa = await session('batch-a');
    expect(sa.session).toMatchObject({ chain: 'ok', statements: 40, denied: 5, ended: true });
    expect(sa.events.map((e: AuditEvent) => e.id)).toEqual(a.map((e) => e.id));
    expect(sa.findings).toEqual([]);
    const stored = await collector.store.db.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM audit_events WHERE session_id = 'batch-a'",
    );
    expect(stored[0].n).toBe(42);
    await waitFor(consumerSettled);
  });

  it('a republished batch stores nothing new: same id dropped by JetStream, another id by the store', async () => {
    const c = makeSession({ id: 'batch-c', statements: 8 });
    await publishBatch(nc, c);
    await waitFor(async () => (await session('batch-c')).session?.events === 10);
    const dupBefore = await metric('pgwarden_collector_events_duplicate_total');
    // A retried publish of the same batch: the stream's duplicate window drops it.
    expect((await publishBatch(nc, c)).duplicate).toBe(true);
    // The same events batched differently (as after a sidecar restart): stored in the stream, dropped by event id.
    expect((await publishBatch(nc, c.slice(2, 7))).duplicate).toBe(false);
    await waitFor(async () => (await metric('pgwarden_collector_events_duplicate_total')) === dupBefore + 5);
    await waitFor(consumerSettled);
    const n = await collector.store.db.query<{ n: number; d: number }>(
      "SELECT count(*)::int AS n, count(DISTINCT id)::int AS d FROM audit_events WHERE session_id = 'batch-c'",
    );
    expect(n[0]).toEqual({ n: 10, d: 10 });
    expect((await session('batch-c')).session.chain).toBe('ok');
  });

  it('a batch with one malformed line stores the others, rejects that one, and is acknowledged', async () => {
    const d = makeSession({ id: 'batch-d', statements: 4 });
    const rejectedBefore = await metric('pgwarden_collector_events_rejected_total');
    const bad = '{"v":1,"type":"statement","id":"batch-d.x"';
    await publishBatch(nc, [...d.slice(0, 3), bad, ...d.slice(3)]);
    await waitFor(async () => (await session('batch-d')).session?.events === 6);
    await waitFor(async () => (await metric('pgwarden_collector_events_rejected_total')) === rejectedBefore + 1);
    const rejected = await collector.store.db.query<{ raw: string }>(
      'SELECT raw FROM audit_rejected WHERE raw LIKE $1',
      ['%batch-d.x%'],
    );
    expect(rejected.map((r) => r.raw)).toEqual([bad]);
    expect((await session('batch-d')).session.chain).toBe('ok');
    // Acknowledged once every line was stored or rejected: nothing pending, nothing redelivered.
    await waitFor(consumerSettled);
    const info = await (await jetstreamManager(nc)).consumers.info(AUDIT_STREAM, 'pgwarden-collector');
    expect(info.num_redelivered).toBe(0);
  });
});

describe('subjects and namespaces (real nats-server and PostgreSQL)', () => {
  it('rejects events whose namespace is not the one their subject names; stores the rest', async () => {
    const nats = await startNats();
    const db = await createTestDatabase(inject('pg'), ROLES.superuser);
    const collector = await startCollector({
      nats: { url: nats.url },
      store: { url: db.url },
      http: { port: 0 },
      logger: pino({ level: 'silent' }),
    });
    const nc = await connect({ servers: nats.url });
    try {
      const own = makeSession({ id: 'ns-own', statements: 1, namespace: 'team-a' });
      const forged = makeSession({ id: 'ns-forged', statements: 1, namespace: 'team-b' });
      const jsm = await jetstreamManager(nc);
      await waitFor(async () => Boolean(await jsm.streams.info(AUDIT_STREAM).catch(() => null)));
      const js = jetstream(nc);
      for (const e of own) await js.publish(auditSubject(e), JSON.stringify(e), { msgID: e.id });
      // team-b's events on team-a's subject: what a team-a NATS user could publish, were it not checked here.
      for (const e of forged)
        await js.publish('pgwarden.audit.team-a.analytics-agent', JSON.stringify(e), { msgID: e.id });
      const sessionOf = async (id: string) =>
        ((await (await fetch(`${collector.url}/api/v1/sessions/${id}`)).json()) as any).session;
      await waitFor(async () => (await sessionOf('ns-own'))?.events === own.length);
      await waitFor(
        async () =>
          (await collector.store.db.query('SELECT 1 FROM audit_rejected WHERE raw LIKE $1', ['%ns-forged%'])).length ===
          forged.length,
      );
      const reasons = await collector.store.db.query<{ reason: string }>(
        'SELECT reason FROM audit_rejected WHERE raw LIKE $1',
        ['%ns-forged%'],
      );
      expect(reasons[0].reason).toMatch(/event of namespace "team-b" arrived on the subject of namespace "team-a"/);
      expect(await sessionOf('ns-forged')).toBeUndefined();
    } finally {
      await nc.close();
      await collector.stop();
      await db.drop();
      await nats.stop();
    }
  });
});

describe('JetStreamSource lifecycle (real nats-server)', () => {
  // stop() during start-up used to wait forever: the consumer being set up when stop() ran was never stopped, so
  // the supervising loop waited on it (seen as collectors that hung in stop() right after starting).
  it('stops promptly whenever stop() comes during start-up', async () => {
    const nats = await startNats();
    try {
      const idle = { length: 0, enqueue: () => {} } as unknown as IngestQueue;
      for (const delayMs of [0, 1, 3, 5, 8, 12, 20, 30, 50, 80]) {
        const source = new JetStreamSource(idle, { url: nats.url, durable: `d${delayMs}` });
        source.start();
        await new Promise((r) => setTimeout(r, delayMs));
        const stopped = await Promise.race([
          source.close().then(() => true),
          new Promise<boolean>((r) => setTimeout(() => r(false), 5000)),
        ]);
        expect(stopped, `close() ${delayMs} ms after start()`).toBe(true);
      }
    } finally {
      await nats.stop();
    }
  }, 90_000);
});
