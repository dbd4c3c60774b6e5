import { execFile } from 'node:child_process';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { type AuditEvent, type AuditGap, auditSubject, newChain, sealEvent } from '@pgwarden/policy';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { BIN } from '../../cli/src/testing/cli-process.js';
import type { Collector } from '../../collector/src/collector.js';
import { startReadyCollector } from '../../collector/src/testing/ready-collector.js';
import { createTestDatabase } from '../../collector/src/testing/test-database.js';
import { waitFor } from '../../collector/src/testing/wait-for.js';
import { startNats, type TestNats } from '../harness/index.js';
import { ROLES } from '../harness/postgres.js';

interface Finding {
  sessionId: string;
  namespace: string | null;
  kind: string;
  seqFrom: number;
  seqTo: number;
  detail: string;
  resolvedAt: string | null;
}

const SIDECAR_CHAIN = 'sidecar-unattributed-test';
const TORN_DETAIL =
  'sidecar gap-sidecar-1 (pod agents/analytics-7f9c) of policy analytics-agent may have lost events of sessions it ' +
  'did not name between 2026-11-30T12:39:00.000000Z and 2026-11-30T12:40:00.000000Z (fsync_failed: an fdatasync of ' +
  'its audit file or spool failed; how many is unknown): which events is unknown, so no chain verification can ' +
  'resolve this';

/**
 * A sidecar's `audit.gap` that names no sessions (its at-risk record was torn: `sessions: []`, `truncated`) or not
 * all of them (a cut list) declares losses no session's chain can show. It must still reach an auditor: one open
 * finding per declaring event, on the sidecar's own chain, in the store (so replicas and restarts agree), never
 * resolved by the chain verifying, and the same finding once however often the event is delivered.
 */
