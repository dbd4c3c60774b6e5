import { AckPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNats, type TestNats } from '../../../test/harness/index.js';
import { JetStreamAcks } from './jetstream-acks.js';
import { AUDIT_STREAM, ensureStream } from './jetstream-source.js';

const NANOS_PER_MS = 1_000_000;

/** Counts the protocol writes of `nc` (its handler's `sendCommand`, which every publish goes through). */
function countWrites(nc: NatsConnection): { readonly count: number; readonly text: string } {
  const protocol = (nc as unknown as { protocol: { sendCommand(cmd: string | Uint8Array, ...rest: unknown[]): void } })
    .protocol;
  const send = protocol.sendCommand.bind(protocol);
  const seen = { count: 0, text: '' };
  protocol.sendCommand = (cmd, ...rest) => {
    seen.count++;
    if (typeof cmd === 'string') seen.text += cmd;
    send(cmd, ...rest);
  };
  return seen;
}

describe('JetStream acks written per turn (real nats-server)', () => {
  let nats: TestNats;
  let nc: NatsConnection;

  beforeAll(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
    await ensureStream(await jetstreamManager(nc));
  });
  afterAll(async () => {
    await nc?.close();
    await nats?.stop();
  });

  /** A durable explicit-ack consumer with `n` fresh messages delivered to it, not yet acknowledged. */
  async function delivered(durable: string, n: number) {
    const jsm = await jetstreamManager(nc);
    await jsm.consumers.add(AUDIT_STREAM, {
      durable_name: durable,
      ack_policy: AckPolicy.Explicit,
      filter_subject: `pgwarden.audit.${durable}`,
      ack_wait: 1000 * NANOS_PER_MS,
    });
    const js = jetstream(nc);
    for (let i = 0; i < n; i++) await js.publish(`pgwarden.audit.${durable}`, `{"n":${i}}`);
    const consumer = await js.consumers.get(AUDIT_STREAM, durable);
    const msgs = [];
    for await (const m of await consumer.fetch({ max_messages: n, expires: 5000 })) msgs.push(m);
    expect(msgs).toHaveLength(n);
    return { msgs, info: () => jsm.consumers.info(AUDIT_STREAM, durable) };
  }

  it('acknowledges every message of a turn, each by itself, in one protocol write', async () => {
    const { msgs, info } = await delivered('acks-turn', 50);
    expect((await info()).num_ack_pending).toBe(50);
    const acks = new JetStreamAcks(nc);
    expect(acks.batched).toBe(true);
    const writes = countWrites(nc);
    for (const m of msgs) acks.ack(m.reply);
    expect(writes.count).toBe(0); // written at the end of the turn
    await new Promise((r) => setImmediate(r));
    expect(writes.count).toBe(1);
    await nc.flush();
    // Per message, with the +ACK payload JsMsg.ack() sends: never an AckAll of the others' deliveries.
    expect(writes.text.match(/^PUB \S+ 4\r\n\+ACK\r\n/gm)).toHaveLength(50);
    const after = await info();
    expect(after.num_ack_pending).toBe(0);
    expect(after.ack_floor.stream_seq).toBe(after.delivered.stream_seq);
    // Past ack_wait nothing is offered again.
    await new Promise((r) => setTimeout(r, 1500));
    expect((await info()).num_redelivered).toBe(0);
  });

  it('acknowledges only the messages named: the others are redelivered', async () => {
    const { msgs, info } = await delivered('acks-some', 6);
    const acks = new JetStreamAcks(nc);
    for (const m of msgs.filter((_, i) => i % 2 === 0)) acks.ack(m.reply);
    await new Promise((r) => setImmediate(r));
    await nc.flush();
    expect((await info()).num_ack_pending).toBe(3);
  });

  it('sends nothing, and throws nothing, once the connection is closed', async () => {
    const other = await connect({ servers: nats.url });
    const acks = new JetStreamAcks(other);
    await other.close();
    expect(() => acks.ack('$JS.ACK.X.y.1.1.1.1.0')).not.toThrow();
    await new Promise((r) => setTimeout(r, 10));
  });
});
