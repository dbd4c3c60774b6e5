import { jetstream } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { type AuditEvent, auditSubject, newChain, sealEvent } from '@pgwarden/policy';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startNats, type TestNats } from '../../test/harness/index.js';
import { ROLES } from '../../test/harness/postgres.js';
import type { Collector } from './collector.js';
import { makeSession } from './testing/audit-events.js';
import { startReadyCollector } from './testing/ready-collector.js';
import { createTestDatabase } from './testing/test-database.js';
import { waitFor } from './testing/wait-for.js';

interface Row {
  session_id: string;
  seq_from: number;
  seq_to: number;
  detail: string;
  resolved: boolean;
}

/**
 * A sidecar's `audit.gap` (cause fsync_failed) can reach the collector before the events it names: they come later
 * from a spool drained after a restart, a redelivery, another stream. Two collector replicas share one durable
 * consumer and one PostgreSQL store, and one of them restarts in between, so nothing about the declaration may live
 * in a replica's memory: the finding must settle from what the store holds.
 */
describe('a declared gap ingested before the events it names', () => {
  let nats: TestNats;
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let nc: NatsConnection;
  let sql: pg.Pool;
  const replicas: Collector[] = [];

  const replica = async () => {
    const c = await startReadyCollector(nats.url, db.url);
    replicas.push(c);
    return c;
  };

  beforeAll(async () => {
    nats = await startNats();
    db = await createTestDatabase(inject('pg'), ROLES.superuser);
    nc = await connect({ servers: nats.url });
    sql = new pg.Pool({ connectionString: db.url, max: 1 });
  });
  afterAll(async () => {
    for (const c of replicas) await c.stop().catch(() => {});
    await nc?.close();
    await sql?.end();
    await db?.drop();
    await nats?.stop();
  });

  const publish = async (events: readonly AuditEvent[]) => {
    const js = jetstream(nc);
    for (const e of events) await js.publish(auditSubject(e), JSON.stringify(e), { msgID: e.id });
  };
  const findings = async () =>
    (
      await sql.query(
        `SELECT session_id, seq_from::int, seq_to::int, detail, resolved_at IS NOT NULL AS resolved
         FROM audit_chain_findings ORDER BY id`,
      )
    ).rows as Row[];
  const stored = async (sid: string) =>
    ((await sql.query('SELECT count(*)::int AS n FROM audit_events WHERE session_id = $1', [sid])).rows[0] as any).n;

  it('resolves the finding once the named events arrive and verify, narrowing it while some are still missing', async () => {
    const a = await replica();
    await replica();
    // 8 events each (start, 6 statements, end). Of `partly`, 1..2 were delivered before the declaration; `unseen` has
    // none stored when its whole range is declared.
    const partly = makeSession({ id: 'declared-partly', statements: 6 });
    const unseen = makeSession({ id: 'declared-unseen', statements: 6 });
    await publish(partly.slice(0, 2));
    await waitFor(async () => (await stored('declared-partly')) === 2, 20_000, 'first events stored');

    const sidecarChain = newChain();
    const detail = (from: number, to: number) =>
      `sidecar may have lost events ${from}..${to} (fsync_failed: an fdatasync of its audit file or spool failed)`;
    const gap = sealEvent(
      {
        v: 1,
        type: 'audit.gap',
        time: '2026-11-30T12:40:00.000000Z',
        session: { id: 'sidecar-test-sidecar' },
        source: { instance: 'test-sidecar' },
        identity: { namespace: 'agents', groups: [] },
        policy: { name: 'analytics-agent', hash: 'sha256:0000' },
        gap: {
          dropped: 14,
          since: '2026-11-30T12:39:00.000000Z',
          until: '2026-11-30T12:40:00.000000Z',
          cause: 'fsync_failed',
          sessions: [
            { id: 'declared-partly', fromSeq: 3, toSeq: 8 },
            { id: 'declared-unseen', fromSeq: 1, toSeq: 8 },
          ],
        },
      },
      sidecarChain,
    );
    await publish([gap]);
    await waitFor(async () => (await findings()).length === 2, 20_000, 'the declared findings');
    expect(await findings()).toEqual([
      { session_id: 'declared-partly', seq_from: 3, seq_to: 8, detail: detail(3, 8), resolved: false },
      { session_id: 'declared-unseen', seq_from: 1, seq_to: 8, detail: detail(1, 8), resolved: false },
    ]);

    // One replica restarts while part of the named events arrive: 3..5 of one session, all of the other.
    await a.stop();
    await publish([...partly.slice(2, 5), ...unseen]);
    await replica();
    await waitFor(
      async () => (await stored('declared-partly')) === 5 && (await stored('declared-unseen')) === 8,
      20_000,
      'the events that arrived late',
    );
    const open = async () => (await findings()).filter((f) => !f.resolved);
    await waitFor(async () => (await open())[0]?.seq_from === 6, 20_000, 'the finding narrowed');
    // Still missing: 6..8, as the sidecar declared them; the declarations stay, resolved. (Replicas may take 3..5 in
    // more than one batch: a finding narrowed on the way, e.g. to 4..8, shows in between, resolved too.)
    expect(await open()).toEqual([
      { session_id: 'declared-partly', seq_from: 6, seq_to: 8, detail: detail(3, 8), resolved: false },
    ]);
    const [first, second] = await findings();
    expect([first, second]).toEqual([
      { session_id: 'declared-partly', seq_from: 3, seq_to: 8, detail: detail(3, 8), resolved: true },
      { session_id: 'declared-unseen', seq_from: 1, seq_to: 8, detail: detail(1, 8), resolved: true },
    ]);

    await publish(partly.slice(5));
    await waitFor(async () => (await stored('declared-partly')) === 8, 20_000, 'the last events');
    await waitFor(async () => (await open()).length === 0, 20_000, 'every finding resolved');
    // Nothing deleted: the history shows what was declared, what was missing after the first arrivals, and that
    // all of it healed; the sessions verify whole.
    const history = await findings();
    expect(history.length).toBeGreaterThanOrEqual(3);
    expect(history.filter((f) => f.session_id === 'declared-partly' && f.seq_from === 6)).toEqual([
      { session_id: 'declared-partly', seq_from: 6, seq_to: 8, detail: detail(3, 8), resolved: true },
    ]);
    const sessions = (
      await sql.query(
        `SELECT session_id, verified_seq::int, status FROM audit_sessions WHERE session_id LIKE 'declared-%' ORDER BY 1`,
      )
    ).rows;
    expect(sessions).toEqual([
      { session_id: 'declared-partly', verified_seq: 8, status: 'ok' },
      { session_id: 'declared-unseen', verified_seq: 8, status: 'ok' },
    ]);
    const r = await fetch(`${replicas.at(-1)!.url}/api/v1/findings?state=open`);
    expect(((await r.json()) as any).items).toEqual([]);
  }, 90_000);
});
