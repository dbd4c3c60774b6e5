import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type AuditEvent,
  auditEventSchema,
  auditSigner,
  auditSubject,
  auditVerifyKey,
  verifyChain,
  verifyCheckpoint,
} from '@pgwarden/policy';
import { Ajv } from 'ajv';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { startNats } from '../../../test/harness/index.js';
import { createAuditRecorder } from './audit-recorder.js';
import type { AuditSink } from './audit-sink.js';
import { NatsAuditSink } from './nats-sink.js';
import { readAuditStream, selectRecord, sessionInfo } from './nats-test-kit.js';

const validate = new Ajv({ allErrors: true }).compile(auditEventSchema);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const privatePem = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
const trusted = auditVerifyKey(publicKey.export({ format: 'pem', type: 'spki' }).toString());
const keyFor = (id: string) => (id === trusted.keyId ? trusted.key : undefined);

/**
 * Sinks as the recorder meets them: one taking text (file and stdout are such; statement events then take the
 * direct JSON path) and one taking event objects (NATS is such). Both keep what they are given, parsed.
 */
function sinks(): [string, () => { sink: AuditSink; events: AuditEvent[] }][] {
  const base = { ready: () => true, close: async () => {} };
  return [
    [
      'text sink (statement-json path)',
      () => {
        const events: AuditEvent[] = [];
        return {
          events,
          sink: {
            ...base,
            emit: () => expect.fail('a text sink gets text'),
            emitJson: (j) => void events.push(JSON.parse(j)),
          },
        };
      },
    ],
    [
      'object sink',
      () => {
        const events: AuditEvent[] = [];
        return { events, sink: { ...base, emit: (e) => void events.push(JSON.parse(JSON.stringify(e))) } };
      },
    ],
  ];
}

async function until(fn: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await sleep(5);
  }
}

const checkpointsOf = (events: AuditEvent[], session: string) =>
  events.filter((e) => e.session.id === session && e.type === 'audit.checkpoint');

describe.each(sinks())('audit checkpoints, %s', (_name, make) => {
  const interval = 40;

  it('sign each chain with new events once per interval, leave idle chains alone, sign session.end and close at once', async () => {
    const { sink, events } = make();
    const rec = createAuditRecorder(sink, {
      instanceId: 'i1',
      source: { namespace: 'agents', pod: 'agent-0' },
      policy: () => ({ name: 'analytics.agent', hash: 'sha256:1' }),
      signer: auditSigner(privatePem),
      checkpointIntervalMs: interval,
    });
    rec.policyLoaded({ name: 'analytics.agent', hash: 'sha256:1' });
    const a = rec.openSession(sessionInfo('sess-a'));
    const b = rec.openSession(sessionInfo('sess-b'));
    a.statement(selectRecord(1));
    a.statement(selectRecord(2));
    b.statement(selectRecord(3));
    // Nothing per statement: signing waits for the sweep.
    expect(events.filter((e) => e.type === 'audit.checkpoint')).toEqual([]);

    await until(() => ['sess-a', 'sess-b', 'sidecar-i1'].every((s) => checkpointsOf(events, s).length === 1));
    // Each signs the event right before it, which was the chain's latest.
    expect(checkpointsOf(events, 'sess-a')[0].checkpoint?.seq).toBe(3);
    // The sidecar's own chain is signed last, over the heads of the session chains including their checkpoints.
    const own = (seq: number) => events.find((e) => e.session.id === 'sidecar-i1' && e.session.seq === seq);
    expect(checkpointsOf(events, 'sidecar-i1')[0].checkpoint?.seq).toBe(2);
    const aCheckpoint = checkpointsOf(events, 'sess-a')[0];
    expect(own(2)?.type).toBe('audit.heads');
    expect(own(2)?.heads?.chains).toEqual(expect.arrayContaining([{ id: 'sess-a', seq: 4, hash: aCheckpoint.hash }]));

    a.statement(selectRecord(4));
    await until(() => checkpointsOf(events, 'sess-a').length === 2);
    await sleep(4 * interval);
    // Chains with nothing new since their checkpoint get no other: one more for sess-a, and one more for the
    // sidecar's chain, whose heads named sess-a's new end; then all stay as they are.
    expect(checkpointsOf(events, 'sess-a')).toHaveLength(2);
    expect(checkpointsOf(events, 'sess-b')).toHaveLength(1);
    expect(checkpointsOf(events, 'sidecar-i1')).toHaveLength(2);
    const settled = events.length;
    await sleep(4 * interval);
    expect(events).toHaveLength(settled);

    // A steady trickle of statements is signed per interval, not per statement.
    const before = checkpointsOf(events, 'sess-a').length;
    const started = Date.now();
    for (let i = 0; i < 40; i++) {
      a.statement(selectRecord(100 + i));
      await sleep(3);
    }
    const elapsed = Date.now() - started;
    const during = checkpointsOf(events, 'sess-a').length - before;
    expect(during).toBeGreaterThanOrEqual(1);
    expect(during).toBeLessThanOrEqual(Math.ceil(elapsed / interval) + 1);

    b.statement(selectRecord(5));
    b.end({});
    // At once, not at the next sweep: a closed session is signed to its last event.
    const bEvents = events.filter((e) => e.session.id === 'sess-b');
    expect(bEvents.slice(-2).map((e) => e.type)).toEqual(['session.end', 'audit.checkpoint']);
    expect(bEvents.at(-2)?.end?.statements).toBe(2);

    a.statement(selectRecord(6));
    rec.policyRejected({ code: 'PGW_X', message: 'bad' }, 'analytics.agent');
    await rec.close();
    // Close signs what the last sweep left: the sidecar's own chain and a session still open.
    expect(events.filter((e) => e.session.id === 'sidecar-i1').at(-1)?.type).toBe('audit.checkpoint');
    expect(events.filter((e) => e.session.id === 'sess-a').at(-1)?.type).toBe('audit.checkpoint');
    const count = events.length;
    await sleep(3 * interval);
    expect(events).toHaveLength(count);

    const checkpoints = events.filter((e) => e.type === 'audit.checkpoint');
    for (const e of checkpoints) {
      expect(verifyCheckpoint(e, keyFor)).toEqual({ ok: true, keyId: trusted.keyId, seq: e.session.seq - 1 });
      const signed = events.find((x) => x.session.id === e.session.id && x.session.seq === e.session.seq - 1);
      expect(e.prevHash).toBe(signed?.hash);
      expect(signed?.type).not.toBe('audit.checkpoint');
    }
    for (const e of events) expect(validate(e), JSON.stringify(validate.errors)).toBe(true);
    expect(verifyChain(events)).toMatchObject({ ok: true, sessions: 3, open: ['sess-a'] });
    // A checkpoint repeats its session's source, identity, database and policy: same subject, same namespace check.
    for (const s of ['sess-a', 'sess-b']) {
      const start = events.find((e) => e.session.id === s && e.type === 'session.start')!;
      for (const c of checkpointsOf(events, s)) {
        expect(c).toMatchObject({ source: start.source, identity: start.identity, database: start.database });
        expect(auditSubject(c)).toBe(auditSubject(start));
      }
    }
    // Under another key nothing verifies.
    const other = auditVerifyKey(
      generateKeyPairSync('ed25519').publicKey.export({ format: 'pem', type: 'spki' }).toString(),
    );
    const forged = { ...checkpoints[0], checkpoint: { ...checkpoints[0].checkpoint!, key: other.keyId } };
    expect(verifyCheckpoint(forged, () => other.key)).toEqual({ ok: false, problem: 'bad-signature' });
  });

  it('without a signer: no checkpoint events, nothing changes', async () => {
    const { sink, events } = make();
    const rec = createAuditRecorder(sink, { instanceId: 'i2', checkpointIntervalMs: interval });
    rec.policyLoaded({ name: 'p', hash: 'sha256:1' });
    const s = rec.openSession(sessionInfo('plain'));
    s.statement(selectRecord(1));
    await sleep(3 * interval);
    s.end({});
    await rec.close();
    // The heads of the session chain are recorded all the same (audit-heads.test.ts): signing is what is off.
    expect(events.map((e) => e.type)).toEqual([
      'policy.loaded',
      'session.start',
      'statement',
      'audit.heads',
      'session.end',
      'audit.heads',
    ]);
  });
});

