import { generateKeyPairSync } from 'node:crypto';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { Ajv } from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  APPROVALS_STREAM,
  type ApprovalDecisionMessage,
  type ApprovalRequestMessage,
  type ApprovalRevokedMessage,
  approvalSubject,
  auditEventSchema,
  parseApprovalClosed,
  parseApprovalRequest,
  signDecision,
  signRevocation,
} from '../../policy/src/index.js';
import { createAuditRecorder } from '../../sidecar/src/audit/index.js';
import { memoryAudit, until, writePolicy } from './governed-sidecar.js';
import { type ReviewWorld, startReviewWorld } from './review-world.js';

// Approval grants through the real sidecar, parser, PostgreSQL and nats-server: one approval that also covers later
// statements of the same shape (approval.grants), what it does not cover, its cap, and its revocation. Decisions
// and revocations are signed (approval.decisionKeys), so the signature checks are exercised too. The test plays the
// collector; the collector's side is in collector/src/approvals/.
let world: ReviewWorld;
let db: ReviewWorld['db'];
let idp: ReviewWorld['idp'];
let collectorNc: ReviewWorld['collectorNc'];
let g: ReviewWorld['g'];
const keys = generateKeyPairSync('ed25519');
const otherKeys = generateKeyPairSync('ed25519');
const dana = { name: 'dana', groups: ['dba'] };
const audit = memoryAudit();

beforeAll(async () => {
  world = await startReviewWorld('grants', {
    adjust: async (policy, db) => {
      await db.su('INSERT INTO orders (id, customer_id) SELECT i, 1 FROM generate_series(100, 110) i');
      policy.spec.approval.grants = { maxDuration: '10m' };
      policy.spec.approval.decisionKeys = [keys.publicKey.export({ type: 'spki', format: 'pem' }).toString()];
    },
    // A recorder of its own, so that the review's approval.* events are audited next to the statements.
    sidecar: { audit, auditRecorder: createAuditRecorder(audit) },
  });
  ({ db, idp, collectorNc, g } = world);
}, 60_000);
afterAll(async () => {
  await world?.close();
});

const lastSeq = () => world.lastSeq();
const nthRequest = (after: number, n: number) => world.nthRequest(after, n);

/** Approval messages of `kind` stored after `after`. */
async function storedAfter(after: number, kind: 'request' | 'closed'): Promise<Uint8Array[]> {
  const jsm = await jetstreamManager(collectorNc);
  const out: Uint8Array[] = [];
  const last = await lastSeq();
  for (let seq = after + 1; seq <= last; seq++) {
    const m = await jsm.streams.getMessage(APPROVALS_STREAM, { seq }).catch(() => null);
    if (m?.subject.startsWith(`pgwarden.approval.${kind}.`)) out.push(m.data);
  }
  return out;
}

async function nextRequest(after: number): Promise<ApprovalRequestMessage> {
  const [r] = await until(
    'an approval request',
    () => storedAfter(after, 'request'),
    (l) => l.length > 0,
  );
  return parseApprovalRequest(r) as ApprovalRequestMessage;
}

const decide = (id: string, decision: 'approved' | 'rejected', grantFor?: string, key = keys.privateKey) => {
  const d: ApprovalDecisionMessage = {
    v: 1,
    id,
    decision,
    by: dana,
    at: new Date().toISOString(),
    ...(grantFor ? { grant: { for: grantFor } } : {}),
  };
  return jetstream(collectorNc).publish(approvalSubject('decision', id), JSON.stringify(signDecision(d, key)));
};

const revoke = (id: string, opts: { key?: typeof keys.privateKey; by?: typeof dana; sign?: boolean } = {}) => {
  const r: ApprovalRevokedMessage = { v: 1, id, by: opts.by ?? dana, at: new Date().toISOString(), reason: 'done' };
  const body = opts.sign === false ? r : signRevocation(r, opts.key ?? keys.privateKey);
  return collectorNc.publish(approvalSubject('revoked', id), JSON.stringify(body));
};

const rowsWithId = async (id: number) =>
  (await db.su(`SELECT count(*)::int AS n FROM orders WHERE id = ${id}`)).rows[0].n as number;

const alice = async () => g.client({ password: await idp.sign({ sub: 'alice', groups: ['data-team'] }) });

