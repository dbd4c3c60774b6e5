import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CONTROL_STREAM,
  type ControlMessage,
  controlSubject,
  decisionSigningKey,
  type SuspensionMessage,
  signControl,
  type TerminateMessage,
} from '../../policy/src/index.js';
import { NatsAuditSink } from '../../sidecar/src/audit/index.js';
import { startNats, type TestNats } from '../harness/index.js';
import { createGovernanceDb, type GovernanceDb } from './governance-db.js';
import { errorOf, examplePolicy, type Governed, startGoverned, until } from './governed-sidecar.js';

// Live control through the real sidecar, PostgreSQL and a real nats-server with JetStream: the test plays the
// collector (its own side is tested in collector/), publishing terminate / suspend / resume messages to the
// PGWARDEN_CONTROL stream the way it does, signed with the key the policy's approval.decisionKeys names.
let db: GovernanceDb;
let nats: TestNats;
let sidecarNc: NatsConnection;
let collectorNc: NatsConnection;
let g: Governed;

const keys = generateKeyPairSync('ed25519');
const signingKey = decisionSigningKey(String(keys.privateKey.export({ type: 'pkcs8', format: 'pem' })));
const publicPem = String(keys.publicKey.export({ type: 'spki', format: 'pem' }));

function policy(): Record<string, any> {
  const p = examplePolicy('analyst-readonly.yaml'); // metadata: {name: analyst, namespace: agents}
  p.spec.role = db.roles.writer;
  p.spec.rules.push({ name: 'write-orders', action: 'allow', statements: ['insert'], tables: ['public.orders'] });
  p.spec.guardrails.blockedFunctions = [];
  delete p.spec.guardrails.statementTimeout;
  p.spec.approval = { decisionKeys: [publicPem] };
  return p;
}

const base = (reason: string) => ({
  v: 1 as const,
  id: randomUUID(),
  by: 'dana',
  reason,
  at: new Date().toISOString(),
});
const terminate = (session: string, reason = 'runaway agent'): TerminateMessage =>
  signControl({ ...base(reason), kind: 'terminate', session }, signingKey);
const suspension = (kind: 'suspend' | 'resume', reason = 'incident 7'): SuspensionMessage =>
  signControl({ ...base(reason), kind, policy: { namespace: 'agents', name: 'analyst' } }, signingKey);

const publish = (m: ControlMessage, subject = controlSubject(m)) =>
  jetstream(collectorNc).publish(subject, JSON.stringify(m));

/** A new session and its id (the one the sidecar did not have before). */
async function session(): Promise<{ c: Awaited<ReturnType<Governed['client']>>; id: string }> {
  const before = new Set(g.gs.listeners[0].sidecar.sessionIds());
  const c = await g.client();
  const id = g.gs.listeners[0].sidecar.sessionIds().find((s) => !before.has(s));
  if (!id) throw new Error('no new session id');
  return { c, id };
}

/**
 * How the sidecar ended `c`: the FATAL its next query gets or, when the FATAL reached it while idle (the sidecar can
 * apply a control message before the test sends that query), the one it emitted then: node-postgres then refuses the
 * query itself as "not queryable".
 */
function endedWith(c: pg.Client): () => Promise<unknown> {
  const emitted = new Promise((resolve) => c.once('error', resolve));
  return async () => {
    const err = await errorOf(c, 'SELECT 1');
    return err && /not queryable/.test(err.message) ? emitted : err;
  };
}

const metric = async (kind: string, outcome: string) => {
  const text = await g.gs.listeners[0].sidecar.metrics.registry.metrics();
  const m = new RegExp(`^pgwarden_control_messages_total\\{kind="${kind}",outcome="${outcome}"\\} (\\d+)$`, 'm').exec(
    text,
  );
  return m ? Number(m[1]) : 0;
};

beforeAll(async () => {
  [db, nats] = await Promise.all([createGovernanceDb('control'), startNats()]);
  sidecarNc = await connect({ servers: nats.url });
  collectorNc = await connect({ servers: nats.url });
  // As the collector creates it: the last message per subject is the state.
  await (await jetstreamManager(collectorNc)).streams.add({
    name: CONTROL_STREAM,
    subjects: ['pgwarden.control.>'],
    max_msgs_per_subject: 1,
    allow_direct: true,
  });
  g = await startGoverned(db.name, policy(), {
    sidecar: {
      control: {
        onConnected: (l) => {
          l(sidecarNc);
          return () => {};
        },
      },
    },
  });
}, 60_000);
afterAll(async () => {
  await g?.close();
  await sidecarNc?.close();
  await collectorNc?.close();
  await Promise.all([nats?.stop(), db?.drop()]);
});