describe('audit checkpoints through the NATS sink (real nats-server)', () => {
  it('travel on the subject of the events they sign', async () => {
    const nats = await startNats();
    try {
      const spool = mkdtempSync(join(tmpdir(), 'pgwarden-checkpoint-spool-'));
      dirs.push(spool);
      const sink = new NatsAuditSink({
        servers: [nats.url],
        spool: { dir: spool, maxBytes: 1e8 },
        registry: new Registry(),
      });
      const rec = createAuditRecorder(sink, {
        instanceId: 'n1',
        source: { namespace: 'agents' },
        policy: () => ({ name: 'analytics.agent', hash: 'sha256:1' }),
        signer: auditSigner(privatePem),
        checkpointIntervalMs: 50,
      });
      rec.policyLoaded({ name: 'analytics.agent', hash: 'sha256:1' });
      for (const [id, ns] of [
        ['in-agents', 'agents'],
        ['in-billing', 'billing'],
      ]) {
        const s = rec.openSession(sessionInfo(id, ns));
        s.statement(selectRecord(1));
        s.end({});
      }
      // The sidecar's own chain is signed by the sweep (closing the sink would leave its last events spooled).
      await sleep(200);
      await sink.whenIdle(10_000);
      await rec.close();
      const stored = await readAuditStream(nats.url);
      const checkpoints = stored.filter((m) => m.event.type === 'audit.checkpoint');
      expect(checkpoints.map((m) => [m.event.session.id, m.subject]).sort()).toEqual([
        ['in-agents', 'pgwarden.audit.agents.analytics_agent'],
        ['in-billing', 'pgwarden.audit.billing.analytics_agent'],
        ['sidecar-n1', 'pgwarden.audit.agents.analytics_agent'],
      ]);
      for (const m of checkpoints) expect(verifyCheckpoint(m.event, keyFor).ok).toBe(true);
      expect(verifyChain(stored.map((m) => m.event))).toMatchObject({ ok: true, sessions: 3 });
    } finally {
      await nats.stop();
    }
  });
});
