import { generateKeyPairSync, type KeyObject, randomUUID } from 'node:crypto';
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import {
  APPROVALS_STREAM,
  type ApprovalClosedMessage,
  type ApprovalDecisionMessage,
  approvalSubject,
  parseApprovalClosed,
  parseApprovalRequest,
  sidecarApprovalSubject,
  signDecision,
} from '@pgwarden/policy';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNats, type TestNats } from '../../../test/harness/index.js';
import type { ApprovalGate, ApprovalRequest } from './approval-gate.js';
import { ApprovalGrants } from './approval-grants.js';
import { natsApprovalGate } from './nats-approval-gate.js';

let nats: TestNats;
let sidecar: NatsConnection; // the gate's connection
let collector: NatsConnection; // plays the collector: reads requests, publishes decisions

beforeAll(async () => {
  nats = await startNats();
  sidecar = await connect({ servers: nats.url });
  collector = await connect({ servers: nats.url });
  await (await jetstreamManager(collector)).streams.add({
    name: APPROVALS_STREAM,
    subjects: ['pgwarden.approval.>'],
    allow_direct: true,
  });
}, 60_000);
afterAll(async () => {
  await sidecar?.close();
  await collector?.close();
  await nats?.stop();
});

function request(over: Partial<ApprovalRequest> = {}): ApprovalRequest {
  return {
    id: randomUUID(),
    sessionId: 'sess-1',
    policy: { name: 'writer', hash: 'sha256:abc', namespace: 'agents' },
    approvers: { users: ['alice'], groups: ['dba'] },
    rule: 'deletes-need-review',
    sql: 'DELETE FROM orders WHERE id = 7',
    identity: { groups: ['agents'], user: 'bot@example.com', namespace: 'agents', serviceAccount: 'bot' },
    timeoutMs: 10_000,
    signal: new AbortController().signal,
    ...over,
  };
}

/** Waits until the stream holds the message on `subject` and returns its data. */
async function stored(subject: string): Promise<Uint8Array> {
  const jsm = await jetstreamManager(collector);
  for (let i = 0; i < 100; i++) {
    const m = await jsm.streams.getMessage(APPROVALS_STREAM, { last_by_subj: subject }).catch(() => null);
    if (m) return m.data;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`nothing stored on ${subject}`);
}

/** Asks `gate` and waits until the request is in the queue; `settled()` tells whether the hold has ended. */
async function held(gate: ApprovalGate, req: ApprovalRequest) {
  const outcome = gate.request(req);
  await stored(sidecarApprovalSubject('request', 'agents', req.id));
  let done = false;
  void outcome.then(() => {
    done = true;
  });
  return { outcome, settled: () => done };
}

const decide = (id: string, decision: 'approved' | 'rejected', name: string, groups: string[] = [], reason?: string) =>
  jetstream(collector).publish(
    approvalSubject('decision', id),
    JSON.stringify({ v: 1, id, decision, by: { name, groups }, at: new Date().toISOString(), reason }),
  );

/** alice's approval that also asks for a grant of `grantFor`. */
const approveFor = (id: string, grantFor: string) =>
  jetstream(collector).publish(
    approvalSubject('decision', id),
    JSON.stringify({
      v: 1,
      id,
      decision: 'approved',
      by: { name: 'alice', groups: [] },
      at: new Date().toISOString(),
      grant: { for: grantFor },
    }),
  );

const closedOf = async (id: string): Promise<ApprovalClosedMessage | undefined> =>
  parseApprovalClosed(await stored(sidecarApprovalSubject('closed', 'agents', id)));

