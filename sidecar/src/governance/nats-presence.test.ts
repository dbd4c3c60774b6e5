import { connect, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNats, type TestNats } from '../../../test/harness/index.js';
import { natsPresence, presenceSubject } from './nats-presence.js';

// guardrails.rateLimit.scope: policy: sidecars of one policy counting each other on a real nats-server.
let nats: TestNats;
beforeAll(async () => {
  nats = await startNats();
});
afterAll(async () => {
  await nats?.stop();
});

const POLICY = { namespace: 'agents', name: 'batch.writer' };
const INTERVAL = 50;

/** One sidecar process: its own connection and a listener of POLICY that records every count it is given. */
async function pod(instance: string, opts: { shared?: () => boolean; policy?: typeof POLICY } = {}) {
  const nc = await connect({ servers: nats.url });
  const counts: number[] = [];
  const presence = natsPresence({
    onConnected: (l) => {
      l(nc);
      return () => {};
    },
    instance,
    intervalMs: INTERVAL,
    listeners: [
      { policy: () => opts.policy ?? POLICY, shared: opts.shared ?? (() => true), setPods: (n) => counts.push(n) },
    ],
  });
  return {
    nc,
    counts,
    last: () => counts.at(-1),
    async stop() {
      presence.close();
      await nc.close();
    },
  };
}

async function until(what: string, ok: () => boolean, ms = 3000): Promise<void> {
  const t0 = Date.now();
  while (!ok()) {
    if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('presence (guardrails.rateLimit.scope: policy)', () => {
  it('pods of one policy count each other; one that leaves stops counting after three periods', async () => {
    const a = await pod('a');
    const b = await pod('b');
    // Another policy, and a pod of this policy whose rate limit is per pod: neither counts.
    const other = await pod('c', { policy: { namespace: 'agents', name: 'other' } });
    const unshared = await pod('d', { shared: () => false });
    try {
      await until('a and b to see 2, the other policy 1', () => a.last() === 2 && b.last() === 2 && other.last() === 1);
      expect(other.counts.every((n) => n === 1)).toBe(true);
      expect(unshared.counts).toEqual([]);
      const c = await pod('e');
      await until('three pods', () => a.last() === 3 && c.last() === 3);
      await c.stop();
      const t0 = Date.now();
      await until('e forgotten', () => a.last() === 2 && b.last() === 2);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(2 * INTERVAL);
    } finally {
      await Promise.all([a.stop(), b.stop(), other.stop(), unshared.stop()]);
    }
  });

  it('a pod cut off from NATS keeps its last count instead of taking the whole budget', async () => {
    const a = await pod('a2');
    const b = await pod('b2');
    try {
      await until('2 pods', () => a.last() === 2);
      const before = a.counts.length;
      // a's connection is gone (it hears nobody, itself included): no new count, the last one stands.
      await a.nc.close();
      await new Promise((r) => setTimeout(r, 6 * INTERVAL));
      expect(a.counts.slice(before).every((n) => n === 2)).toBe(true);
      expect(a.last()).toBe(2);
      // b still hears itself, and no longer a.
      await until('b alone', () => b.last() === 1);
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });

  it('ignores what is not a presence message, and a made-up instance only makes the shares smaller', async () => {
    const a = await pod('a3');
    const intruder: NatsConnection = await connect({ servers: nats.url });
    try {
      intruder.publish(presenceSubject(POLICY), 'garbage');
      intruder.publish(presenceSubject(POLICY), JSON.stringify({ instance: 7 }));
      await until('a alone', () => a.last() === 1);
      const flood = setInterval(() => intruder.publish(presenceSubject(POLICY), JSON.stringify({ instance: 'x' })), 20);
      try {
        await until('a counts the made-up pod', () => a.last() === 2);
      } finally {
        clearInterval(flood);
      }
    } finally {
      await intruder.close();
      await a.stop();
    }
  });
});
