import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DiscardPolicy, jetstreamManager, StorageType } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import {
  type AuditEvent,
  auditEventSchema,
  CONTROL_STREAM,
  CONTROL_SUBJECTS,
  type ControlMessage,
  controlSubject,
  decisionVerifyKey,
  parseControlMessage,
  suspensionSubject,
  terminateSubject,
  verifyControl,
} from '@pgwarden/policy';
import { Ajv } from 'ajv';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNats } from '../../../test/harness/index.js';
import { sha256Hex } from '../auth/token-file.js';
import type { Collector, CollectorOptions } from '../collector.js';
import {
  type ApprovalsFixture,
  approversYaml,
  startApprovalsFixture,
  untilApproverRoutesServe,
  withoutApproverRoutes,
} from '../testing/approvals-fixture.js';
import { makeControlApplied, makeSession } from '../testing/audit-events.js';
import { waitFor } from '../testing/wait-for.js';
import { ensureControlStream } from './control-stream.js';

const ALICE = 'alice-token-51c0e2aa';
/** An approver limited to namespace billing. */
const SAM = 'sam-token-8d2f9b13';
/** A reader: may read the trail, may not act on it. */
const RITA = 'rita-token-0f4e7c21';

describe('live control through the collector (real nats-server and PostgreSQL)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-control-'));
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const verifyKey = decisionVerifyKey(String(publicKey.export({ type: 'spki', format: 'pem' })));
  let fx: ApprovalsFixture;
  let collector: Collector;
  let options: Partial<CollectorOptions>;
  let sql: pg.Client;
  const open = randomUUID();
  const ended = randomUUID();
  const billing = randomUUID();

  const api = async (c: Collector, path: string, init: { token?: string; method?: string; body?: unknown } = {}) => {
    const r = await fetch(`${c.url}${path}`, {
      method: init.method ?? 'POST',
      headers: init.token ? { authorization: `Bearer ${init.token}` } : {},
      body: init.body === undefined ? undefined : typeof init.body === 'string' ? init.body : JSON.stringify(init.body),
    });
    return { status: r.status, body: (await r.json()) as any };
  };
  const terminate = (id: string, token: string, body: unknown = { reason: 'runaway loop' }) =>
    api(collector, `/api/v1/sessions/${id}/terminate`, { token, body });
  const suspension = (
    c: Collector,
    policy: string,
    kind: 'suspend' | 'resume',
    token = ALICE,
    reason = 'incident 42',
  ) => api(c, `/api/v1/policies/${policy}/${kind}`, { token, body: { reason } });
  const suspended = async (c: Collector, token = ALICE) => {
    const r = await api(c, '/api/v1/suspensions', { token, method: 'GET' });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r.body.suspensions as any[];
  };
  const metric = async (c: Collector, kind: string, outcome: string) => {
    const text = await (await fetch(`${c.url}/metrics`)).text();
    const m = new RegExp(
      `^pgwarden_collector_control_actions_total\\{kind="${kind}",outcome="${outcome}"\\} (\\d+)`,
      'm',
    );
    return Number(m.exec(text)?.[1] ?? 0);
  };
  const messagesInStream = async () =>
    (await (await jetstreamManager(fx.nc)).streams.info(CONTROL_STREAM)).state.messages;
  /**
   * Subscribes to `subject` as a sidecar does and resolves once the server has the subscription (the flush's
   * answer), with the next message still to come in `data`: awaited before the action that publishes, or a message
   * published by the collector's own connection can beat the subscription to the server and be missed (it was, now
   * and then, under load: a 90 s hang).
   */
  const nextOn = async (subject: string) => {
    const sub = fx.nc.subscribe(subject, { max: 1 });
    await fx.nc.flush();
    const data = (async () => {
      for await (const m of sub) return m.data;
    })();
    return { data };
  };
  const startControl = async () => {
    const c = await fx.start(options);
    await untilApproverRoutesServe(c, ALICE);
    return c;
  };

  beforeAll(async () => {
    fx = await startApprovalsFixture(
      `${approversYaml({ alice: { token: ALICE, groups: ['dba'] } })}- {name: sam, tokenSha256: ${sha256Hex(SAM)}, namespaces: [billing]}\n`,
      ALICE,
    );
    const signingKeyFile = join(dir, 'signing.pem');
    writeFileSync(signingKeyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const readersFile = join(dir, 'readers.yaml');
    writeFileSync(readersFile, approversYaml({ rita: { token: RITA } }));
    options = {
      approvals: { approversFile: fx.approversFile, signingKeyFile },
      read: { readersFile },
      readAudit: { repeatWindowMs: 0 },
    };
    await fx.collector.stop();
    collector = await startControl();
    for (const e of [
      ...makeSession({ id: open, statements: 2, end: false }),
      ...makeSession({ id: ended, statements: 1 }),
      ...makeSession({ id: billing, statements: 1, namespace: 'billing', end: false }),
    ])
      expect(await collector.ingest(e)).toBe('stored');
    sql = new pg.Client({ connectionString: fx.db.url });
    await sql.connect();
  });
  afterAll(async () => {
    await sql?.end();
    await collector?.stop();
    await fx?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('creates PGWARDEN_CONTROL: every control subject, file storage, the last message per subject kept for ever', async () => {
    const { config } = await (await jetstreamManager(fx.nc)).streams.info(CONTROL_STREAM);
    expect(config).toMatchObject({
      subjects: [CONTROL_SUBJECTS],
      storage: StorageType.File,
      max_msgs_per_subject: 1,
      max_age: 0,
      allow_direct: true,
      discard: DiscardPolicy.Old,
    });
  });

  it('terminates an open session: a signed message on its subject, which the sidecar’s parser and key accept', async () => {
    const received = (await nextOn(terminateSubject(open))).data;
    const res = await terminate(open, ALICE);
    expect(res.status).toBe(202);
    const m = parseControlMessage((await received) as Uint8Array) as ControlMessage;
    expect(m).toEqual(res.body.control);
    expect(m).toMatchObject({ v: 1, kind: 'terminate', session: open, by: 'alice', reason: 'runaway loop' });
    expect(Date.parse(m.at)).toBeGreaterThan(Date.now() - 60_000);
    expect(controlSubject(m)).toBe(terminateSubject(open));
    expect(verifyControl(m, [verifyKey])).toBe(true);
    // Signed over every field: the same signature does not pass for another session.
    expect(verifyControl({ ...m, session: randomUUID() }, [verifyKey])).toBe(false);
    // A sidecar that reconnects reads it back from the stream, the subject's only message.
    const jsm = await jetstreamManager(fx.nc);
    const stored = await jsm.streams.getMessage(CONTROL_STREAM, { last_by_subj: terminateSubject(open) });
    expect(parseControlMessage(stored?.data as Uint8Array)).toEqual(m);
    expect(await metric(collector, 'terminate', 'published')).toBe(1);
  });

  it('refuses what it may not publish, and publishes none of it', async () => {
    const before = await messagesInStream();
    const refusedBefore = await metric(collector, 'terminate', 'refused');
    const expectRefused = async (p: Promise<{ status: number; body: any }>, status: number, code: string) => {
      const r = await p;
      expect([r.status, r.body.error?.code], JSON.stringify(r.body)).toEqual([status, code]);
    };
    await expectRefused(terminate(randomUUID(), ALICE), 404, 'not_found');
    await expectRefused(terminate('not-a-session', ALICE), 404, 'not_found');
    await expectRefused(terminate(ended, ALICE), 409, 'session_ended');
    for (const body of [
      {},
      { reason: '' },
      { reason: '   ' },
      { reason: 'x'.repeat(1025) },
      { reason: 7 },
      { reason: 'ok', by: 'mallory' },
      'not json',
      [],
    ])
      await expectRefused(
        terminate(open, ALICE, body),
        400,
        typeof body === 'string' ? 'bad_json' : expect.any(String),
      );
    await expectRefused(terminate(open, RITA), 401, 'unauthorized');
    await expectRefused(terminate(open, 'guessed'), 401, 'unauthorized');
    // sam may act in billing only: elsewhere as if the session or policy did not exist.
    await expectRefused(terminate(open, SAM), 404, 'not_found');
    await expectRefused(suspension(collector, 'agents/analytics-agent', 'suspend', SAM), 404, 'not_found');
    await expectRefused(suspension(collector, '_/local-policy', 'suspend', SAM), 404, 'not_found');
    await expectRefused(suspension(collector, 'Agents/x', 'suspend'), 400, 'bad_policy');
    await expectRefused(suspension(collector, 'agents/a..b', 'suspend'), 400, 'bad_policy');
    await expectRefused(suspension(collector, 'agents/x', 'suspend', ALICE, ''), 400, 'bad_reason');
    await expectRefused(
      api(collector, `/api/v1/sessions/${open}/terminate`, { method: 'GET', token: ALICE }),
      405,
      'method_not_allowed',
    );
    expect(await messagesInStream()).toBe(before);
    expect(await metric(collector, 'terminate', 'refused')).toBe(refusedBefore + 15);

    // The same approver may act in billing.
    const inBilling = await terminate(billing, SAM, { reason: 'billing agent stuck' });
    expect([inBilling.status, inBilling.body.control.by]).toEqual([202, 'sam']);
  });

  // Two more collector starts: under a full `make test` on two cores each can take many seconds.
  it('suspends and resumes policies; every replica, and a restarted collector, lists the same suspensions', async () => {
    const received = (await nextOn(suspensionSubject({ namespace: 'agents', name: 'analytics-agent' }))).data;
    const res = await suspension(collector, 'agents/analytics-agent', 'suspend');
    expect(res.status).toBe(202);
    const m = parseControlMessage((await received) as Uint8Array) as ControlMessage;
    expect(m).toEqual(res.body.control);
    expect(m).toMatchObject({ kind: 'suspend', policy: { namespace: 'agents', name: 'analytics-agent' } });
    expect(verifyControl(m, [verifyKey])).toBe(true);
    expect((await suspension(collector, '_/local-policy', 'suspend')).status).toBe(202);
    expect((await suspension(collector, 'billing/invoices.v2', 'suspend', SAM, 'double charges')).status).toBe(202);
    // Resuming what is not suspended is a state like any other.
    expect((await suspension(collector, 'agents/never-suspended', 'resume')).status).toBe(202);

    const all = await suspended(collector);
    expect(all).toEqual([
      {
        policy: { namespace: '_', name: 'local-policy' },
        by: 'alice',
        reason: 'incident 42',
        at: expect.any(String),
        id: expect.any(String),
        signed: true,
      },
      {
        policy: { namespace: 'agents', name: 'analytics-agent' },
        by: 'alice',
        reason: 'incident 42',
        at: m.at,
        id: m.id,
        signed: true,
      },
      {
        policy: { namespace: 'billing', name: 'invoices.v2' },
        by: 'sam',
        reason: 'double charges',
        at: expect.any(String),
        id: expect.any(String),
        signed: true,
      },
    ]);
    expect((await suspended(collector, SAM)).map((s) => s.policy.name)).toEqual(['invoices.v2']);

    await collector.stop();
    collector = await startControl();
    expect(await suspended(collector)).toEqual(all);
    const replica = await startControl();
    try {
      expect(await suspended(replica)).toEqual(all);
      expect((await suspension(replica, 'agents/analytics-agent', 'resume', ALICE, 'incident closed')).status).toBe(
        202,
      );
      expect((await suspended(collector)).map((s) => s.policy.name)).toEqual(['local-policy', 'invoices.v2']);
    } finally {
      await replica.stop();
    }
    // One message per subject: the resume replaced the suspend.
    const info = await (await jetstreamManager(fx.nc)).streams.info(CONTROL_STREAM, {
      subjects_filter: suspensionSubject({ namespace: 'agents', name: 'analytics-agent' }),
    });
    expect(Object.values(info.state.subjects ?? {})).toEqual([1]);
  }, 90_000);

  it('records every control request in the collector’s chain as an audit.read', async () => {
    const reads = async () =>
      (
        await sql.query<{ event: string }>('SELECT event FROM audit_events WHERE session_id = $1 ORDER BY seq', [
          collector.readAuditSession,
        ])
      ).rows
        .map((r) => JSON.parse(r.event) as AuditEvent)
        .filter((e) => e.type === 'audit.read')
        .map((e) => e.read);
    const before = (await reads()).length;
    expect((await terminate(open, ALICE, { reason: 'again' })).status).toBe(202);
    expect((await terminate(open, 'guessed')).status).toBe(401);
    expect((await suspension(collector, 'billing/invoices.v2', 'resume', SAM)).status).toBe(202);
    await suspended(collector, SAM);
    expect((await reads()).slice(before)).toEqual([
      // Who acted on what, and why (the reason is in the chain once the request got as far as reading it).
      { reader: 'alice', route: `/api/v1/sessions/${open}/terminate`, status: 202, reason: 'again' },
      { reader: 'unknown', route: `/api/v1/sessions/${open}/terminate`, status: 401 },
      {
        reader: 'sam',
        route: '/api/v1/policies/billing/invoices.v2/resume',
        namespaces: ['billing'],
        status: 202,
        reason: 'incident 42',
      },
      { reader: 'sam', route: '/api/v1/suspensions', namespaces: ['billing'], status: 200, items: 0 },
    ]);
  });

  it('stores and verifies a sidecar’s control.applied events; an applied terminate leaves the stream', async () => {
    // A terminate waiting in the stream for the session's sidecar (published through the API).
    expect((await terminate(open, ALICE, { reason: 'to be applied' })).status).toBe(202);
    const jsm = await jetstreamManager(fx.nc);
    const waiting = () => jsm.streams.getMessage(CONTROL_STREAM, { last_by_subj: terminateSubject(open) });
    expect((await waiting())?.subject).toBe(terminateSubject(open));
    const events = makeControlApplied('sc-7', [
      {
        kind: 'terminate',
        id: randomUUID(),
        by: 'alice',
        reason: 'runaway loop',
        at: new Date().toISOString(),
        session: open,
        signed: true,
        sessionsEnded: 1,
      },
    ]);
    const validate = new Ajv({ allErrors: true }).compile(auditEventSchema);
    for (const e of events) {
      expect(validate(e), JSON.stringify(validate.errors)).toBe(true);
      expect(await collector.ingest(e)).toBe('stored');
    }
    const [report] = await collector.verify(['sidecar-sc-7']);
    expect(report.ok).toBe(true);
    // Its sidecar reported it: the message is purged (the stream would keep one per terminated session otherwise).
    // (No message: null, or a 404 error, depending on the client's version.)
    await waitFor(() =>
      waiting().then(
        (m) => m === null,
        () => true,
      ),
    );
    const shown = await api(collector, '/api/v1/sessions/sidecar-sc-7', { token: RITA, method: 'GET' });
    expect(shown.body.events.map((e: AuditEvent) => [e.type, e.control])).toEqual([
      ['control.applied', events[0].control],
    ]);
  });

  it('tells approvers which sidecars reported applying an action (GET /api/v1/control/{id})', async () => {
    const id = randomUUID();
    // An hour ago, on a whole second: without `since` the route looks back one day from now.
    const appliedMs = Math.floor(Date.now() / 1000) * 1000 - 3_600_000;
    const control = {
      kind: 'suspend' as const,
      id,
      by: 'alice',
      reason: 'incident 42',
      at: new Date(appliedMs - 1000).toISOString(),
      policy: { namespace: 'agents', name: 'analytics-agent' },
      signed: true,
      sessionsEnded: 2,
    };
    for (const e of [
      ...makeControlApplied('sc-8', [control], appliedMs),
      ...makeControlApplied('sc-9', [control], appliedMs),
    ])
      expect(await collector.ingest(e)).toBe('stored');
    const status = (path: string, token = ALICE) => api(collector, path, { token, method: 'GET' });
    const r = await status(`/api/v1/control/${id}?since=${control.at}`);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toEqual({
      id,
      applied: ['sc-8', 'sc-9'].map((instance) => ({
        time: `${new Date(appliedMs).toISOString().slice(0, -1)}000Z`,
        source: { instance, namespace: 'agents' },
        kind: 'suspend',
        sessionsEnded: 2,
        signed: true,
      })),
    });
    // Without `since`: the last day; after the reports: none; another action, or another namespace's approver: none.
    expect((await status(`/api/v1/control/${id}`)).body.applied).toHaveLength(2);
    const after = new Date(appliedMs + 3_600_000).toISOString();
    expect((await status(`/api/v1/control/${id}?since=${after}`)).body.applied).toEqual([]);
    expect((await status(`/api/v1/control/${randomUUID()}`)).body.applied).toEqual([]);
    expect((await status(`/api/v1/control/${id}`, SAM)).body.applied).toEqual([]);
    expect((await status('/api/v1/control/not-an-id')).status).toBe(404);
    expect((await status(`/api/v1/control/${id}?since=yesterday`)).status).toBe(400);
    expect((await status(`/api/v1/control/${id}`, RITA)).status).toBe(401);
  });

  // Last: it stops nats-server.
  it('answers 503 unavailable while NATS is down, counts it, and publishes again once NATS is back', async () => {
    const before = await metric(collector, 'suspend', 'unavailable');
    await fx.nats.kill();
    try {
      const down = await suspension(collector, 'agents/analytics-agent', 'suspend');
      expect([down.status, down.body.error.code]).toEqual([503, 'unavailable']);
      const list = await api(collector, '/api/v1/suspensions', { token: ALICE, method: 'GET' });
      expect([list.status, list.body.error.code]).toEqual([503, 'unavailable']);
      expect(await metric(collector, 'suspend', 'unavailable')).toBe(before + 1);
    } finally {
      await fx.nats.start();
    }
    await waitFor(
      async () => (await suspension(collector, 'agents/analytics-agent', 'suspend')).status === 202,
      30_000,
    );
    expect((await suspended(collector)).map((s) => s.policy.name)).toContain('analytics-agent');
  }, 60_000);
});

describe('control routes on a collector that cannot serve them', () => {
  it('answers 501 without an approvers file (even to a token) and without NATS', () =>
    withoutApproverRoutes(approversYaml({ alice: { token: ALICE } }), async ({ withoutFile, withoutNats }) => {
      const post = (c: Collector, path: string) =>
        fetch(`${c.url}${path}`, {
          method: 'POST',
          headers: { authorization: `Bearer ${ALICE}` },
          body: '{"reason":"r"}',
        }).then(async (r) => [r.status, ((await r.json()) as any).error.code]);
      expect(await post(withoutFile, `/api/v1/sessions/${randomUUID()}/terminate`)).toEqual([501, 'no_approvers']);
      expect(await post(withoutFile, '/api/v1/policies/agents/x/suspend')).toEqual([501, 'no_approvers']);
      expect(await post(withoutNats, '/api/v1/policies/agents/x/resume')).toEqual([501, 'control_disabled']);
      const list = await fetch(`${withoutNats.url}/api/v1/suspensions`, {
        headers: { authorization: `Bearer ${ALICE}` },
      });
      expect(list.status).toBe(501);
    }));

  it('brings a control stream created otherwise to one message per subject, kept for ever, direct get allowed', async () => {
    const nats = await startNats();
    const nc = await connect({ servers: nats.url });
    try {
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({
        name: CONTROL_STREAM,
        subjects: [CONTROL_SUBJECTS],
        storage: StorageType.File,
        max_msgs_per_subject: 10,
        max_age: 3_600_000_000_000,
      });
      await ensureControlStream(jsm);
      expect((await jsm.streams.info(CONTROL_STREAM)).config).toMatchObject({
        subjects: [CONTROL_SUBJECTS],
        max_msgs_per_subject: 1,
        max_age: 0,
        allow_direct: true,
        discard: DiscardPolicy.Old,
      });
    } finally {
      await nc.close();
      await nats.stop();
    }
  });
});
