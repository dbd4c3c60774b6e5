import { jetstream } from '@nats-io/jetstream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { approvalSubject } from '../../policy/src/index.js';
import { writePolicy } from './governed-sidecar.js';
import { RawClient, serialize } from './raw-client.js';
import { type ReviewWorld, startReviewWorld } from './review-world.js';

// A prepared statement allowed when it was bound, which a policy reload then makes need review at its Execute: the
// proxy kept none of the Bind's values (it keeps them only for statements held at each execution), so the approver
// must be told the values are missing instead of being shown `$1` as if it were the whole statement.
let world: ReviewWorld;

const ALLOW_FIRST = { name: 'data-team-deletes', action: 'allow', statements: ['delete'], tables: ['public.orders'] };

beforeAll(async () => {
  world = await startReviewWorld('reloadreview', {
    adjust: async (policy, db) => {
      policy.spec.rules.unshift({ ...ALLOW_FIRST, subjects: { groups: ['data-team'] } });
      await db.su('INSERT INTO orders (id, customer_id) VALUES (300, 1), (301, 1)');
    },
  });
}, 60_000);
afterAll(async () => {
  await world?.close();
});

const rowsWithId = async (id: number) =>
  (await world.db.su(`SELECT count(*)::int AS n FROM orders WHERE id = ${id}`)).rows[0].n as number;

describe('a bound statement that a reload makes need review', () => {
  it('is held with a note that its values are not shown, and runs only when approved', async () => {
    const { g, idp } = world;
    const c = await RawClient.connect(
      g.port,
      { user: 'agent', database: 'app' },
      await idp.sign({ sub: 'alice', groups: ['data-team'] }),
    );
    c.send(
      serialize.parse({ name: 'del', text: 'DELETE FROM orders WHERE id = $1' }),
      serialize.bind({ portal: 'p', statement: 'del', values: ['300'] }),
      serialize.flush(),
    );
    expect((await c.until('bindComplete')).some((m) => m.name === 'error')).toBe(false);

    const loadedBefore = g.events.length;
    const policy = structuredClone(world.policy);
    policy.spec.rules = policy.spec.rules.filter((r: { name: string }) => r.name !== ALLOW_FIRST.name);
    writePolicy(g.policyFile, policy);
    await g.waitEvent((e) => e.type === 'policy.loaded', loadedBefore);

    const seq = await world.lastSeq();
    c.send(serialize.execute({ portal: 'p', rows: 0 }), serialize.sync());
    const request = await world.nthRequest(seq, 1);
    expect(request).toMatchObject({ rule: 'write-orders-needs-review', sql: 'DELETE FROM orders WHERE id = $1' });
    expect(request.params).toEqual([expect.stringMatching(/^\(the values are not shown: .*policy reload/)]);
    expect(await rowsWithId(300)).toBe(1); // held, not run

    await jetstream(world.collectorNc).publish(
      approvalSubject('decision', request.id),
      JSON.stringify({
        v: 1,
        id: request.id,
        decision: 'approved',
        by: { name: 'dana', groups: ['dba'] },
        at: new Date().toISOString(),
      }),
    );
    const done = await c.until('readyForQuery');
    expect(done.find((m) => m.name === 'commandComplete')).toMatchObject({ text: 'DELETE 1' });
    expect(await rowsWithId(300)).toBe(0);
    expect(await rowsWithId(301)).toBe(1);
    c.end();
  });
});