/** Runs `sql` and answers the approval request it makes with `answer`; returns the request. */
async function heldThen(c: Awaited<ReturnType<typeof alice>>, sql: string, answer: (id: string) => Promise<unknown>) {
  const seq = await lastSeq();
  const pending = c.query(sql).then(
    (r) => ({ rows: r.rowCount }),
    (e: { code?: string; message: string }) => ({ error: e }),
  );
  const req = await nextRequest(seq);
  await answer(req.id);
  return { req, result: await pending };
}

describe('approval grants', () => {
  let grantId: string;

  it('an approval with a grant also runs later statements of the same shape at once, without asking again', async () => {
    const c = await alice();
    const seq0 = await lastSeq();
    const { req, result } = await heldThen(c, 'DELETE FROM orders WHERE id = 100', (id) =>
      decide(id, 'approved', '5m'),
    );
    grantId = req.id;
    expect(result).toEqual({ rows: 1 });
    // The request told the queue the statement may be covered by a grant, and for how long at most.
    expect(req.grantMax).toBe('10m');
    expect(req.fingerprint).toMatch(/^[0-9a-f]{16}$/);
    const [closedData] = await until(
      'the closing',
      () => storedAfter(seq0, 'closed'),
      (l) => l.length > 0,
    );
    const closed = parseApprovalClosed(closedData);
    expect(closed?.outcome).toBe('approved');
    const until5m = Date.parse(closed?.grantUntil ?? '');
    expect(until5m - Date.now()).toBeGreaterThan(4 * 60_000);
    expect(until5m - Date.now()).toBeLessThanOrEqual(5 * 60_000);

    // Same shape, other values, and another connection of the same identity: covered.
    const seq1 = await lastSeq();
    expect((await c.query('DELETE FROM orders WHERE id = 101')).rowCount).toBe(1);
    const c2 = await alice();
    expect((await c2.query('DELETE FROM orders WHERE id = 102')).rowCount).toBe(1);
    expect(await rowsWithId(101)).toBe(0);
    expect(await storedAfter(seq1, 'request')).toEqual([]);
    const used = g.events.filter((e) => e.type === 'statement.granted' && e.approvalId === grantId);
    expect(used).toHaveLength(2);
    // The audit trail says, for each, whose approval it ran under.
    const stmt = audit.events.find((e) => e.type === 'statement' && e.statement?.text?.includes('id = 101'));
    expect(stmt?.decision).toMatchObject({ action: 'allow', rule: 'write-orders-needs-review' });
    expect(stmt?.decision.reason).toContain(`approved by dana under the grant of approval ${grantId}`);
    const granted = audit.events.find((e) => e.type === 'approval.granted' && e.approval?.id === grantId);
    expect(Date.parse(granted?.approval.grantUntil)).toBeGreaterThan(Date.now() + 4 * 60_000);
    const validate = new Ajv({ allErrors: true }).compile(auditEventSchema);
    for (const e of [granted, stmt]) expect(validate(e), JSON.stringify(validate.errors)).toBe(true);
    await c.end();
    await c2.end();
  });

  it('offers no grant for a statement a constant can steer as a whole (OR 1 = 0 shares its shape with OR 1 = 1)', async () => {
    const c = await alice();
    const seq = await lastSeq();
    const { req, result } = await heldThen(c, 'DELETE FROM orders WHERE id = 109 OR 1 = 0', (id) =>
      decide(id, 'approved', '5m'),
    );
    expect(req.grantMax).toBeUndefined();
    expect(result).toEqual({ rows: 1 });
    // Approved once, with a grant asked for: the same shape steered to every row is held again, not run.
    const again = c.query('DELETE FROM orders WHERE id = 110 OR 1 = 1').catch((e: { code?: string }) => e);
    const next = await nthRequest(seq, 2);
    expect(next.sql).toBe('DELETE FROM orders WHERE id = 110 OR 1 = 1');
    await decide(next.id, 'rejected');
    expect(((await again) as { code?: string }).code).toBe('42501');
    expect(
      (await db.su('SELECT count(*)::int AS n FROM orders WHERE id BETWEEN 100 AND 108')).rows[0].n,
    ).toBeGreaterThan(0);
    await c.end();
  });

  it('covers nothing of another shape, another identity, or a statement a rule denies', async () => {
    const c = await alice();
    // Another shape (an extra condition) is held again.
    const other = await heldThen(c, 'DELETE FROM orders WHERE id = 103 AND status IS NOT NULL', (id) =>
      decide(id, 'rejected'),
    );
    expect(other.result).toMatchObject({ error: { code: '42501' } });
    // Another table is another analysis, even under the same rule.
    const items = await heldThen(c, 'DELETE FROM order_items WHERE order_id = 1', (id) => decide(id, 'rejected'));
    expect(items.result).toMatchObject({ error: { code: '42501' } });
    // The same shape from another person is held.
    const bob = await g.client({ password: await idp.sign({ sub: 'bob', groups: ['data-team'] }) });
    const fromBob = await heldThen(bob, 'DELETE FROM orders WHERE id = 104', (id) => decide(id, 'rejected'));
    expect(fromBob.result).toMatchObject({ error: { code: '42501' } });
    expect(await rowsWithId(104)).toBe(1);
    // A guardrail still denies what the grant's shape would otherwise cover (no WHERE: requireWhere).
    const seq = await lastSeq();
    await expect(c.query('DELETE FROM orders')).rejects.toMatchObject({ code: '42501' });
    expect(await storedAfter(seq, 'request')).toEqual([]);
    await c.end();
    await bob.end();
  });

  it("requests name their shape by a grant key digest; a decision under another pod's grant is applied as one", async () => {
    // The collector compares these digests to approve, under an active grant, the same shape held in another pod
    // (collector/src/approvals/approval-queue.ts): equal for the same shape and identity, different otherwise.
    await db.su('INSERT INTO orders (id, customer_id) SELECT i, 1 FROM generate_series(205, 208) i');
    const carol = await g.client({ password: await idp.sign({ sub: 'carol', groups: ['data-team'] }) });
    const c1 = await heldThen(carol, 'DELETE FROM orders WHERE id = 205', (id) => decide(id, 'rejected'));
    const c2 = await heldThen(carol, 'DELETE FROM orders WHERE id = 206', (id) => decide(id, 'rejected'));
    expect(c1.req.grantKey).toMatch(/^[0-9a-f]{64}$/);
    expect(c2.req.grantKey).toBe(c1.req.grantKey);
    const erin = await g.client({ password: await idp.sign({ sub: 'erin', groups: ['data-team'] }) });
    const otherPod = '5b7e9c1d-3f4a-4b6c-8d2e-0a1b2c3d4e5f';
    const e1 = await heldThen(erin, 'DELETE FROM orders WHERE id = 207', async (id) => {
      const d: ApprovalDecisionMessage = {
        v: 1,
        id,
        decision: 'approved',
        by: dana,
        reason: `under the grant of approval ${otherPod}`,
        at: new Date().toISOString(),
        grant: { for: '2m' },
        under: otherPod,
      };
      return jetstream(collectorNc).publish(
        approvalSubject('decision', id),
        JSON.stringify(signDecision(d, keys.privateKey)),
      );
    });
    expect(e1.req.grantKey).not.toBe(c1.req.grantKey);
    expect(e1.result).toEqual({ rows: 1 });
    // The trail says whose grant let it through: nobody looked at this statement itself.
    const stmt = audit.events.find((e) => e.type === 'statement' && e.statement?.text?.includes('id = 207'));
    expect(stmt?.decision.reason).toMatch(
      new RegExp(`^approved by dana under the grant of approval ${otherPod} \\(until `),
    );
    // And the sidecar keeps the grant for the rest of its time: erin's next one of that shape is not held.
    const seq = await lastSeq();
    expect((await erin.query('DELETE FROM orders WHERE id = 208')).rowCount).toBe(1);
    expect(await storedAfter(seq, 'request')).toEqual([]);
    await carol.end();
    await erin.end();
  });

  it('a grant longer than approval.grants.maxDuration is cut to it', async () => {
    const c = await alice();
    const seq = await lastSeq();
    const { result } = await heldThen(c, 'UPDATE orders SET status = $$x$$ WHERE id = 105', (id) =>
      decide(id, 'approved', '24h'),
    );
    expect(result).toEqual({ rows: 1 });
    const [closedData] = await until(
      'the closing',
      () => storedAfter(seq, 'closed'),
      (l) => l.length > 0,
    );
    const left = Date.parse(parseApprovalClosed(closedData)?.grantUntil ?? '') - Date.now();
    expect(left).toBeGreaterThan(9 * 60_000);
    expect(left).toBeLessThanOrEqual(10 * 60_000);
    await c.end();
  });

  it('a decision not signed by the policy key gives no grant (and approves nothing)', async () => {
    const c = await alice();
    const seq = await lastSeq();
    const pending = c.query('INSERT INTO orders (id, customer_id, status) VALUES (9001, 1, $$new$$)').catch((e) => e);
    const req = await nextRequest(seq);
    await decide(req.id, 'approved', '5m', otherKeys.privateKey);
    await new Promise((r) => setTimeout(r, 200));
    await decide(req.id, 'rejected');
    expect(await pending).toMatchObject({ code: '42501' });
    await c.end();
  });

  it('a revocation signed by the policy key ends the grant; an unsigned or foreign one does not', async () => {
    const c = await alice();
    await revoke(grantId, { sign: false });
    await revoke(grantId, { key: otherKeys.privateKey });
    await revoke(grantId, { by: { name: 'mallory', groups: ['data-team'] } }); // signed, but not an approver
    await new Promise((r) => setTimeout(r, 200));
    expect((await c.query('DELETE FROM orders WHERE id = 106')).rowCount).toBe(1);
    const n = g.events.length;
    await revoke(grantId);
    await g.waitEvent((e) => e.type === 'approval.grant_revoked' && e.approvalId === grantId, n);
    const again = await heldThen(c, 'DELETE FROM orders WHERE id = 107', (id) => decide(id, 'rejected'));
    expect(again.result).toMatchObject({ error: { code: '42501' } });
    expect(await rowsWithId(107)).toBe(1);
    const text = await g.gs.listeners[0].sidecar.metrics.registry.metrics();
    // Given: the first test's, the cut one's and erin's (under another pod's grant); used: two, one and one.
    expect(text).toMatch(/^pgwarden_approval_grants_total\{event="given"\} 3$/m);
    expect(text).toMatch(/^pgwarden_approval_grants_total\{event="used"\} 4$/m);
    expect(text).toMatch(/^pgwarden_approval_grants_total\{event="revoked"\} 1$/m);
    await c.end();
  });

  it('a suspension, live or by spec.suspend, ends the policy’s grants: after the resume the agent asks again', async () => {
    const grantFor = async (sql: string) => {
      const c = await alice();
      const { req, result } = await heldThen(c, sql, (id) => decide(id, 'approved', '5m'));
      expect(result).toEqual({ rows: 1 });
      await c.end();
      return req.id;
    };
    const stillHeld = async (sql: string) => {
      const c = await alice();
      const again = await heldThen(c, sql, (id) => decide(id, 'rejected'));
      expect(again.result).toMatchObject({ error: { code: '42501' } });
      await c.end();
    };
    const hooks = g.gs.listeners[0].hooks;
    // Live: the collector's suspend, then its resume.
    const live = await grantFor('UPDATE orders SET note = $$a$$ WHERE id = 108');
    const n = g.events.length;
    const at = new Date().toISOString();
    const ref = { namespace: 'agents', name: 'writer' };
    hooks.setSuspension({
      v: 1,
      kind: 'suspend',
      id: crypto.randomUUID(),
      by: 'dana',
      reason: 'incident',
      at,
      policy: ref,
    });
    hooks.setSuspension(undefined);
    const ended = await g.waitEvent((e) => e.type === 'approval.grant_revoked' && e.approvalId === live, n);
    expect(ended).toMatchObject({ by: 'pgwarden', reason: 'policy suspended' });
    await stillHeld('UPDATE orders SET note = $$b$$ WHERE id = 109');

    // spec.suspend: the reload ends them too, though the resumed policy has the same hash as before.
    const byReload = await grantFor('UPDATE orders SET status = $$c$$ WHERE id = 110');
    const policy = JSON.parse(JSON.stringify(world.policy));
    const m = g.events.length;
    writePolicy(g.policyFile, { ...policy, spec: { ...policy.spec, suspend: true } });
    await g.waitEvent((e) => e.type === 'approval.grant_revoked' && e.approvalId === byReload, m, 10_000);
    const reloaded = g.events.length;
    writePolicy(g.policyFile, policy);
    await g.waitEvent((e) => e.type === 'policy.loaded', reloaded, 10_000);
    await stillHeld('UPDATE orders SET status = $$d$$ WHERE id = 110');
  }, 60_000);
});
