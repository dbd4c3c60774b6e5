import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import {
  APPROVALS_STREAM,
  type ApprovalRequestMessage,
  approvalSubject,
  decisionVerifyKey,
  grantDurationMs,
  parseApprovalDecision,
  parseApprovalRevoked,
  sidecarApprovalSubject,
  verifyDecision,
  verifyRevocation,
} from '@pgwarden/policy';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNats, type TestNats } from '../../../test/harness/index.js';
import { sha256Hex } from '../auth/token-file.js';
import { type Collector, type CollectorOptions, startCollector } from '../collector.js';
import { approvalClosed, approvalRequest } from '../testing/approval-messages.js';
import {
  type ApprovalsFixture,
  approversYaml as fixtureApprovers,
  startApprovalsFixture,
  withoutApproverRoutes,
} from '../testing/approvals-fixture.js';
import { ensureApprovalsStream } from './approval-queue.js';

const TOKENS = { alice: 'tok-alice-0123456789', bob: 'tok-bob-0123456789', mallory: 'tok-mallory', ana: 'tok-ana' };

/**
 * Approvers (all in group dba) who are, or may be, the requester under another spelling or identity: the fixture's
 * requests come from user `ana`, service account agents/analytics.
 */
const LOOKALIKE = {
  upper: { name: 'ANA', token: 'tok-upper-ana' },
  cyrillic: { name: '\u0430na', token: 'tok-cyrillic-ana' },
  email: { name: 'ana@example.com', token: 'tok-email-ana' },
  sub: { name: 'dora', token: 'tok-dora', oidc: '[{issuer: "https://idp.example", subject: 00u-ana}]' },
  otherIssuer: { name: 'otto', token: 'tok-otto', oidc: '[{issuer: "https://other.example", subject: 00u-ana}]' },
  serviceAccount: { name: 'sam', token: 'tok-sam', serviceAccounts: '[agents/analytics]' },
  someoneElse: {
    name: 'bea',
    token: 'tok-bea',
    oidc: '[{issuer: "https://idp.example", subject: 00u-bea}]',
    serviceAccounts: '[agents/reporting]',
  },
};

/** alice (group dba) and bob (named in the requests) may approve; mallory may not; ana is the agent's own user. */
const approversYaml = (alice = TOKENS.alice) =>
  fixtureApprovers({
    alice: { token: alice, groups: ['dba'] },
    bob: { token: TOKENS.bob },
    mallory: { token: TOKENS.mallory, groups: ['interns'] },
    ana: { token: TOKENS.ana, groups: ['dba'] },
  }) +
  Object.values(LOOKALIKE)
    .map(
      (a: { name: string; token: string; oidc?: string; serviceAccounts?: string }) =>
        `- {name: "${a.name}", groups: [dba], tokenSha256: ${sha256Hex(a.token)}` +
        `${a.oidc ? `, oidc: ${a.oidc}` : ''}${a.serviceAccounts ? `, serviceAccounts: ${a.serviceAccounts}` : ''}}\n`,
    )
    .join('');

const waitFor = async (check: () => Promise<boolean>, ms = 15_000) => {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
};

