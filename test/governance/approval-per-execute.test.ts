import { jetstream } from '@nats-io/jetstream';
import { Ajv } from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatApproval } from '../../cli/src/commands/approvals.js';
import { noticeBody } from '../../collector/src/approvals/approval-notice.js';
import { approvalSubject, auditEventSchema } from '../../policy/src/index.js';
import { createAuditRecorder } from '../../sidecar/src/audit/index.js';
import { errorOf, memoryAudit } from './governed-sidecar.js';
import { RawClient, serialize } from './raw-client.js';
import { type ReviewWorld, startReviewWorld } from './review-world.js';

// A `review` rule and a prepared statement, without approval.grants: an approval covers the execution it was asked
// for, not the statement's later runs (a Bind with other values is another DELETE). The same execution going on
// (a row-limited Execute, PortalSuspended, Execute again) is not asked about again.
let world: ReviewWorld;
const trail = memoryAudit();
let db: ReviewWorld['db'];
let idp: ReviewWorld['idp'];
let collectorNc: ReviewWorld['collectorNc'];
let g: ReviewWorld['g'];

beforeAll(async () => {
  world = await startReviewWorld('perexec', {
    adjust: (policy, db) => {
      // Bound values in the trail too, to check they are labelled as the approver saw them.
      policy.spec.audit = { ...policy.spec.audit, captureParams: true };
      return db.su('INSERT INTO orders (id, customer_id) SELECT i, 1 FROM generate_series(200, 215) i');
    },
    sidecar: { auditRecorder: createAuditRecorder(trail) },
  });
  ({ db, idp, collectorNc, g } = world);
}, 60_000);
afterAll(async () => {
  await world?.close();
});

const lastSeq = () => world.lastSeq();
const requestsAfter = (after: number) => world.requestsAfter(after);
const nthRequest = (after: number, n: number) => world.nthRequest(after, n);

const decide = (id: string, decision: 'approved' | 'rejected') =>
  jetstream(collectorNc).publish(
    approvalSubject('decision', id),
    JSON.stringify({ v: 1, id, decision, by: { name: 'dana', groups: ['dba'] }, at: new Date().toISOString() }),
  );

const rowsWithId = async (id: number) =>
  (await db.su(`SELECT count(*)::int AS n FROM orders WHERE id = ${id}`)).rows[0].n as number;

const token = () => idp.sign({ sub: 'alice', groups: ['data-team'] });