describe('terminate', () => {
  it('ends only that session, cancelling what it runs upstream, and says who and why', async () => {
    const a = await session();
    const b = await session();
    await a.c.query('BEGIN');
    await a.c.query('INSERT INTO orders (id, customer_id) VALUES (2001, 1)');
    const running = errorOf(a.c, 'SELECT pg_sleep(30) /* control-test */');
    const active = () =>
      db
        .su(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE '%control-test%' AND pid <> pg_backend_pid()",
        )
        .then((r) => r.rows[0].n as number);
    await until('the sleep to start', active, (n) => n === 1);

    const m = terminate(a.id);
    await publish(m);
    expect(await running).toMatchObject({
      code: '57P01',
      message: 'terminating connection due to administrator command: ended by dana through pgwarden: runaway agent',
    });
    await until('the sleep to be cancelled', active, (n) => n === 0);
    const rows = () => db.su('SELECT count(*)::int AS n FROM orders WHERE id = 2001').then((r) => r.rows[0].n);
    await until('the insert to be rolled back', rows, (n) => n === 0);
    // The other session goes on.
    expect((await b.c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    expect(g.gs.listeners[0].sidecar.sessionIds()).toEqual([b.id]);

    const applied = await g.waitEvent((e) => e.type === 'control.applied');
    expect(applied).toEqual({
      type: 'control.applied',
      control: {
        kind: 'terminate',
        id: m.id,
        by: 'dana',
        reason: 'runaway agent',
        at: m.at,
        session: a.id,
        signed: true,
        sessionsEnded: 1,
      },
    });
    const end = await until(
      'the session.end',
      () => g.audit.events.find((e) => e.type === 'session.end' && e.session.id === a.id),
      (e) => e !== undefined,
    );
    expect(end?.end.error).toBe(`terminated by dana (control ${m.id}): runaway agent`);
    expect(await metric('terminate', 'applied')).toBe(1);
    await b.c.end();
  });

  it('ignores a message without a valid signature, or on another session’s subject', async () => {
    const a = await session();
    const b = await session();
    const before = g.events.length;
    // Unsigned: the policy names decision keys, so only what they signed counts.
    const { sig: _sig, ...unsigned } = terminate(a.id);
    await publish(unsigned as TerminateMessage);
    // Signed by someone else's key.
    const other = generateKeyPairSync('ed25519').privateKey;
    await publish(signControl({ ...base('x'), kind: 'terminate', session: a.id }, other));
    // A good message for b, published on a's subject: the subject is what NATS permissions guard.
    await publish(terminate(b.id), controlSubject(terminate(a.id)));
    // Garbage.
    await jetstream(collectorNc).publish(`pgwarden.control.session.${a.id}`, 'not json');
    await until(
      'the refusals',
      () => metric('unknown', 'malformed'),
      (n) => n === 1,
    );
    expect(await metric('terminate', 'signature')).toBe(2);
    expect(await metric('terminate', 'subject')).toBe(1);
    expect(g.events.slice(before).filter((e) => e.type === 'control.applied')).toEqual([]);
    expect((await a.c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    expect((await b.c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    await Promise.all([a.c.end(), b.c.end()]);
  });
});

describe('suspend and resume', () => {
  it('a suspension ends every session and refuses logins until it is lifted', async () => {
    const a = await session();
    const b = await session();
    const before = g.events.length;
    const s = suspension('suspend');
    const ended = [a.c, b.c].map(endedWith);
    await publish(s);
    for (const end of ended)
      expect(await end()).toMatchObject({
        code: '57P01',
        message: 'terminating connection because pgwarden policy "analyst" was suspended',
      });
    const applied = await g.waitEvent((e) => e.type === 'control.applied', before);
    expect(applied).toMatchObject({
      control: { kind: 'suspend', id: s.id, policy: { namespace: 'agents', name: 'analyst' }, sessionsEnded: 2 },
    });
    await expect(g.client()).rejects.toMatchObject({
      code: '28000',
      message: 'pgwarden: policy "analyst" is suspended: new sessions are refused',
    });

    const r = suspension('resume', 'incident 7 over');
    await publish(r);
    await g.waitEvent((e) => e.type === 'control.applied' && (e as any).control.id === r.id, before);
    const c = await g.client();
    expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    await c.end();
  });

  it('a replayed older message changes nothing: an old resume cannot lift a newer suspension', async () => {
    const before = g.events.length;
    const oldResume = suspension('resume', 'old');
    await new Promise((r) => setTimeout(r, 5));
    const s = suspension('suspend', 'newer');
    await publish(s);
    await g.waitEvent((e) => e.type === 'control.applied' && (e as any).control.id === s.id, before);
    // Published later, written earlier: someone able to publish re-sends an old signed message.
    await publish(oldResume);
    await publish(s);
    await new Promise((r) => setTimeout(r, 300));
    await expect(g.client()).rejects.toMatchObject({ code: '28000' });
    expect(g.events.slice(before).filter((e) => e.type === 'control.applied')).toHaveLength(1);
    const r = suspension('resume', 'done');
    await publish(r);
    await g.waitEvent((e) => e.type === 'control.applied' && (e as any).control.id === r.id, before);
    const c = await g.client();
    await c.end();
  });

  it('a sidecar starting during a suspension lets nobody in before it has read the suspension back', async () => {
    const before = g.events.length;
    const s = suspension('suspend', 'starting pods too');
    await publish(s);
    await g.waitEvent((e) => e.type === 'control.applied' && (e as any).control.id === s.id, before);
    // Its NATS connection comes up only after a client has already tried to log in.
    const nc = await connect({ servers: nats.url });
    let connected: ((c: NatsConnection) => void) | undefined;
    const late = await startGoverned(db.name, policy(), {
      sidecar: {
        control: {
          onConnected: (l) => {
            connected = l;
            return () => {};
          },
        },
      },
    });
    try {
      const login = late.client().then(
        () => 'let in',
        (err: Error & { code?: string }) => `${err.code}: ${err.message}`,
      );
      await new Promise((r) => setTimeout(r, 300));
      expect(late.gs.listeners[0].sidecar.sessions()).toBe(1); // the login waits
      connected?.(nc);
      // The read-back suspends the policy, which ends the waiting login as it ends every session.
      expect(await login).toBe('57P01: terminating connection because pgwarden policy "analyst" was suspended');
      await expect(late.client()).rejects.toMatchObject({ code: '28000' });
    } finally {
      await late.close();
      await nc.close();
    }
    const r = suspension('resume', 'pods may start');
    await publish(r);
    await g.waitEvent((e) => e.type === 'control.applied' && (e as any).control.id === r.id, before);
  });

  it('a sidecar whose NATS stays away at start refuses logins until it knows (fail closed); failMode open lets them in', async () => {
    let connected: ((c: NatsConnection) => void) | undefined;
    const control = {
      onConnected: (l: (c: NatsConnection) => void) => {
        connected = l;
        return () => {};
      },
    };
    const late = await startGoverned(db.name, policy(), { sidecar: { control, liveStateWaitMs: 300 } });
    const open = policy();
    open.spec.liveControl = { failMode: 'open' };
    const lenient = await startGoverned(db.name, open, {
      sidecar: { control: { onConnected: () => () => {} }, liveStateWaitMs: 300 },
    });
    const nc = await connect({ servers: nats.url });
    try {
      const known = async () =>
        /^pgwarden_live_control_state_known (\d)$/m.exec(
          await late.gs.listeners[0].sidecar.metrics.registry.metrics(),
        )?.[1];
      expect(await known()).toBe('0');
      // NATS never answered: refused with 57P03 (clients retry), recorded with its reason.
      const err = await late.client().then(
        () => undefined,
        (e: Error & { code?: string }) => e,
      );
      expect(err?.code).toBe('57P03');
      expect(err?.message).toBe(
        'pgwarden: cannot tell yet whether policy "analyst" is suspended (live control over NATS has not answered since this sidecar started); try again',
      );
      const refusal = (await late.waitEvent((e) => e.type === 'login.refused', 0)) as any;
      expect(refusal).toMatchObject({ reason: 'live_state_unknown', code: '57P03' });
      // The policy that chose availability lets the agent in after the wait, not knowing.
      const c = await lenient.client();
      await c.query('SELECT 1');
      await c.end();
      // NATS answers (nothing is suspended now): the state is known, logins go through.
      connected?.(nc);
      await until(
        'a login to succeed once the state is read back',
        () =>
          late.client().then(
            async (ok) => {
              await ok.end();
              return true;
            },
            () => false,
          ),
        (ok) => ok,
      );
      expect(await known()).toBe('1');
    } finally {
      await late.close();
      await lenient.close();
      await nc.close();
    }
  });

  it('a sidecar that starts (or reconnects) after the suspension reads it back from the stream', async () => {
    const s = suspension('suspend', 'read back');
    await publish(s);
    await until(
      'the running sidecar to apply it',
      () => metric('suspend', 'applied'),
      (n) => n === 4,
    );
    // A second sidecar of the same policy, auditing to NATS: live control comes with its sink's connection.
    const sink = new NatsAuditSink({ servers: [nats.url] });
    const late = await startGoverned(db.name, policy(), { sidecar: { audit: sink } });
    try {
      const applied = (await late.waitEvent((e) => e.type === 'control.applied', 0, 10_000)) as any;
      expect(applied.control).toMatchObject({ kind: 'suspend', id: s.id, signed: true, sessionsEnded: 0 });
      await expect(late.client()).rejects.toMatchObject({ code: '28000' });
      // Lifted again: both let agents in.
      await publish(suspension('resume'));
      await until(
        'the late sidecar to resume',
        () => late.events.filter((e) => e.type === 'control.applied').length,
        (n) => n === 2,
      );
      const c = await late.client();
      expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    } finally {
      await late.close();
      await sink.close();
    }
    await until(
      'the first sidecar to resume',
      () => metric('resume', 'applied'),
      (n) => n === 4,
    );
    const c = await g.client();
    expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    await c.end();
  });
});
