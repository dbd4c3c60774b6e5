import { jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { AUDIT_STREAM } from '@pgwarden/policy';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNats, type TestNats } from '../../../test/harness/index.js';
import { DEFAULT_STREAM_LIMITS, ensureAuditStream } from './audit-stream.js';
import { JetStreamPublisher, type Publishable } from './jetstream-publisher.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const nextTurn = () => new Promise((r) => setImmediate(r));

describe('JetStreamPublisher', () => {
  let nats: TestNats;
  let nc: NatsConnection;

  beforeAll(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
    await ensureAuditStream(await jetstreamManager(nc), DEFAULT_STREAM_LIMITS);
  });
  afterAll(async () => {
    await nc?.close();
    await nats?.stop();
  });

  const stored = async () => (await (await jetstreamManager(nc)).streams.info(AUDIT_STREAM)).state.messages;
  const item = (n: number): Publishable => ({
    subject: 'pgwarden.audit.test.pub',
    msgID: `pub.${n}`,
    data: JSON.stringify({ n }),
  });

  it('holds publishes from separate turns for the linger, then sends them together and reports each ack', async () => {
    const acked: Publishable[] = [];
    const failures: unknown[] = [];
    const pub = new JetStreamPublisher<Publishable>(
      5000,
      (x) => acked.push(x),
      (e) => failures.push(e),
      // Long enough that the checks below run well inside it even on a loaded machine.
      2000,
    );
    pub.attach(nc);
    const before = await stored();
    const items = [1, 2, 3].map(item);
    for (const x of items) {
      pub.publish(x);
      await nextTurn();
    }
    expect(pub.inflight).toBe(3);
    await nc.flush();
    // Nothing reached the stream yet: all three still wait for the linger to end.
    expect(await stored()).toBe(before);
    for (let i = 0; i < 250 && acked.length < 3; i++) await sleep(20);
    expect(acked).toEqual(items);
    expect(failures).toEqual([]);
    expect(pub.inflight).toBe(0);
    expect(await stored()).toBe(before + 3);
    pub.close();
  });

  it('forget() drops held publishes: none reaches the stream and no ack is reported', async () => {
    const acked: Publishable[] = [];
    const pub = new JetStreamPublisher<Publishable>(
      5000,
      (x) => acked.push(x),
      () => {},
      50,
    );
    pub.attach(nc);
    const before = await stored();
    pub.publish(item(10));
    pub.publish(item(11));
    pub.forget();
    pub.publish(item(12));
    await sleep(300);
    await nc.flush();
    expect(acked).toEqual([item(12)]);
    expect(await stored()).toBe(before + 1);
    pub.close();
  });
});
