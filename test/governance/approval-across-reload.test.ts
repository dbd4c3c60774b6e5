import { jetstream } from '@nats-io/jetstream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { approvalSubject } from '../../policy/src/index.js';
import { writePolicy } from './governed-sidecar.js';
import { type ReviewWorld, startReviewWorld } from './review-world.js';

// A statement held under one policy version and decided after a reload: the decision was asked of the approvers (and
// checked against the keys) of a policy no longer in force. An approver the reload removed, or one approving what the
// new version denies, must not release it.
let world: ReviewWorld;

beforeAll(async () => {
  world = await startReviewWorld('reloadapprovers', {
    adjust: async (_policy, db) => {
      await db.su('INSERT INTO orders (id, customer_id) VALUES (400, 1), (401, 1)');
    },
  });
}, 60_000);
afterAll(async () => {
  await world?.close();
});

const rowsWithId = async (id: number) =>
  (await world.db.su(`SELECT count(*)::int AS n FROM orders WHERE id = ${id}`)).rows[0].n as number;

const approveAsDana = (id: string) =>
  jetstream(world.collectorNc).publish(
    approvalSubject('decision', id),
    JSON.stringify({
      v: 1,
      id,
      decision: 'approved',
      by: { name: 'dana', groups: ['dba'] },
      at: new Date().toISOString(),
    }),
  );

/** Holds `sql`, reloads the policy as `change` makes it, then approves as dana (group dba); returns the outcome. */
async function heldAcrossReload(sql: string, change: (policy: Record<string, any>) => void) {
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
    await approveAsDana(request.id);
    return await pending;
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
});
