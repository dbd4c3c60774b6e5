import { jetstream } from '@nats-io/jetstream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { approvalSubject } from '../../policy/src/index.js';
import { errorOf } from './governed-sidecar.js';
import { type ReviewWorld, startReviewWorld } from './review-world.js';

// A `review` rule through the real sidecar, the real parser and PostgreSQL, with held statements in the approval
// queue on a real nats-server. The test plays the collector: it reads requests from the stream and publishes
// decisions (the collector's own side is tested in collector/src/approvals/).
let world: ReviewWorld;
let db: ReviewWorld['db'];
let idp: ReviewWorld['idp'];
let collectorNc: ReviewWorld['collectorNc'];
let g: ReviewWorld['g'];

beforeAll(async () => {
  world = await startReviewWorld('approvals');
  ({ db, idp, collectorNc, g } = world);
}, 60_000);
afterAll(async () => {
  await world?.close();
});

/** The next request the queue receives after sequence `after`. */
const nextRequest = (after: number) => world.nthRequest(after, 1);
const lastSeq = () => world.lastSeq();

const decide = (id: string, decision: 'approved' | 'rejected', reason?: string) =>
  jetstream(collectorNc).publish(
    approvalSubject('decision', id),
    JSON.stringify({ v: 1, id, decision, by: { name: 'dana', groups: ['dba'] }, at: new Date().toISOString(), reason }),
  );

const rowsWithId = async (id: number) =>
  (await db.su(`SELECT count(*)::int AS n FROM orders WHERE id = ${id}`)).rows[0].n as number;

describe('review through the approval queue', () => {
  it('a held DELETE runs once a dba approves it, and the client just sees it succeed', async () => {
    const c = await g.client({ password: await idp.sign({ sub: 'alice', groups: ['data-team'] }) });
    expect(await rowsWithId(42)).toBe(1);
    const seq = await lastSeq();
    const pending = c.query('DELETE FROM orders WHERE id = 42');
    const req = await nextRequest(seq);
    expect(req).toMatchObject({
      rule: 'write-orders-needs-review',
      sql: 'DELETE FROM orders WHERE id = 42',
      policy: { name: 'writer', namespace: 'agents' },
      identity: { user: 'alice', groups: ['data-team'] },
      approvers: { groups: ['dba'] },
    });
    expect(await rowsWithId(42)).toBe(1); // held, not run
    await decide(req.id, 'approved');
    expect((await pending).rowCount).toBe(1);
    expect(await rowsWithId(42)).toBe(0);
    const released = await g.waitEvent((e) => e.type === 'statement.released' && (e as any).approvalId === req.id);
    expect(released).toMatchObject({ outcome: 'approved', by: 'dana' });
    expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    await c.end();
  });

  it('a rejection reaches the client as 42501 with the approver and reason; nothing ran', async () => {
    const c = await g.client({ password: await idp.sign({ sub: 'alice', groups: ['data-team'] }) });
    const before = await db.fingerprint();
    const seq = await lastSeq();
    const pending = errorOf(c, 'DELETE FROM orders WHERE id = 43');
    const req = await nextRequest(seq);
    await decide(req.id, 'rejected', 'not during the freeze');
    const err = await pending;
    expect(err?.code).toBe('42501');
    expect(err?.message).toBe(
      'pgwarden: statement denied: held for review by rule "write-orders-needs-review" and rejected by dana: not during the freeze',
    );
    expect(await db.fingerprint()).toBe(before);
    await c.end();
  });

  it('an approval by someone else’s name who holds the requester’s OIDC issuer and subject is not applied', async () => {
    const c = await g.client({ password: await idp.sign({ sub: 'alice', groups: ['data-team'] }) });
    const before = await db.fingerprint();
    const seq = await lastSeq();
    const pending = errorOf(c, 'DELETE FROM orders WHERE id = 44');
    const req = await nextRequest(seq);
    expect(req).toMatchObject({ identity: { user: 'alice', issuer: idp.issuer }, approverIdentities: true });
    // Straight onto NATS, as a collector that let it through would publish it: dana, in the approvers group, but
    // also alice at alice's identity provider (the issuer spelled with a trailing slash).
    await jetstream(collectorNc).publish(
      approvalSubject('decision', req.id),
      JSON.stringify({
        v: 1,
        id: req.id,
        decision: 'approved',
        by: { name: 'dana', groups: ['dba'], oidc: [{ issuer: `${idp.issuer}/`, subject: 'alice' }] },
        at: new Date().toISOString(),
      }),
    );
    // The sidecar reads decisions in order: had it applied the approval, this rejection would come too late.
    await jetstream(collectorNc).publish(
      approvalSubject('decision', req.id),
      JSON.stringify({
        v: 1,
        id: req.id,
        decision: 'rejected',
        by: { name: 'erin', groups: ['dba'], oidc: [{ issuer: idp.issuer, subject: 'erin' }] },
        at: new Date().toISOString(),
        reason: 'not yours to approve',
      }),
    );
    const err = await pending;
    expect(err?.code).toBe('42501');
    expect(err?.message).toMatch(/rejected by erin: not yours to approve$/);
    expect(await db.fingerprint()).toBe(before);
    const released = await g.waitEvent((e) => e.type === 'statement.released' && (e as any).approvalId === req.id);
    expect(released).toMatchObject({ outcome: 'rejected', by: 'erin' });
    await c.end();
  });

  it('counts holds and how they ended on /metrics', async () => {
    const text = await g.gs.listeners[0].sidecar.metrics.registry.metrics();
    expect(text).toMatch(/^pgwarden_approvals_held 0$/m);
    expect(text).toMatch(/^pgwarden_approvals_total\{outcome="approved"\} 1$/m);
    expect(text).toMatch(/^pgwarden_approvals_total\{outcome="rejected"\} 2$/m);
  });
});
