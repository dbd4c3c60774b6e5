import { connect, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNats, type TestNats } from '../../../test/harness/index.js';
import { type ControlListener, natsControl } from './nats-control.js';

// The read-back of live control state by a NATS user set up before sidecars asked for the control stream's info
// (own NATS, older permissions), while no collector has created the stream: PostgreSQL-free, a real nats-server.
let nats: TestNats;
let nc: NatsConnection;
beforeAll(async () => {
  nats = await startNats({
    config: `jetstream: {}
authorization: {
  users: [{
    user: old, password: old,
    permissions: { publish: { allow: [">"], deny: ["$JS.API.STREAM.INFO.>"] }, subscribe: { allow: [">"] } }
  }]
}`,
  });
  nc = await connect({ servers: nats.url, user: 'old', pass: 'old' });
}, 30_000);
afterAll(async () => {
  await nc?.close();
  await nats?.stop();
});

const listener = (sessions: string[]): ControlListener => ({
  policy: () => ({ namespace: 'agents', name: 'analyst' }),
  decisionKeys: () => [],
  sessionIds: () => sessions,
  hasSession: (id) => sessions.includes(id),
  terminate: () => 0,
  suspend: () => 0,
  suspension: () => undefined,
});

describe('control read-back without $JS.API.STREAM.INFO', () => {
  it('asks for the subjects in parallel: a missing stream costs one timeout, not one per subject', async () => {
    const warnings: string[] = [];
    const started = performance.now();
    const control = natsControl({
      onConnected: (l) => {
        l(nc);
        return () => {};
      },
      listeners: [listener(['s1', 's2', 's3', 's4', 's5'])],
      emit: () => {},
      requestTimeoutMs: 1000,
      log: (level, msg, fields) => {
        if (level === 'warn' && msg === 'control: could not read back') warnings.push(String(fields?.subject));
      },
    });
    await control.ready;
    const took = performance.now() - started;
    control.close();
    // The policy's subject and the five sessions' each went unanswered (the stream does not exist) and were reported.
    expect(warnings.sort()).toEqual([
      'pgwarden.control.policy.agents.analyst',
      ...['s1', 's2', 's3', 's4', 's5'].map((s) => `pgwarden.control.session.${s}`),
    ]);
    // One after another they would take six timeouts (6 s).
    expect(took).toBeGreaterThanOrEqual(900);
    expect(took).toBeLessThan(3000);
  });
});