describe('approval queue (real nats-server and PostgreSQL)', () => {
  let fx: ApprovalsFixture;
  let _nats: TestNats;
  let collector: Collector;
  let nc: NatsConnection;
  let approversFile: string;
  const start = (over: Partial<CollectorOptions> = {}) => fx.start(over);
  const api = async (c: Collector, path: string, init: { token?: string; method?: string; body?: unknown } = {}) => {
    const r = await fetch(`${c.url}${path}`, {
      method: init.method ?? 'GET',
      headers: init.token ? { authorization: `Bearer ${init.token}` } : {},
      body: init.body === undefined ? undefined : typeof init.body === 'string' ? init.body : JSON.stringify(init.body),
    });
    return { status: r.status, headers: r.headers, body: (await r.json()) as any };
  };
  const decide = (c: Collector, id: string, token: string, body: unknown) =>
    api(c, `/api/v1/approvals/${id}`, { method: 'POST', token, body });
  const stateOf = async (c: Collector, id: string) =>
    (await api(c, `/api/v1/approvals/${id}`, { token: TOKENS.bob })).body.state as string | undefined;
  /** Publishes as the sidecar does: into the stream, acknowledged. */
  const publish = async (kind: 'request' | 'decision' | 'closed' | 'revoked', msg: { id: string }) =>
    jetstream(nc).publish(approvalSubject(kind, msg.id), JSON.stringify(msg));
  const held = async (over: Partial<ApprovalRequestMessage> = {}) => {
    const r = approvalRequest(over);
    await publish('request', r);
    await waitFor(async () => (await stateOf(collector, r.id)) !== undefined);
    return r;
  };
  const metric = async (c: Collector, re: RegExp) => {
    const m = re.exec(await (await fetch(`${c.url}/metrics`)).text());
    return m ? Number(m[1]) : undefined;
  };
  const decisionsInStream = async (id: string) => {
    const info = await (await jetstreamManager(nc)).streams.info(APPROVALS_STREAM, {
      subjects_filter: approvalSubject('decision', id),
    });
    return info.state.subjects?.[approvalSubject('decision', id)] ?? 0;
  };

  beforeAll(async () => {
    fx = await startApprovalsFixture(approversYaml(), TOKENS.alice);
    ({ _nats, collector, nc, approversFile } = fx);
  });
  afterAll(async () => {
    // A test may have replaced the fixture's collector with one of its own.
    if (collector !== fx?.collector) await collector?.stop();
    await fx?.stop();
  });

  it('shows a held statement as pending, publishes an approval to the sidecar, and follows it to approved', async () => {
    const r = await held();
    const list = await api(collector, '/api/v1/approvals', { token: TOKENS.bob });
    expect(list.status).toBe(200);
    expect(list.body.approvals).toEqual([{ id: r.id, state: 'pending', request: r }]);
    expect(await metric(collector, /^pgwarden_collector_approvals_pending (\d+)/m)).toBe(1);

    // The sidecar listens on the plain subject, not the stream.
    const sub = nc.subscribe(approvalSubject('decision', r.id), { max: 1 });
    const received = (async () => {
      for await (const m of sub) return m.data;
    })();
    await nc.flush();
    const res = await decide(collector, r.id, TOKENS.alice, { decision: 'approve', reason: 'ticket OPS-1' });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ id: r.id, state: 'decided', decision: { decision: 'approved' } });

    const msg = parseApprovalDecision((await received) as Uint8Array);
    expect(msg).toMatchObject({
      v: 1,
      id: r.id,
      decision: 'approved',
      by: { name: 'alice', groups: ['dba'] },
      reason: 'ticket OPS-1',
    });
    expect(Date.parse(msg?.at ?? '')).toBeGreaterThan(Date.now() - 60_000);
    expect(await decisionsInStream(r.id)).toBe(1);
    expect(await stateOf(collector, r.id)).toBe('decided');
    expect(await metric(collector, /^pgwarden_collector_approvals_pending (\d+)/m)).toBe(0);
    expect(await metric(collector, /^pgwarden_collector_approval_decisions_total\{decision="approved"\} (\d+)/m)).toBe(
      1,
    );

    await publish('closed', approvalClosed(r.id, 'approved', { name: 'alice', groups: ['dba'] }));
    await waitFor(async () => (await stateOf(collector, r.id)) === 'approved');
    const approved = await api(collector, '/api/v1/approvals?state=approved', { token: TOKENS.alice });
    expect(approved.body.approvals.map((e: any) => e.id)).toEqual([r.id]);
    expect(approved.body.approvals[0].closed).toMatchObject({ outcome: 'approved', by: { name: 'alice' } });
    expect((await api(collector, '/api/v1/approvals', { token: TOKENS.alice })).body.approvals).toEqual([]);
  });

  it('refuses without a valid token, outside the approvers, self-approval, bad bodies, unknown ids and second decisions', async () => {
    const r = await held();
    const path = `/api/v1/approvals/${r.id}`;
    const noToken = await api(collector, path, { method: 'POST', body: { decision: 'approve' } });
    expect(noToken.status).toBe(401);
    expect(noToken.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect((await decide(collector, r.id, 'tok-alice-0123456788', { decision: 'approve' })).status).toBe(401);
    expect((await api(collector, '/api/v1/approvals', { token: 'nope' })).status).toBe(401);
    expect((await api(collector, path)).status).toBe(401);

    const outsider = await decide(collector, r.id, TOKENS.mallory, { decision: 'approve' });
    expect([outsider.status, outsider.body.error.code]).toEqual([403, 'not_an_approver']);
    // ana is in group dba, but the statement is hers (identity.user): four eyes.
    const self = await decide(collector, r.id, TOKENS.ana, { decision: 'approve' });
    expect([self.status, self.body.error.code]).toEqual([403, 'self_approval']);

    for (const body of [
      'not json',
      '[]',
      { decision: 'yes' },
      { decision: 'approve', reason: 'x'.repeat(1025) },
      { decision: 'approve', reason: 7 },
      { decision: 'approve', by: 'alice' },
    ]) {
      const bad = await decide(collector, r.id, TOKENS.alice, body);
      expect(bad.status, JSON.stringify(body)).toBe(400);
    }
    expect((await decide(collector, randomUUID(), TOKENS.alice, { decision: 'approve' })).status).toBe(404);
    expect((await decide(collector, 'not-an-id', TOKENS.alice, { decision: 'approve' })).status).toBe(404);
    expect((await api(collector, `/api/v1/approvals/${randomUUID()}`, { token: TOKENS.alice })).status).toBe(404);
    expect((await api(collector, '/api/v1/approvals?state=maybe', { token: TOKENS.alice })).status).toBe(400);
    // Nothing refused so far reached the stream.
    expect(await decisionsInStream(r.id)).toBe(0);
    expect(await stateOf(collector, r.id)).toBe('pending');

    expect((await decide(collector, r.id, TOKENS.bob, { decision: 'reject', reason: '' })).body).toMatchObject({
      state: 'decided',
      decision: { decision: 'rejected', by: { name: 'bob', groups: [] } },
    });
    const again = await decide(collector, r.id, TOKENS.alice, { decision: 'approve' });
    expect([again.status, again.body.error.code]).toEqual([409, 'not_pending']);
    expect(await decisionsInStream(r.id)).toBe(1);
  });

  it('lists an expired request as expired and refuses to decide it', async () => {
    const r = await held({
      requestedAt: new Date(Date.now() - 120_000).toISOString(),
      expiresAt: new Date(Date.now() - 1000).toISOString(),
    });
    const expired = await api(collector, '/api/v1/approvals?state=expired', { token: TOKENS.alice });
    expect(expired.body.approvals.map((e: any) => e.id)).toContain(r.id);
    const pending = await api(collector, '/api/v1/approvals?state=pending', { token: TOKENS.alice });
    expect(pending.body.approvals.map((e: any) => e.id)).not.toContain(r.id);
    // A comma-separated list of states (what the UI's "recently decided" asks for) and the newest N.
    const waiting = await held();
    const ids = async (query: string) => {
      const res = await api(collector, `/api/v1/approvals?${query}`, { token: TOKENS.alice });
      expect(res.status, query).toBe(200);
      return res.body.approvals.map((e: any) => e.id) as string[];
    };
    const notPending = await ids('state=decided,approved,rejected,expired,withdrawn,refused');
    expect(notPending).toContain(r.id);
    expect(notPending).not.toContain(waiting.id);
    expect(await ids('state=pending,expired')).toEqual(expect.arrayContaining([r.id, waiting.id]));
    const all = await ids('state=all');
    expect(all.length).toBeGreaterThan(2);
    expect(await ids('state=all&limit=2')).toEqual(all.slice(0, 2));
    expect(await ids('state=pending&limit=1')).toEqual([waiting.id]);
    for (const bad of [
      'state=pending,maybe',
      'state=all,pending',
      'state=',
      'limit=0',
      'limit=1001',
      'limit=x',
      'limit=-1',
    ])
      expect((await api(collector, `/api/v1/approvals?${bad}`, { token: TOKENS.alice })).status, bad).toBe(400);
    const res = await decide(collector, r.id, TOKENS.alice, { decision: 'approve' });
    expect([res.status, res.body.error.code]).toEqual([409, 'not_pending']);
    expect(await decisionsInStream(r.id)).toBe(0);
  });

  it('ignores and counts malformed messages', async () => {
    const before = (await metric(collector, /^pgwarden_collector_approval_messages_malformed_total (\d+)/m)) ?? 0;
    const id = randomUUID();
    await jetstream(nc).publish(approvalSubject('request', id), '{"v":1,"id":');
    // A decision whose body names another id than its subject.
    await jetstream(nc).publish(
      approvalSubject('decision', id),
      JSON.stringify({ v: 1, id: randomUUID(), decision: 'approved', by: { name: 'x', groups: [] }, at: 'now' }),
    );
    await waitFor(
      async () =>
        (await metric(collector, /^pgwarden_collector_approval_messages_malformed_total (\d+)/m)) === before + 2,
    );
    expect((await api(collector, `/api/v1/approvals/${id}`, { token: TOKENS.alice })).status).toBe(404);
  });

  it('a new collector instance rebuilds the same queue from the stream, and two replicas cannot both decide', async () => {
    // Left open on purpose: decided but never closed, so the replay must keep it `decided`.
    const open = await held();
    expect((await decide(collector, open.id, TOKENS.alice, { decision: 'approve' })).status).toBe(200);
    const pendingOne = await held({ sql: 'UPDATE public.orders SET status = $1 WHERE id = 7' });
    const all = (await api(collector, '/api/v1/approvals?state=all', { token: TOKENS.alice })).body.approvals;
    expect(all.map((e: any) => e.state).sort()).toEqual(
      // The second pending one is the listing test's.
      ['approved', 'decided', 'decided', 'expired', 'pending', 'pending'].sort(),
    );

    await collector.stop();
    collector = await start();
    await waitFor(async () => (await api(collector, '/api/v1/approvals', { token: TOKENS.alice })).status === 200);
    const replayed = (await api(collector, '/api/v1/approvals?state=all', { token: TOKENS.alice })).body.approvals;
    expect(replayed).toEqual(all);

    // A second replica, started while the first runs: both see the request. Sixteen people decide at once, eight
    // on each replica, so several pass the book's pending check before any decision is back from the stream; the
    // stream still takes exactly one.
    const replica = await start();
    try {
      await waitFor(async () => (await stateOf(replica, pendingOne.id)) === 'pending');
      const answers = await Promise.all(
        [collector, replica].flatMap((c) =>
          Array.from({ length: 8 }, (_, i) =>
            decide(c, pendingOne.id, i % 2 ? TOKENS.bob : TOKENS.alice, { decision: i % 2 ? 'reject' : 'approve' }),
          ),
        ),
      );
      expect(answers.map((a) => a.status).sort()).toEqual([200, ...Array(15).fill(409)]);
      expect(await decisionsInStream(pendingOne.id)).toBe(1);
      const winner = answers.find((a) => a.status === 200)?.body.decision;
      for (const c of [collector, replica]) {
        await waitFor(async () => (await stateOf(c, pendingOne.id)) === 'decided');
        const e = (await api(c, `/api/v1/approvals/${pendingOne.id}`, { token: TOKENS.bob })).body;
        expect(e.decision).toEqual(winner);
      }
    } finally {
      await replica.stop();
    }
  });

  it('signs every decision with --approvals-signing-key, and refuses to start with a key that is not Ed25519', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgwarden-signing-'));
    try {
      const { privateKey, publicKey } = generateKeyPairSync('ed25519');
      const keyFile = join(dir, 'signing.pem');
      writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }));
      const signing = await start({ approvals: { approversFile, signingKeyFile: keyFile } });
      try {
        await waitFor(async () => (await api(signing, '/api/v1/approvals', { token: TOKENS.bob })).status === 200);
        const r = approvalRequest();
        await publish('request', r);
        await waitFor(async () => (await stateOf(signing, r.id)) !== undefined);
        const sub = nc.subscribe(approvalSubject('decision', r.id), { max: 1 });
        const received = (async () => {
          for await (const m of sub) return m.data;
        })();
        await nc.flush();
        expect((await decide(signing, r.id, TOKENS.alice, { decision: 'reject', reason: 'no' })).status).toBe(200);
        const msg = parseApprovalDecision((await received) as Uint8Array)!;
        expect(msg.sig).toMatch(/^[A-Za-z0-9+/]{86}==$/);
        const verifyKey = decisionVerifyKey(String(publicKey.export({ type: 'spki', format: 'pem' })));
        expect(verifyDecision(msg, [verifyKey])).toBe(true);
        // For a sidecar that reads them, `by` carries the approver's bound identities, under the signature too.
        const marked = approvalRequest({ approverIdentities: true });
        await publish('request', marked);
        await waitFor(async () => (await stateOf(signing, marked.id)) !== undefined);
        expect((await decide(signing, marked.id, LOOKALIKE.someoneElse.token, { decision: 'approve' })).status).toBe(
          200,
        );
        const stored = await (await jetstreamManager(nc)).streams.getMessage(APPROVALS_STREAM, {
          last_by_subj: approvalSubject('decision', marked.id),
        });
        const withIds = parseApprovalDecision(stored!.data)!;
        expect(withIds.by).toStrictEqual({
          name: 'bea',
          groups: ['dba'],
          oidc: [{ issuer: 'https://idp.example', subject: '00u-bea' }],
          serviceAccounts: ['agents/reporting'],
        });
        expect(verifyDecision(withIds, [verifyKey])).toBe(true);
      } finally {
        await signing.stop();
      }
      const rsaFile = join(dir, 'rsa.pem');
      writeFileSync(
        rsaFile,
        generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }),
      );
      await expect(start({ approvals: { approversFile, signingKeyFile: rsaFile } })).rejects.toThrow(
        /approvals signing key .*rsa\.pem: the approval signing key must be Ed25519, not rsa/,
      );
      await expect(start({ approvals: { approversFile, signingKeyFile: join(dir, 'none.pem') } })).rejects.toThrow(
        /approvals signing key .*none\.pem cannot be read: ENOENT/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('grants: approve with grantFor within the request’s grantMax, list active grants, revoke once (signed)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgwarden-grants-'));
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const verifyKey = decisionVerifyKey(String(publicKey.export({ type: 'spki', format: 'pem' })));
    writeFileSync(join(dir, 'signing.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const signing = await start({ approvals: { approversFile, signingKeyFile: join(dir, 'signing.pem') } });
    try {
      await waitFor(async () => (await api(signing, '/api/v1/approvals', { token: TOKENS.bob })).status === 200);
      const r = approvalRequest({ grantMax: '1h', fingerprint: '0123456789abcdef' });
      const plain = approvalRequest();
      await publish('request', r);
      await publish('request', plain);
      await waitFor(async () => (await stateOf(signing, plain.id)) !== undefined);
      // Refused: a grant the request does not offer, longer than its grantMax, malformed, or with a rejection.
      for (const [id, body] of [
        [plain.id, { decision: 'approve', grantFor: '30m' }],
        [r.id, { decision: 'approve', grantFor: '2h' }],
        [r.id, { decision: 'approve', grantFor: 30 }],
        [r.id, { decision: 'reject', grantFor: '30m' }],
      ] as const) {
        const res = await decide(signing, id, TOKENS.alice, body);
        expect([res.status, res.body.error.code], JSON.stringify(body)).toEqual([400, 'bad_grant']);
      }
      expect(await decisionsInStream(r.id)).toBe(0);

      const res = await decide(signing, r.id, TOKENS.alice, { decision: 'approve', grantFor: '30m' });
      expect(res.status).toBe(200);
      expect(res.body.grant).toEqual({ for: '30m', state: 'requested' });
      const jsm = await jetstreamManager(nc);
      const stored = await jsm.streams.getMessage(APPROVALS_STREAM, {
        last_by_subj: approvalSubject('decision', r.id),
      });
      const msg = parseApprovalDecision(stored!.data)!;
      expect(msg.grant).toEqual({ for: '30m' });
      expect(verifyDecision(msg, [verifyKey])).toBe(true);
      // Not active until the sidecar reports it applied the grant (and when it ends).
      expect((await api(signing, '/api/v1/approvals?grants=active', { token: TOKENS.bob })).body.approvals).toEqual([]);
      const until = new Date(Date.now() + 1_800_000).toISOString();
      await publish('closed', approvalClosed(r.id, 'approved', { name: 'alice', groups: [] }, until));
      await waitFor(async () => (await stateOf(signing, r.id)) === 'approved');
      const active = await api(signing, '/api/v1/approvals?grants=active', { token: TOKENS.bob });
      expect(active.body.approvals.map((e: any) => [e.id, e.grant])).toEqual([
        [r.id, { for: '30m', state: 'active', until }],
      ]);
      expect((await api(signing, '/api/v1/approvals?grants=all', { token: TOKENS.bob })).status).toBe(400);

      // Revoke: an approver only, once, signed in its own domain.
      const byMallory = await api(signing, `/api/v1/approvals/${r.id}/revoke`, {
        method: 'POST',
        token: TOKENS.mallory,
      });
      expect([byMallory.status, byMallory.body.error.code]).toEqual([403, 'not_an_approver']);
      expect((await api(signing, `/api/v1/approvals/${r.id}/revoke`, { token: TOKENS.bob })).status).toBe(405);
      const revoked = await api(signing, `/api/v1/approvals/${r.id}/revoke`, {
        method: 'POST',
        token: TOKENS.bob,
        body: { reason: 'batch finished' },
      });
      expect(revoked.status).toBe(200);
      expect(revoked.body.grant).toMatchObject({ state: 'revoked', revoked: { by: { name: 'bob' } } });
      const rm = await jsm.streams.getMessage(APPROVALS_STREAM, { last_by_subj: approvalSubject('revoked', r.id) });
      const rev = parseApprovalRevoked(rm!.data)!;
      expect(rev).toMatchObject({ id: r.id, by: { name: 'bob' }, reason: 'batch finished' });
      expect(verifyRevocation(rev, [verifyKey])).toBe(true);
      expect(verifyDecision(rev as never, [verifyKey])).toBe(false);
      const again = await api(signing, `/api/v1/approvals/${r.id}/revoke`, { method: 'POST', token: TOKENS.bob });
      expect([again.status, again.body.error.code]).toEqual([409, 'not_pending']);
      expect((await api(signing, '/api/v1/approvals?grants=active', { token: TOKENS.bob })).body.approvals).toEqual([]);
    } finally {
      await signing.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a grant covers the same statement shape held in another pod: approved under it, signed, revoked with it', async () => {
    // Only the signing collector may decide here: the suite's own would race it for the same requests.
    await collector.stop();
    const dir = mkdtempSync(join(tmpdir(), 'pgwarden-grants-'));
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const verifyKey = decisionVerifyKey(String(publicKey.export({ type: 'spki', format: 'pem' })));
    writeFileSync(join(dir, 'signing.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const signing = await start({ approvals: { approversFile, signingKeyFile: join(dir, 'signing.pem') } });
    const jsm = await jetstreamManager(nc);
    const decisionOf = async (id: string) => {
      const m = await jsm.streams.getMessage(APPROVALS_STREAM, { last_by_subj: approvalSubject('decision', id) });
      return parseApprovalDecision(m!.data)!;
    };
    try {
      await waitFor(async () => (await api(signing, '/api/v1/approvals', { token: TOKENS.bob })).status === 200);
      const grantKey = 'c0'.repeat(32);
      const shape = { grantMax: '1h', fingerprint: '0123456789abcdef', grantKey };
      const first = approvalRequest({ ...shape, identity: { ...approvalRequest().identity, pod: 'analytics-0' } });
      await publish('request', first);
      await waitFor(async () => (await stateOf(signing, first.id)) === 'pending');
      expect((await decide(signing, first.id, TOKENS.alice, { decision: 'approve', grantFor: '30m' })).status).toBe(
        200,
      );
      // Held in another pod while the first pod has not yet reported the grant: it waits until the grant is active.
      const early = approvalRequest({ ...shape, identity: { ...first.identity, pod: 'analytics-1' } });
      await publish('request', early);
      await waitFor(async () => (await stateOf(signing, early.id)) === 'pending');
      expect(await decisionsInStream(early.id)).toBe(0);
      const until = new Date(Date.now() + 1_800_000).toISOString();
      await publish('closed', approvalClosed(first.id, 'approved', { name: 'alice', groups: [] }, until));
      await waitFor(async () => (await decisionsInStream(early.id)) === 1);

      // Later ones are approved as they arrive.
      const later = approvalRequest({ ...shape, identity: { ...first.identity, pod: 'analytics-2' } });
      await publish('request', later);
      await waitFor(async () => (await decisionsInStream(later.id)) === 1);
      for (const id of [early.id, later.id]) {
        const d = await decisionOf(id);
        expect(d).toMatchObject({ decision: 'approved', by: { name: 'alice' }, under: first.id });
        expect(d.reason).toBe(`under the grant of approval ${first.id}`);
        // For what is left of the first grant, never longer.
        const ms = grantDurationMs(d.grant!.for)!;
        expect(ms).toBeLessThanOrEqual(1_800_000);
        expect(ms).toBeGreaterThan(1_700_000);
        expect(verifyDecision(d, [verifyKey])).toBe(true);
      }

      // Not covered: another shape, another policy version, the grant's approver asking, a request without a key.
      const notCovered = [
        approvalRequest({ ...shape, grantKey: 'c1'.repeat(32) }),
        approvalRequest({ ...shape, policy: { ...first.policy, hash: 'sha256:2222' } }),
        approvalRequest({ ...shape, identity: { ...first.identity, user: 'alice' } }),
        approvalRequest({ grantMax: '1h', fingerprint: '0123456789abcdef' }),
      ];
      for (const r of notCovered) await publish('request', r);
      for (const r of notCovered) await waitFor(async () => (await stateOf(signing, r.id)) === 'pending');
      await new Promise((r) => setTimeout(r, 300));
      for (const r of notCovered) expect(await decisionsInStream(r.id), JSON.stringify(r.policy)).toBe(0);

      // The second pod applies its grant; revoking the first grant ends it too, signed, saying why.
      await publish('closed', approvalClosed(early.id, 'approved', { name: 'alice', groups: [] }, until));
      await waitFor(async () => (await stateOf(signing, early.id)) === 'approved');
      const revoked = await api(signing, `/api/v1/approvals/${first.id}/revoke`, {
        method: 'POST',
        token: TOKENS.bob,
        body: { reason: 'batch finished' },
      });
      expect(revoked.status).toBe(200);
      const rm = await jsm.streams.getMessage(APPROVALS_STREAM, { last_by_subj: approvalSubject('revoked', early.id) });
      const rev = parseApprovalRevoked(rm!.data)!;
      expect(rev).toMatchObject({ id: early.id, by: { name: 'bob' } });
      expect(rev.reason).toBe(`the grant of approval ${first.id} it was given under was revoked: batch finished`);
      expect(verifyRevocation(rev, [verifyKey])).toBe(true);
      // `later`'s pod never reported its grant active: nothing to end there.
      const laterRevocations = await jsm.streams.info(APPROVALS_STREAM, {
        subjects_filter: approvalSubject('revoked', later.id),
      });
      expect(laterRevocations.state.subjects?.[approvalSubject('revoked', later.id)] ?? 0).toBe(0);

      // A request that waited while no collector ran is approved under the grant once one has loaded the stream.
      await signing.stop();
      const key2 = { ...shape, grantKey: 'c2'.repeat(32) };
      const granted = approvalRequest(key2);
      await publish('request', granted);
      await publish('decision', {
        v: 1,
        id: granted.id,
        decision: 'approved',
        by: { name: 'alice', groups: ['dba'] },
        at: new Date().toISOString(),
        grant: { for: '30m' },
      } as never);
      await publish('closed', approvalClosed(granted.id, 'approved', { name: 'alice', groups: [] }, until));
      const waited = approvalRequest({ ...key2, identity: { ...first.identity, pod: 'analytics-3' } });
      await publish('request', waited);
      const restarted = await start({ approvals: { approversFile, signingKeyFile: join(dir, 'signing.pem') } });
      try {
        await waitFor(async () => (await decisionsInStream(waited.id)) === 1);
        expect(await decisionOf(waited.id)).toMatchObject({ decision: 'approved', under: granted.id });
      } finally {
        await restarted.stop();
      }
    } finally {
      await signing.stop();
      rmSync(dir, { recursive: true, force: true });
      collector = await start();
      await waitFor(async () => (await api(collector, '/api/v1/approvals', { token: TOKENS.bob })).status === 200);
    }
  });

  it('a grant given under another that is revoked before its pod applies it is revoked too, once it is active', async () => {
    const grantKey = 'd0'.repeat(32);
    const shape = { grantMax: '1h', fingerprint: '0123456789abcdef', grantKey };
    const first = approvalRequest({ ...shape, identity: { ...approvalRequest().identity, pod: 'analytics-0' } });
    await publish('request', first);
    await waitFor(async () => (await stateOf(collector, first.id)) === 'pending');
    expect((await decide(collector, first.id, TOKENS.alice, { decision: 'approve', grantFor: '30m' })).status).toBe(
      200,
    );
    const until = new Date(Date.now() + 1_800_000).toISOString();
    await publish('closed', approvalClosed(first.id, 'approved', { name: 'alice', groups: [] }, until));
    await waitFor(async () => (await stateOf(collector, first.id)) === 'approved');
    // Another pod's statement is approved under the grant; its sidecar has not applied the decision yet.
    const other = approvalRequest({ ...shape, identity: { ...first.identity, pod: 'analytics-1' } });
    await publish('request', other);
    await waitFor(async () => (await decisionsInStream(other.id)) === 1);
    const revoked = await api(collector, `/api/v1/approvals/${first.id}/revoke`, {
      method: 'POST',
      token: TOKENS.bob,
      body: { reason: 'wrong table' },
    });
    expect(revoked.status).toBe(200);
    // Then it does, and reports the grant it took: what it was given under is gone, so it ends as well.
    await publish('closed', approvalClosed(other.id, 'approved', { name: 'alice', groups: [] }, until));
    const revocations = async () => {
      const info = await (await jetstreamManager(nc)).streams.info(APPROVALS_STREAM, {
        subjects_filter: approvalSubject('revoked', other.id),
      });
      return info.state.subjects?.[approvalSubject('revoked', other.id)] ?? 0;
    };
    await waitFor(async () => (await revocations()) === 1);
    const rm = await (await jetstreamManager(nc)).streams.getMessage(APPROVALS_STREAM, {
      last_by_subj: approvalSubject('revoked', other.id),
    });
    expect(parseApprovalRevoked(rm!.data)).toMatchObject({
      id: other.id,
      by: { name: 'bob' },
      reason: `the grant of approval ${first.id} it was given under was revoked: wrong table`,
    });
    await waitFor(
      async () =>
        (await api(collector, `/api/v1/approvals/${other.id}`, { token: TOKENS.bob })).body.grant?.state === 'revoked',
    );
  });

  it('follows a rotated approvers file: the new token works, the old one is refused', async () => {
    const rotated = 'tok-alice-rotated-abcdef';
    writeFileSync(`${approversFile}.new`, approversYaml(rotated));
    renameSync(`${approversFile}.new`, approversFile);
    expect((await api(collector, '/api/v1/approvals', { token: rotated })).status).toBe(200);
    expect((await api(collector, '/api/v1/approvals', { token: TOKENS.alice })).status).toBe(401);
    const r = await held();
    const res = await decide(collector, r.id, rotated, { decision: 'approve' });
    expect([res.status, res.body.decision?.by.name]).toEqual([200, 'alice']);

    // Broken mid-rotation: every token is refused (503), until the file is valid again.
    writeFileSync(`${approversFile}.new`, '- {name: alice, token: plain}\n');
    renameSync(`${approversFile}.new`, approversFile);
    const broken = await api(collector, '/api/v1/approvals', { token: rotated });
    expect([broken.status, broken.body.error.code]).toEqual([503, 'approvers_unavailable']);
    expect(broken.body.error.message).not.toContain('plain');
    writeFileSync(`${approversFile}.new`, approversYaml());
    renameSync(`${approversFile}.new`, approversFile);
    expect((await api(collector, '/api/v1/approvals', { token: TOKENS.alice })).status).toBe(200);
  });

  it('an approver limited to other namespaces neither sees nor decides this namespace’s requests', async () => {
    const scoped = 'tok-sam-other-namespace';
    writeFileSync(
      `${approversFile}.new`,
      `${approversYaml()}- {name: sam, groups: [dba], tokenSha256: ${sha256Hex(scoped)}, namespaces: [billing]}\n`,
    );
    renameSync(`${approversFile}.new`, approversFile);
    try {
      const r = await held(); // policy namespace agents
      const list = await api(collector, '/api/v1/approvals?state=all', { token: scoped });
      expect(list.status).toBe(200);
      expect(list.body.approvals.map((e: any) => e.id)).not.toContain(r.id);
      expect((await api(collector, `/api/v1/approvals/${r.id}`, { token: scoped })).status).toBe(404);
      const res = await decide(collector, r.id, scoped, { decision: 'approve' });
      expect([res.status, res.body.error.code]).toEqual([404, 'not_found']);
      expect(await stateOf(collector, r.id)).toBe('pending');
      expect(await decisionsInStream(r.id)).toBe(0);
    } finally {
      writeFileSync(`${approversFile}.new`, approversYaml());
      renameSync(`${approversFile}.new`, approversFile);
    }
  });

  it('closes a request only from its own namespace’s subject; a closing or request naming another is ignored and counted', async () => {
    const js = jetstream(nc);
    const malformed = async () =>
      (await metric(collector, /^pgwarden_collector_approval_messages_malformed_total (\d+)/m)) ?? 0;
    const before = await malformed();
    const r = approvalRequest();
    await js.publish(sidecarApprovalSubject('request', 'agents', r.id), JSON.stringify(r));
    await waitFor(async () => (await stateOf(collector, r.id)) === 'pending');
    // A sidecar of team-b that learned the id marks it withdrawn on its own namespace's subject, and (as the shared
    // user could) on the subject without namespace of earlier sidecars.
    const forged = JSON.stringify(approvalClosed(r.id, 'withdrawn'));
    await js.publish(sidecarApprovalSubject('closed', 'team-b', r.id), forged);
    await js.publish(approvalSubject('closed', r.id), forged);
    // And queues a request claiming namespace agents' policy on its own subject.
    const claimed = approvalRequest();
    await js.publish(sidecarApprovalSubject('request', 'team-b', claimed.id), JSON.stringify(claimed));
    await waitFor(async () => (await malformed()) === before + 3);
    expect(await stateOf(collector, r.id)).toBe('pending');
    expect((await api(collector, `/api/v1/approvals/${claimed.id}`, { token: TOKENS.bob })).status).toBe(404);

    // The request's own sidecar closes it.
    await js.publish(sidecarApprovalSubject('closed', 'agents', r.id), JSON.stringify(approvalClosed(r.id, 'expired')));
    await waitFor(async () => (await stateOf(collector, r.id)) === 'expired');
  });

  it('does not make /readyz depend on approvals', async () => {
    const r = await api(collector, '/readyz');
    expect(r.body.checks).toEqual({ store: true, nats: true });
  });
});

describe('approval routes on a collector that cannot serve them', () => {
  it('answers 501 without an approvers file (even to a token) and without NATS', () =>
    withoutApproverRoutes(approversYaml(), async ({ withoutFile, withoutNats }) => {
      const auth = { authorization: `Bearer ${TOKENS.alice}` };
      const list = await fetch(`${withoutFile.url}/api/v1/approvals`, { headers: auth });
      expect(list.status).toBe(501);
      expect(((await list.json()) as any).error).toMatchObject({
        code: 'no_approvers',
        message: expect.stringContaining('no approvers configured'),
      });
      const post = await fetch(`${withoutFile.url}/api/v1/approvals/${randomUUID()}`, {
        method: 'POST',
        headers: auth,
        body: '{"decision":"approve"}',
      });
      expect(post.status).toBe(501);
      const off = await fetch(`${withoutNats.url}/api/v1/approvals`, { headers: auth });
      expect([off.status, ((await off.json()) as any).error.code]).toEqual([501, 'approvals_disabled']);
    }));

  it('adds the current subjects to an approvals stream an older release created, keeping its messages', async () => {
    const nats = await startNats();
    try {
      const nc = await connect({ servers: nats.url });
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: APPROVALS_STREAM, subjects: ['pgwarden.approvals.>'] });
      await jetstream(nc).publish('pgwarden.approvals.request.old', '{}');
      await ensureApprovalsStream(jsm);
      const info = await jsm.streams.info(APPROVALS_STREAM);
      expect(info.config.subjects).toEqual(['pgwarden.approvals.>', 'pgwarden.approval.>']);
      expect(info.state.messages).toBe(1);
      expect((await jetstream(nc).publish(approvalSubject('request', randomUUID()), '{}')).seq).toBe(2);
      await ensureApprovalsStream(jsm); // nothing left to add: no update
      expect((await jsm.streams.info(APPROVALS_STREAM)).config.subjects).toHaveLength(2);
      await nc.close();
    } finally {
      await nats.stop();
    }
  });

  it('refuses to start with an invalid approvers file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgwarden-approvals-'));
    writeFileSync(join(dir, 'a.yaml'), '- {name: alice, token: plain}\n');
    await expect(
      startCollector({
        http: { port: 0 },
        logger: pino({ level: 'silent' }),
        approvals: { approversFile: join(dir, 'a.yaml') },
      }),
    ).rejects.toThrow(/unknown field\(s\) token/);
    rmSync(dir, { recursive: true, force: true });
  });
});