describe('review of a prepared statement', () => {
  it('each Bind + Execute of one named statement is held and needs its own approval', async () => {
    const c = await g.client({ password: await token() });
    const sql = 'DELETE FROM orders WHERE id = $1';
    const seq = await lastSeq();
    // pg parses a named statement once per connection, then only binds and executes it.
    const first = c.query({ name: 'del', text: sql, values: [200] });
    const r1 = await nthRequest(seq, 1);
    // The approver is shown the values this execution runs with (a reviewer approved `$1` that meant every row).
    expect(r1).toMatchObject({ rule: 'write-orders-needs-review', sql, params: ['200'] });
    await decide(r1.id, 'approved');
    expect((await first).rowCount).toBe(1);

    const second = c.query({ name: 'del', text: sql, values: [201] });
    const r2 = await nthRequest(seq, 2);
    expect(r2.id).not.toBe(r1.id);
    expect(r2.sql).toBe(sql);
    expect(r2.params).toEqual(['201']);
    expect(await rowsWithId(201)).toBe(1); // held, not run
    await decide(r2.id, 'approved');
    expect((await second).rowCount).toBe(1);

    const third = errorOf(c, { name: 'del', text: sql, values: [202] } as never);
    const r3 = await nthRequest(seq, 3);
    await decide(r3.id, 'rejected');
    expect((await third)?.code).toBe('42501');
    expect(await rowsWithId(200)).toBe(0);
    expect(await rowsWithId(201)).toBe(0);
    expect(await rowsWithId(202)).toBe(1);
    expect(await requestsAfter(seq)).toHaveLength(3);
    await c.end();
  });

  it('a portal read in parts is one execution: held once; a new Bind of the statement is held again', async () => {
    const c = await RawClient.connect(g.port, { user: 'agent', database: 'app' }, await token());
    const seq = await lastSeq();
    c.send(
      serialize.parse({ name: 'ret', text: 'DELETE FROM orders WHERE id BETWEEN $1 AND $2 RETURNING id' }),
      serialize.bind({ portal: 'p', statement: 'ret', values: ['203', '205'] }),
      serialize.execute({ portal: 'p', rows: 1 }),
      serialize.flush(),
    );
    const r1 = await nthRequest(seq, 1);
    await decide(r1.id, 'approved');
    const part1 = await c.until('portalSuspended');
    expect(part1.filter((m) => m.name === 'dataRow')).toHaveLength(1);
    c.send(serialize.execute({ portal: 'p', rows: 1 }), serialize.flush());
    const part2 = await c.until('portalSuspended');
    expect(part2.filter((m) => m.name === 'dataRow')).toHaveLength(1);
    c.send(serialize.execute({ portal: 'p', rows: 0 }), serialize.sync());
    const rest = await c.until('readyForQuery');
    expect(rest.filter((m) => m.name === 'dataRow')).toHaveLength(1);
    expect(rest.find((m) => m.name === 'commandComplete')).toBeDefined();
    for (const id of [203, 204, 205]) expect(await rowsWithId(id)).toBe(0);
    expect(await requestsAfter(seq)).toHaveLength(1);

    c.send(
      serialize.bind({ portal: 'p', statement: 'ret', values: ['206', '206'] }),
      serialize.execute({ portal: 'p', rows: 0 }),
      serialize.sync(),
    );
    const r2 = await nthRequest(seq, 2);
    expect(await rowsWithId(206)).toBe(1); // held, not run
    await decide(r2.id, 'rejected');
    const denied = await c.until('readyForQuery');
    expect(denied.find((m) => m.name === 'error')).toMatchObject({ code: '42501' });
    expect(await rowsWithId(206)).toBe(1);
    expect(await requestsAfter(seq)).toHaveLength(2);
    c.end();
  });

  it('an Execute pipelined behind a Bind that fails is skipped, as PostgreSQL skips it: not held, no request', async () => {
    const c = await RawClient.connect(g.port, { user: 'agent', database: 'app' }, await token());
    const seq = await lastSeq();
    const recorded = trail.events.length;
    // One write: the Bind's value is no integer (22P02 upstream), so PostgreSQL skips the Execute on its way to Sync.
    c.send(
      serialize.parse({ name: 'badbind', text: 'DELETE FROM orders WHERE id = $1', types: [23] }),
      serialize.bind({ portal: 'bb', statement: 'badbind', values: ['not-a-number'] }),
      serialize.execute({ portal: 'bb', rows: 0 }),
      serialize.sync(),
    );
    // Answered at once, as PostgreSQL answers it (no reviewer is waited for).
    const answer = await c.until('readyForQuery');
    expect(answer.filter((m) => m.name === 'error')).toEqual([expect.objectContaining({ code: '22P02' })]);
    expect(answer.find((m) => m.name === 'commandComplete')).toBeUndefined();

    // The same statement bound right, pipelined the same way, is held as before: its request is the only one.
    c.send(
      serialize.bind({ portal: 'bb', statement: 'badbind', values: ['208'] }),
      serialize.execute({ portal: 'bb', rows: 0 }),
      serialize.sync(),
    );
    const r = await nthRequest(seq, 1);
    expect(r).toMatchObject({ sql: 'DELETE FROM orders WHERE id = $1', params: ['208'] });
    expect(await rowsWithId(208)).toBe(1); // held, not run
    await decide(r.id, 'approved');
    const ran = await c.until('readyForQuery');
    expect(ran.find((m) => m.name === 'commandComplete')).toMatchObject({ text: 'DELETE 1' });
    expect(await requestsAfter(seq)).toHaveLength(1);
    // The failed execution is in the trail once, with the Bind's error.
    const failed = trail.events
      .slice(recorded)
      .filter(
        (e) => e.type === 'statement' && e.statement.text === 'DELETE FROM orders WHERE id = $1' && e.result?.error,
      );
    expect(failed.map((e) => e.result!.error!.code)).toEqual(['22P02']);
    c.end();
  });

  it('node-postgres: a query whose value its parameter refuses fails at once, and no approver is asked', async () => {
    const c = await g.client({ password: await token() });
    const seq = await lastSeq();
    // pg sends Parse, Bind, Describe, Execute and Sync in one write.
    const failed = await errorOf(c, {
      name: 'pgbad',
      text: 'DELETE FROM orders WHERE id = $1',
      values: ['x'],
    } as never);
    expect(failed?.code).toBe('22P02');
    const held = c.query({ name: 'pgbad', text: 'DELETE FROM orders WHERE id = $1', values: [209] });
    const r = await nthRequest(seq, 1);
    expect(r.params).toEqual(['209']);
    await decide(r.id, 'approved');
    expect((await held).rowCount).toBe(1);
    expect(await requestsAfter(seq)).toHaveLength(1);
    await c.end();
  });

  it('marks each bound value text or binary, so a text value that reads like hex is not taken for bytes', async () => {
    const c = await g.client({ password: await token() });
    const sql = 'DELETE FROM orders WHERE id = $1 AND note IS DISTINCT FROM $2 AND note IS DISTINCT FROM $3';
    const seq = await lastSeq();
    // pg sends a Buffer in binary format, strings in text: `\x41` typed as text, and the byte `A`.
    const pending = c.query({ name: 'fmt', text: sql, values: ['207', '\\x41', Buffer.from('A')] });
    const r = await nthRequest(seq, 1);
    expect(r.params).toEqual(['207', '\\x41', '\\x41']);
    expect(r.paramFormats).toEqual(['text', 'text', 'binary']);
    // As the CLI and a Slack notice show them to the approver.
    const shown = formatApproval({ id: r.id, state: 'pending', request: r }, Date.now());
    expect(shown).toContain('values\n  $1 (text) = "207"\n  $2 (text) = "\\\\x41"\n  $3 (binary) = \\x41\n');
    const slack = JSON.parse(noticeBody(r, { format: 'slack', includeSql: true }, Date.now())).text as string;
    expect(slack).toContain('with `$1 (text) = "207", $2 (text) = "\\\\x41", $3 (binary) = \\x41`');
    await decide(r.id, 'approved');
    expect((await pending).rowCount).toBe(1);
    // The trail keeps the params as before and adds their formats, within schema v1.
    const event = trail.events.find(
      (e) => e.type === 'statement' && e.statement.text === sql && e.decision.action === 'allow',
    );
    expect(event?.statement).toMatchObject({
      params: ['207', '\\x41', '\\x41'],
      paramFormats: ['text', 'text', 'binary'],
    });
    expect(new Ajv({ allErrors: true }).validate(auditEventSchema, event)).toBe(true);
    await c.end();
  });
});