describe('a declared gap of unknown sessions', () => {
  let nats: TestNats;
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let nc: NatsConnection;
  const replicas: Collector[] = [];
  const chain = newChain();

  const replica = async () => {
    // As `pgwarden collector` runs: findings also become audit.finding events in its own chain.
    const c = await startReadyCollector(nats.url, db.url, { readAudit: {} });
    replicas.push(c);
    return c;
  };

  beforeAll(async () => {
    nats = await startNats();
    db = await createTestDatabase(inject('pg'), ROLES.superuser);
    nc = await connect({ servers: nats.url });
  });
  afterAll(async () => {
    for (const c of replicas) await c.stop().catch(() => {});
    await nc?.close();
    await db?.drop();
    await nats?.stop();
  });

  /** An event of the sidecar's own chain, as its recorder seals it. */
  const instanceEvent = (
    type: 'audit.gap' | 'policy.loaded',
    time: string,
    gap?: AuditGap,
    on = { id: SIDECAR_CHAIN, chain },
  ): AuditEvent =>
    sealEvent(
      {
        v: 1,
        type,
        time,
        session: { id: on.id },
        source: { instance: 'gap-sidecar-1', pod: 'analytics-7f9c', namespace: 'agents' },
        identity: { namespace: 'agents', serviceAccount: 'analytics', groups: [] },
        policy: { name: 'analytics-agent', hash: 'sha256:0000' },
        ...(gap ? { gap } : {}),
      },
      on.chain,
    );
  /** `again`: a second copy on the stream (another msgID), as a sidecar's spool re-sending it would put there. */
  const publish = async (events: readonly AuditEvent[], again = false) => {
    const js = jetstream(nc);
    for (const e of events)
      await js.publish(auditSubject(e), JSON.stringify(e), { msgID: again ? `${e.id}-again` : e.id });
  };
  const findings = async (c: Collector, query = 'state=all'): Promise<Finding[]> => {
    const r = await fetch(`${c.url}/api/v1/findings?${query}`);
    expect(r.status).toBe(200);
    return ((await r.json()) as { items: Finding[] }).items.map(
      ({ sessionId, namespace, kind, seqFrom, seqTo, detail, resolvedAt }) => ({
        sessionId,
        namespace,
        kind,
        seqFrom,
        seqTo,
        detail,
        resolvedAt,
      }),
    );
  };
  const unattributed = (c: Collector) => findings(c, 'state=all&kind=audit.gap.unattributed');
  const session = async (c: Collector, sid: string) => {
    const r = await fetch(`${c.url}/api/v1/sessions/${encodeURIComponent(sid)}`);
    return r.status === 200
      ? ((await r.json()) as { session: { verifiedSeq: number }; events: unknown[]; findings: Finding[] })
      : undefined;
  };
  const stored = async (c: Collector, sid: string) => (await session(c, sid))?.events.length ?? 0;

  it('is one open finding on the sidecar, kept through redelivery, a restart and its chain verifying on', async () => {
    const a = await replica();
    const b = await replica();

    // A torn at-risk record (sidecar/src/audit/at-risk-record.ts) restored at start: nothing named, list cut.
    const torn = instanceEvent('audit.gap', '2026-11-30T12:40:00.000000Z', {
      dropped: 0,
      since: '2026-11-30T12:39:00.000000Z',
      until: '2026-11-30T12:40:00.000000Z',
      cause: 'fsync_failed',
      sessions: [],
      truncated: true,
    });
    const loaded = instanceEvent('policy.loaded', '2026-11-30T12:40:01.000000Z');
    // Drops past the tracker's cap of sessions: one named, the rest not.
    const cut = instanceEvent('audit.gap', '2026-11-30T12:41:00.000000Z', {
      dropped: 9,
      since: '2026-11-30T12:40:30.000000Z',
      until: '2026-11-30T12:41:00.000000Z',
      cause: 'spool_full',
      sessions: [{ id: 'cut-list-named', fromSeq: 1, toSeq: 4 }],
      truncated: true,
    });
    await publish([torn, loaded, cut]);
    await waitFor(async () => (await unattributed(b)).length === 2, 20_000, 'the unattributed findings');
    const first = await unattributed(a);
    expect(first).toEqual([
      {
        sessionId: SIDECAR_CHAIN,
        namespace: 'agents',
        kind: 'audit.gap.unattributed',
        seqFrom: 3,
        seqTo: 3,
        detail:
          'sidecar gap-sidecar-1 (pod agents/analytics-7f9c) of policy analytics-agent may have lost events of ' +
          'sessions beyond the 1 it named (its list was cut) between 2026-11-30T12:40:30.000000Z and ' +
          '2026-11-30T12:41:00.000000Z (spool_full; 9 event(s) in all): which events is unknown, so no chain ' +
          'verification can resolve this',
        resolvedAt: null,
      },
      {
        sessionId: SIDECAR_CHAIN,
        namespace: 'agents',
        kind: 'audit.gap.unattributed',
        seqFrom: 1,
        seqTo: 1,
        detail: TORN_DETAIL,
        resolvedAt: null,
      },
    ]);
    // The named part is the usual declared finding on its session.
    expect((await findings(a, 'state=open&kind=audit.gap')).map((f) => [f.sessionId, f.seqFrom, f.seqTo])).toEqual([
      ['cut-list-named', 1, 4],
    ]);
    // Namespace-filtered like any other finding.
    expect(await findings(a, 'state=all&kind=audit.gap.unattributed&namespace=other')).toEqual([]);

    // Redelivered (a second copy on the stream), while one replica restarts; then the sidecar's chain goes on and
    // verifies past both declarations.
    await a.stop();
    await publish([torn, cut], true);
    const c = await replica();
    const more = [instanceEvent('policy.loaded', '2026-11-30T12:42:00.000000Z')];
    await publish(more);
    await waitFor(async () => (await stored(c, SIDECAR_CHAIN)) === 4, 20_000, 'the chain going on');
    // Every copy handled: nothing pending or unacknowledged on the stream's consumers.
    const jsm = await jetstreamManager(nc);
    await waitFor(
      async () => {
        for await (const ci of jsm.consumers.list('PGWARDEN_AUDIT'))
          if (ci.num_pending > 0 || ci.num_ack_pending > 0) return false;
        return true;
      },
      20_000,
      'every copy acknowledged',
    );
    expect((await session(c, SIDECAR_CHAIN))?.session.verifiedSeq).toBe(4);
    expect(await unattributed(c)).toEqual(first);

    // Each became one audit.finding event in the collector's own chain (for the SIEM), not one per copy.
    const findingEvents = async () => {
      const r = await fetch(`${c.url}/api/v1/events?type=audit.finding&limit=100`);
      const items = ((await r.json()) as { items: { finding?: { kind: string; session: string; seqFrom: number } }[] })
        .items;
      return items
        .filter((e) => e.finding?.kind === 'audit.gap.unattributed')
        .map((e) => [e.finding?.session, e.finding?.seqFrom])
        .sort();
    };
    await waitFor(async () => (await findingEvents()).length >= 2, 20_000, 'the audit.finding events');
    expect(await findingEvents()).toEqual([
      [SIDECAR_CHAIN, 1],
      [SIDECAR_CHAIN, 3],
    ]);

    // A restart of every replica: the findings are the store's.
    for (const r of [b, c]) await r.stop();
    const d = await replica();
    expect(await unattributed(d)).toEqual(first);

    // Listed by the CLI like other findings (exit 1: it listed some). Not spawnSync: the collector answering it runs
    // in this process.
    const listed = await new Promise<{ status: number | null; stdout: string }>((resolve) =>
      execFile(BIN, ['audit', 'findings', '--collector', d.url, '--kind', 'audit.gap.unattributed'], (err, stdout) =>
        resolve({ status: err ? ((err as { code?: number }).code ?? null) : 0, stdout }),
      ),
    );
    expect(listed.status).toBe(1);
    const lines = listed.stdout.trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(
      new RegExp(`^#\\d+ \\S+ audit\\.gap\\.unattributed session ${SIDECAR_CHAIN} \\[agents\\] seq 1: `),
    );
    expect(lines[1]).toContain(TORN_DETAIL);
  }, 120_000);

  it('a declaration naming every session it lost stays without one', async () => {
    const c = replicas.at(-1) ?? (await replica());
    const other = { id: 'sidecar-names-all', chain: newChain() };
    const gap = instanceEvent(
      'audit.gap',
      '2026-11-30T12:50:00.000000Z',
      {
        dropped: 2,
        since: '2026-11-30T12:49:00.000000Z',
        until: '2026-11-30T12:50:00.000000Z',
        cause: 'queue_full',
        sessions: [{ id: 'fully-named', fromSeq: 1, toSeq: 2 }],
      },
      other,
    );
    await publish([gap]);
    await waitFor(async () => (await stored(c, other.id)) === 1, 20_000, 'the declaration');
    await waitFor(async () => (await findings(c, 'session=fully-named')).length === 1, 20_000, 'its finding');
    expect(await findings(c, `session=${other.id}`)).toEqual([]);
  }, 60_000);
});
