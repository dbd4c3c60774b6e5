import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatApproval } from '../../cli/src/commands/approvals.js';
import { ApprovalBook } from '../../collector/src/approvals/approval-book.js';
import { outcomeNoticeBody } from '../../collector/src/approvals/outcome-notice.js';
import {
  APPROVALS_STREAM,
  type ApprovalRequestMessage,
  approvalSubject,
  parseApprovalClosed,
  sidecarApprovalSubject,
} from '../../policy/src/index.js';
import { writePolicy } from './governed-sidecar.js';
import { type ReviewWorld, startReviewWorld } from './review-world.js';

// A statement held under one policy version and decided after a reload: the decision was asked of the approvers (and
// checked against the keys) of a policy no longer in force. An approver the reload removed, or one approving what the
// new version denies, must not release it.
let world: ReviewWorld;

beforeAll(async () => {
  world = await startReviewWorld('reloadapprovers', {
    adjust: async (policy, db) => {
      // Grants allowed: an approval that asks for one must not leave one behind when it could not be applied.
      policy.spec.approval.grants = { maxDuration: '10m' };
      await db.su('INSERT INTO orders (id, customer_id) VALUES (400, 1), (401, 1), (402, 1)');
    },
  });
}, 60_000);
afterAll(async () => {
  await world?.close();
});

const rowsWithId = async (id: number) =>
  (await world.db.su(`SELECT count(*)::int AS n FROM orders WHERE id = ${id}`)).rows[0].n as number;

const approveAsDana = (id: string, grantFor?: string) =>
  jetstream(world.collectorNc).publish(
    approvalSubject('decision', id),
    JSON.stringify({
      v: 1,
      id,
      decision: 'approved',
      by: { name: 'dana', groups: ['dba'] },
      at: new Date().toISOString(),
      ...(grantFor ? { grant: { for: grantFor } } : {}),
    }),
  );

/** Every message of the approval stream about `id`, in stream order, waiting until its closing is there. */
async function messagesOf(id: string): Promise<{ subject: string; data: Uint8Array }[]> {
  const jsm = await jetstreamManager(world.collectorNc);
  for (let i = 0; i < 250; i++) {
    const out: { subject: string; data: Uint8Array }[] = [];
    for (let seq = 1; seq <= (await world.lastSeq()); seq++) {
      const m = await jsm.streams.getMessage(APPROVALS_STREAM, { seq }).catch(() => null);
      if (m?.subject.endsWith(`.${id}`)) out.push({ subject: m.subject, data: m.data });
    }
    if (out.some((m) => m.subject === sidecarApprovalSubject('closed', 'agents', id))) return out;
    await new Promise((res) => setTimeout(res, 20));
  }
  throw new Error(`no closing for approval ${id}`);
}

/**
 * Holds `sql`, reloads the policy as `change` makes it, then approves as dana (group dba); returns the outcome and
 * the approval request.
 */
async function heldAcrossReload(
  sql: string,
  change: (policy: Record<string, any>) => void,
  grantFor?: string,
): Promise<{ rows?: number | null; error?: string; request: ApprovalRequestMessage }> {
  const { g, idp } = world;
  const c = await g.client({ password: await idp.sign({ sub: 'alice', groups: ['data-team'] }) });
  try {
    const seq = await world.lastSeq();
    const pending = c.query(sql).then(
      (r) => ({ rows: r.rowCount }),
      (e: { message: string }) => ({ error: e.message }),
    );
    const request = await world.nthRequest(seq, 1);
    const loadedBefore = g.events.length;
    const policy = structuredClone(world.policy);
    change(policy);
    writePolicy(g.policyFile, policy);
    await g.waitEvent((e) => e.type === 'policy.loaded', loadedBefore);
    await approveAsDana(request.id, grantFor);
    return { ...(await pending), request };
  } finally {
    await c.end().catch(() => {});
    const loadedBefore = g.events.length;
    writePolicy(g.policyFile, world.policy);
    await g.waitEvent((e) => e.type === 'policy.loaded', loadedBefore);
  }
}

describe('a decision that arrives after a reload of the policy it was held under', () => {
  it('does not release the statement when the reload removed its approver', async () => {
    const out = await heldAcrossReload('DELETE FROM orders WHERE id = 400', (p) => {
      p.spec.approval.approvers = { groups: ['security'] };
    });
    expect(out).toMatchObject({ error: expect.stringMatching(/policy no longer in force/) });
    expect(await rowsWithId(400)).toBe(1);
  });

  it('does not release the statement when the reload denies it', async () => {
    const out = await heldAcrossReload('DELETE FROM orders WHERE id = 401', (p) => {
      p.spec.rules = p.spec.rules.filter((r: { name: string }) => r.name !== 'write-orders-needs-review');
    });
    expect(out).toMatchObject({ error: expect.stringMatching(/policy no longer in force/) });
    expect(await rowsWithId(401)).toBe(1);
  });

  it('closes the hold as denied (stale), not approved: the queue, the CLI, the follow-up and the trail say so', async () => {
    // A reload that changes nothing but the policy's hash: dana may still approve, asks for a grant, and the
    // statement is still denied, because her approval was given under the earlier version.
    const out = await heldAcrossReload(
      'DELETE FROM orders WHERE id = 402',
      (p) => {
        p.spec.approval.timeout = '9m';
      },
      '5m',
    );
    expect(out).toMatchObject({ error: expect.stringMatching(/policy no longer in force/) });
    expect(await rowsWithId(402)).toBe(1);
    const { id } = out.request;
    const messages = await messagesOf(id);
    const closing = messages.find((m) => m.subject === sidecarApprovalSubject('closed', 'agents', id))!;
    const closed = parseApprovalClosed(closing.data);
    expect(closed).toMatchObject({ id, outcome: 'denied', reason: 'stale: policy reloaded' });
    expect(closed).not.toHaveProperty('grantUntil');
    // The collector's queue, rebuilt from the same stream messages, and what the CLI shows of it.
    const book = new ApprovalBook();
    for (const m of messages) book.apply(m.subject, m.data, Date.now());
    const entry = book.get(id, Date.now())!;
    expect(entry.state).toBe('denied');
    expect(entry.grant?.state).not.toBe('active');
    const shown = formatApproval(entry, Date.now());
    expect(shown).toMatch(/^state {6}denied$/m);
    expect(shown).toMatch(/^closed {5}denied at \S+: stale: policy reloaded$/m);
    expect(shown).toMatch(/^grant {6}asked for 5m, none given: the sidecar denied the statement$/m);
    const notice = JSON.parse(outcomeNoticeBody(closed!, entry, { format: 'slack' })).text as string;
    expect(notice).toMatch(/^🚫 Denied by its sidecar after dana’s approval \(stale: policy reloaded\)/);
    // The sidecar's own record: denied, with who had approved in the reason; no grant given or kept.
    const released = await world.g.waitEvent(
      (e) => e.type === 'statement.released' && (e as { approvalId?: string }).approvalId === id,
    );
    expect(released).toMatchObject({
      outcome: 'stale',
      reason: 'stale: policy reloaded (approved by dana under the policy it was held under)',
    });
    expect(released).not.toHaveProperty('grantUntil');
    expect(released).not.toHaveProperty('by');
  });
});