describe('natsApprovalGate', () => {
  it('refuses at once a statement too long to show an approver whole, queueing nothing', async () => {
    // A reviewer hid `OR true` behind 70 000 spaces: approvers saw the first 64 Ki characters, the whole one ran.
    const gate = natsApprovalGate({ connection: () => sidecar });
    const req = request({ sql: `UPDATE orders SET status = 'x' WHERE id = 5${' '.repeat(70_000)}OR true` });
    expect(await gate.request(req)).toEqual({
      decision: 'unavailable',
      reason: 'the statement is 70050 characters long, more than the 65536 an approver is shown',
    });
    const jsm = await jetstreamManager(collector);
    const m = await jsm.streams
      .getMessage(APPROVALS_STREAM, { last_by_subj: sidecarApprovalSubject('request', 'agents', req.id) })
      .catch(() => null);
    expect(m).toBeNull();
  });

  it('queues the request (secrets redacted) and applies an approver’s approval', async () => {
    const gate = natsApprovalGate({ connection: () => sidecar });
    const req = request({ sql: "UPDATE users SET password = 'hunter2' WHERE id = 1" });
    const outcome = gate.request(req);
    const queued = parseApprovalRequest(await stored(sidecarApprovalSubject('request', 'agents', req.id)));
    expect(queued).toMatchObject({
      id: req.id,
      session: 'sess-1',
      policy: { name: 'writer', namespace: 'agents' },
      rule: 'deletes-need-review',
      approvers: { users: ['alice'], groups: ['dba'] },
      identity: { user: 'bot@example.com' },
    });
    expect(queued?.sql).not.toContain('hunter2');
    expect(Date.parse(queued!.expiresAt) - Date.parse(queued!.requestedAt)).toBe(10_000);
    await decide(req.id, 'approved', 'alice');
    expect(await outcome).toEqual({ decision: 'approved', by: 'alice' });
    expect(await closedOf(req.id)).toMatchObject({ outcome: 'approved', by: { name: 'alice' } });
  });

  it('a decision asking for a grant the request does not offer approves that statement only', async () => {
    const warnings: string[] = [];
    const gate = natsApprovalGate({ connection: () => sidecar, log: (_l, msg) => warnings.push(msg) });
    const req = request();
    const { outcome } = await held(gate, req);
    await approveFor(req.id, '1h');
    expect(await outcome).toEqual({ decision: 'approved', by: 'alice', grantUntil: undefined });
    expect((await closedOf(req.id))?.grantUntil).toBeUndefined();
    expect(warnings).toContain(
      'approval: a grant the policy does not allow was asked for; approved this statement only',
    );
  });

  it('an approval that comes once the request is stale closes the hold as denied, with why, and gives no grant', async () => {
    const grants = new ApprovalGrants();
    const gate = natsApprovalGate({ connection: () => sidecar, grants });
    let reloaded = false;
    const req = request({
      grant: { key: 'k-stale', maxMs: 3_600_000, fingerprint: 'f' },
      stale: () => (reloaded ? 'stale: policy reloaded' : undefined),
    });
    const { outcome } = await held(gate, req);
    reloaded = true;
    await approveFor(req.id, '1h');
    expect(await outcome).toEqual({ decision: 'stale', by: 'alice', reason: 'stale: policy reloaded' });
    const closed = await closedOf(req.id);
    expect(closed).toMatchObject({ outcome: 'denied', reason: 'stale: policy reloaded' });
    expect(closed).not.toHaveProperty('grantUntil');
    expect(closed).not.toHaveProperty('by');
    expect(grants.find('k-stale')).toBeUndefined();
  });

  it('ignores malformed decisions, non-approvers and the requester itself; takes a group member’s rejection', async () => {
    const warnings: string[] = [];
    const gate = natsApprovalGate({ connection: () => sidecar, log: (_l, msg) => warnings.push(msg) });
    const req = request();
    const { outcome, settled } = await held(gate, req);
    collector.publish(approvalSubject('decision', req.id), 'not json');
    await decide(req.id, 'approved', 'mallory', ['agents']);
    // The requester's own OIDC user, even in an approver group: four eyes.
    await decide(req.id, 'approved', 'bot@example.com', ['dba']);
    // ... and spelled another way, as a user name claim the requester can edit may be.
    await decide(req.id, 'approved', 'Bot+x@Example.com', ['dba']);
    // ... or with letters that pass for its own, as the collector reads them (an Armenian օ, a zero for an o).
    await decide(req.id, 'approved', 'b\u0585t@example.com', ['dba']);
    await decide(req.id, 'approved', 'B0T@example.com', ['dba']);
    await new Promise((r) => setTimeout(r, 200));
    expect(settled()).toBe(false);
    expect(warnings).toEqual([
      'approval: ignored a malformed decision',
      'approval: ignored a decision by someone the policy does not name as approver',
      'approval: ignored a decision by the requester itself',
      'approval: ignored a decision by the requester itself',
      'approval: ignored a decision by the requester itself',
      'approval: ignored a decision by the requester itself',
    ]);
    await decide(req.id, 'rejected', 'carol', ['dba'], 'not on a Friday');
    expect(await outcome).toEqual({ decision: 'rejected', by: 'carol', reason: 'not on a Friday' });
    expect(await closedOf(req.id)).toMatchObject({ outcome: 'rejected', by: { name: 'carol' } });
  });

  it('ignores a decision whose approver holds the requester’s OIDC subject or service account, whatever the name', async () => {
    const warnings: { msg: string; why?: unknown }[] = [];
    const collectorKey = generateKeyPairSync('ed25519');
    const gate = natsApprovalGate({
      connection: () => sidecar,
      log: (_l, msg, f) => warnings.push({ msg, why: f?.why }),
    });
    const identity = {
      groups: ['agents'],
      user: '00u-bot',
      issuer: 'https://idp.example',
      namespace: 'agents',
      serviceAccount: 'bot',
    };
    const req = request({
      identity,
      decisionKeys: [String(collectorKey.publicKey.export({ type: 'spki', format: 'pem' }))],
    });
    const { outcome, settled } = await held(gate, req);
    // The request tells the collector to put the approver's identities into the decision.
    expect(parseApprovalRequest(await stored(sidecarApprovalSubject('request', 'agents', req.id)))).toMatchObject({
      approverIdentities: true,
    });
    const signed = (by: ApprovalDecisionMessage['by']) =>
      jetstream(collector).publish(
        approvalSubject('decision', req.id),
        JSON.stringify(
          signDecision(
            { v: 1, id: req.id, decision: 'approved', by, at: new Date().toISOString() },
            collectorKey.privateKey,
          ),
        ),
      );
    // Signed by the collector's own key: a collector that let these through does not get them past the sidecar.
    await signed({ name: 'carol', groups: ['dba'], oidc: [{ issuer: 'https://idp.example/', subject: '00u-bot' }] });
    await signed({ name: 'carol', groups: ['dba'], oidc: [{ issuer: 'https://other.example', subject: '00u-bot' }] });
    await signed({ name: 'carol', groups: ['dba'], serviceAccounts: ['agents/bot'] });
    for (const t0 = Date.now(); warnings.length < 3 && Date.now() - t0 < 10_000; )
      await new Promise((r) => setTimeout(r, 20));
    expect(settled()).toBe(false);
    expect(warnings).toEqual([
      {
        msg: 'approval: ignored a decision by the requester itself',
        why: 'carol is 00u-bot at https://idp.example, who asked for this statement',
      },
      {
        msg: 'approval: ignored a decision by the requester itself',
        why: expect.stringMatching(/the same subject at another issuer may be the same person$/),
      },
      {
        msg: 'approval: ignored a decision by the requester itself',
        why: 'carol holds service account agents/bot, which asked for this statement',
      },
    ]);
    // Someone else, with identities of their own, decides.
    await signed({
      name: 'carol',
      groups: ['dba'],
      oidc: [{ issuer: 'https://idp.example', subject: '00u-carol' }],
      serviceAccounts: ['agents/reporting'],
    });
    expect(await outcome).toEqual({ decision: 'approved', by: 'carol' });
  });

  it('with approval.decisionKeys applies only a decision the collector’s key signed, for this request', async () => {
    const collectorKey = generateKeyPairSync('ed25519');
    const otherKey = generateKeyPairSync('ed25519');
    const pem = (k: KeyObject) => String(k.export({ type: 'spki', format: 'pem' }));
    const warnings: string[] = [];
    const gate = natsApprovalGate({ connection: () => sidecar, log: (_l, msg) => warnings.push(msg) });
    // Two keys listed (a rotation): either may sign.
    const req = request({ decisionKeys: [pem(otherKey.publicKey), pem(collectorKey.publicKey)] });
    const { outcome, settled } = await held(gate, req);
    const decision = (id: string, reason?: string): ApprovalDecisionMessage => ({
      v: 1,
      id,
      decision: 'approved',
      by: { name: 'alice', groups: [] },
      at: new Date().toISOString(),
      ...(reason ? { reason } : {}),
    });
    const publish = (d: ApprovalDecisionMessage) =>
      jetstream(collector).publish(approvalSubject('decision', req.id), JSON.stringify(d));
    await publish(decision(req.id)); // unsigned
    await publish(signDecision(decision(req.id), generateKeyPairSync('ed25519').privateKey)); // a key not listed
    const signed = signDecision(decision(req.id, 'ok'), collectorKey.privateKey);
    await publish({ ...signed, reason: 'ok, and more' }); // altered after signing
    // A valid signature for another request's decision, replayed on this subject.
    await publish({ ...signDecision(decision(randomUUID()), collectorKey.privateKey), id: req.id });
    await new Promise((r) => setTimeout(r, 200));
    expect(settled()).toBe(false);
    expect(warnings).toEqual(
      Array(4).fill('approval: ignored a decision not signed by a key in approval.decisionKeys'),
    );
    await publish(signed);
    expect(await outcome).toEqual({ decision: 'approved', by: 'alice' });
    // The rotated-in key signs too.
    const next = request({ decisionKeys: [pem(otherKey.publicKey), pem(collectorKey.publicKey)] });
    const held2 = await held(gate, next);
    await jetstream(collector).publish(
      approvalSubject('decision', next.id),
      JSON.stringify(signDecision({ ...decision(next.id), decision: 'rejected' }, otherKey.privateKey)),
    );
    expect(await held2.outcome).toMatchObject({ decision: 'rejected', by: 'alice' });
  });

  it('expires after the timeout, and is withdrawn when the client goes away', async () => {
    const gate = natsApprovalGate({ connection: () => sidecar });
    const slow = request({ timeoutMs: 300 });
    expect(await gate.request(slow)).toEqual({ decision: 'timeout' });
    expect((await closedOf(slow.id))?.outcome).toBe('expired');
    const ac = new AbortController();
    const gone = request({ signal: ac.signal });
    const outcome = gate.request(gone);
    await stored(sidecarApprovalSubject('request', 'agents', gone.id));
    ac.abort();
    expect(await outcome).toEqual({ decision: 'timeout' });
    expect((await closedOf(gone.id))?.outcome).toBe('withdrawn');
    // A decision after the end changes nothing.
    await decide(gone.id, 'approved', 'alice');
  });

  it('publishes under its policy’s namespace, and a closing published first under its id does not drop its own', async () => {
    const gate = natsApprovalGate({ connection: () => sidecar });
    const ac = new AbortController();
    const req = request({ policy: { name: 'writer', hash: 'sha256:abc', namespace: 'team-a' }, signal: ac.signal });
    const outcome = gate.request(req);
    await stored(sidecarApprovalSubject('request', 'team-a', req.id));
    // Whoever learned the id (an approval notice, the audit trail) publishes a closing first, with the message id a
    // sidecar would use: JetStream drops any later message with that id within its duplicate window, whatever subject.
    const forged = JSON.stringify({ v: 1, id: req.id, outcome: 'approved', at: new Date().toISOString() });
    for (const msgID of [`${req.id}.closed`, `${req.id}.closed.0000000000000000`])
      await jetstream(collector).publish(sidecarApprovalSubject('closed', 'team-b', req.id), forged, { msgID });
    ac.abort();
    expect(await outcome).toEqual({ decision: 'timeout' });
    expect(parseApprovalClosed(await stored(sidecarApprovalSubject('closed', 'team-a', req.id)))?.outcome).toBe(
      'withdrawn',
    );
  });

  it('fails closed at once without a connection or without the queue’s stream', async () => {
    const none = natsApprovalGate({ connection: () => undefined });
    expect(await none.request(request())).toEqual({
      decision: 'unavailable',
      reason: 'the approval queue is unavailable (NATS is not connected)',
    });
    const jsm = await jetstreamManager(collector);
    await jsm.streams.delete(APPROVALS_STREAM);
    try {
      const gate = natsApprovalGate({ connection: () => sidecar, publishTimeoutMs: 2000 });
      const t0 = Date.now();
      const outcome = await gate.request(request({ timeoutMs: 60_000 }));
      expect(outcome.decision).toBe('unavailable');
      expect((outcome as { reason: string }).reason).toMatch(/^the approval queue is unavailable/);
      expect(Date.now() - t0).toBeLessThan(5000);
    } finally {
      await jsm.streams.add({ name: APPROVALS_STREAM, subjects: ['pgwarden.approval.>'], allow_direct: true });
    }
  });

  it('reads back a decision given while its connection was down, after the reconnect', async () => {
    // The sidecar's connection runs through a relay the test can cut, while the collector stays connected.
    const links = new Set<Socket>();
    let open = true;
    const relay: Server = createServer((c) => {
      if (!open) return c.destroy();
      const up = tcpConnect(Number(new URL(nats.url).port), '127.0.0.1');
      links.add(c).add(up);
      c.pipe(up).pipe(c);
      const both = () => {
        c.destroy();
        up.destroy();
      };
      for (const s of [c, up]) s.on('error', () => {}).on('close', both);
    });
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
    const cut = await connect({
      servers: `nats://127.0.0.1:${(relay.address() as { port: number }).port}`,
      reconnectTimeWait: 100,
      maxReconnectAttempts: -1,
    });
    try {
      const gate = natsApprovalGate({ connection: () => cut });
      const req = request();
      const { outcome, settled } = await held(gate, req);
      open = false;
      for (const s of links) s.destroy();
      await decide(req.id, 'approved', 'alice'); // the sidecar cannot hear this one
      await new Promise((r) => setTimeout(r, 300));
      expect(settled()).toBe(false);
      open = true; // the client reconnects by itself; the gate then finds the decision in the stream
      expect(await outcome).toEqual({ decision: 'approved', by: 'alice' });
      expect((await closedOf(req.id))?.outcome).toBe('approved');

      // A grant, and its revocation published while the connection is down: read back after the reconnect too.
      const scope = { key: 'k-readback', maxMs: 600_000, fingerprint: 'f' };
      const granted = request({ grant: scope });
      const hold = await held(gate, granted);
      await approveFor(granted.id, '5m');
      expect((await hold.outcome).decision).toBe('approved');
      expect(gate.granted?.('k-readback')?.id).toBe(granted.id);
      open = false;
      for (const s of links) s.destroy();
      await jetstream(collector).publish(
        approvalSubject('revoked', granted.id),
        JSON.stringify({ v: 1, id: granted.id, by: { name: 'alice', groups: [] }, at: new Date().toISOString() }),
      );
      await new Promise((r) => setTimeout(r, 300));
      expect(gate.granted?.('k-readback')?.id).toBe(granted.id); // not heard yet
      open = true;
      const t0 = Date.now();
      while (gate.granted?.('k-readback') && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 50));
      expect(gate.granted?.('k-readback')).toBeUndefined();
    } finally {
      await cut.close().catch(() => {});
      relay.close();
    }
  });
});