/** A queue of its own: the requests left pending here would change what the tests above count. */
describe('four eyes against other spellings and other identities of the requester (real nats-server and PostgreSQL)', () => {
  let fx: ApprovalsFixture;
  let collector: Collector;
  beforeAll(async () => {
    fx = await startApprovalsFixture(approversYaml(), TOKENS.alice);
    ({ collector } = fx);
  });
  afterAll(async () => {
    await fx?.stop();
  });
  const decide = async (id: string, token: string, body: unknown) => {
    const r = await fetch(`${collector.url}/api/v1/approvals/${id}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
      body: JSON.stringify(body),
    });
    return { status: r.status, body: (await r.json()) as any };
  };
  const held = async (over: Partial<ApprovalRequestMessage> = {}) => {
    const r = approvalRequest(over);
    await jetstream(fx.nc).publish(approvalSubject('request', r.id), JSON.stringify(r));
    await waitFor(
      async () =>
        (
          await fetch(`${collector.url}/api/v1/approvals/${r.id}`, {
            headers: { authorization: `Bearer ${TOKENS.bob}` },
          })
        ).status === 200,
    );
    return r;
  };
  const decisionsInStream = async (id: string) => {
    const info = await (await jetstreamManager(fx.nc)).streams.info(APPROVALS_STREAM, {
      subjects_filter: approvalSubject('decision', id),
    });
    return info.state.subjects?.[approvalSubject('decision', id)] ?? 0;
  };

  it('refuses self-approval by another spelling, by the requester’s bound OIDC subject or service account, and when who asked is unclear', async () => {
    const refusal = async (r: { id: string }, token: string) => {
      const res = await decide(r.id, token, { decision: 'approve' });
      return [res.status, res.body.error?.code, res.body.error?.message];
    };
    const byName = await held();
    for (const a of [LOOKALIKE.upper, LOOKALIKE.cyrillic, LOOKALIKE.email, LOOKALIKE.serviceAccount]) {
      const [status, code, message] = await refusal(byName, a.token);
      expect([status, code], a.name).toEqual([403, 'self_approval']);
      expect(message).toMatch(/four-eyes rule$/);
    }
    // An opaque subject (as many identity providers' `sub` is) matches no approver's name: the approvers file binds it.
    const bySub = await held({
      identity: { namespace: 'agents', serviceAccount: 'batch', user: '00u-ana', issuer: 'https://idp.example/' },
    });
    expect(await refusal(bySub, LOOKALIKE.sub.token)).toEqual([
      403,
      'self_approval',
      expect.stringMatching(/^dora is 00u-ana at https:\/\/idp\.example\/, who asked/),
    ]);
    expect(await refusal(bySub, LOOKALIKE.otherIssuer.token)).toEqual([
      403,
      'self_approval',
      expect.stringMatching(/the same subject at another issuer may be the same person/),
    ]);
    // No service account: whether it is one of sam's cannot be told.
    const byNobody = await held({ identity: { namespace: 'agents', pod: 'analytics-0' } });
    expect((await refusal(byNobody, LOOKALIKE.serviceAccount.token)).slice(0, 2)).toEqual([403, 'self_approval']);
    const malformed = await held({ identity: { user: ['ana'] as never, serviceAccount: 'analytics' } });
    expect((await refusal(malformed, TOKENS.alice)).slice(0, 2)).toEqual([403, 'self_approval']);
    for (const r of [byName, bySub, byNobody, malformed]) expect(await decisionsInStream(r.id)).toBe(0);
    // Someone with identities of their own decides as before; a sidecar that does not ask for the approver's
    // identities (an earlier release, which would drop them and then fail the signature) gets name and groups only.
    for (const r of [byName, bySub]) {
      const ok = await decide(r.id, LOOKALIKE.someoneElse.token, { decision: 'reject' });
      expect(ok.body).toMatchObject({ state: 'decided', decision: { decision: 'rejected' } });
      expect(ok.body.decision.by).toStrictEqual({ name: 'bea', groups: ['dba'] });
    }
  });
  it('approving under a grant tells a sidecar that reads them the grant approver’s identities, and no other sidecar', async () => {
    const shape = { grantMax: '1h', fingerprint: 'fedcba9876543210', grantKey: 'e7'.repeat(32) };
    const first = approvalRequest({ ...shape, approverIdentities: true });
    await jetstream(fx.nc).publish(approvalSubject('request', first.id), JSON.stringify(first));
    await waitFor(
      async () =>
        (await decide(first.id, LOOKALIKE.someoneElse.token, { decision: 'approve', grantFor: '30m' })).status === 200,
    );
    const until = new Date(Date.now() + 1_800_000).toISOString();
    await jetstream(fx.nc).publish(
      approvalSubject('closed', first.id),
      JSON.stringify(approvalClosed(first.id, 'approved', { name: 'bea', groups: [] }, until)),
    );
    const reads = await held({
      ...shape,
      identity: { ...first.identity, pod: 'analytics-1' },
      approverIdentities: true,
    });
    const older = await held({ ...shape, identity: { ...first.identity, pod: 'analytics-2' } });
    await waitFor(async () => (await decisionsInStream(reads.id)) === 1 && (await decisionsInStream(older.id)) === 1);
    const jsm = await jetstreamManager(fx.nc);
    const byOf = async (id: string) =>
      parseApprovalDecision(
        (await jsm.streams.getMessage(APPROVALS_STREAM, { last_by_subj: approvalSubject('decision', id) }))!.data,
      )!;
    expect(await byOf(reads.id)).toMatchObject({ under: first.id });
    expect((await byOf(reads.id)).by).toStrictEqual({
      name: 'bea',
      groups: ['dba'],
      oidc: [{ issuer: 'https://idp.example', subject: '00u-bea' }],
      serviceAccounts: ['agents/reporting'],
    });
    expect((await byOf(older.id)).by).toStrictEqual({ name: 'bea', groups: ['dba'] });
  });
});
