import { jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { AUDIT_STREAM } from '@pgwarden/policy';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNats, type TestNats } from '../../../test/harness/index.js';
import { DEFAULT_STREAM_LIMITS, ensureAuditStream } from './audit-stream.js';
import { BATCH_HEADER, JetStreamPublisher, type Publishable } from './jetstream-publisher.js';

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
  const item = (n: number, subject = 'pgwarden.audit.test.pub'): Publishable => ({
    subject,
    msgID: `pub.${n}`,
    data: JSON.stringify({ n }),
  });
  /** The stream's messages after sequence `after`: subject, id, batch header, body. */
  const messagesAfter = async (after: number) => {
    const jsm = await jetstreamManager(nc);
    const last = (await jsm.streams.info(AUDIT_STREAM)).state.last_seq;
    const out: { subject: string; id?: string; batch?: string; body: string }[] = [];
    for (let seq = after + 1; seq <= last; seq++) {
      const m = await jsm.streams.getMessage(AUDIT_STREAM, { seq });
      if (!m) continue;
      out.push({
        subject: m.subject,
        id: m.header.get('Nats-Msg-Id'),
        batch: m.header.get(BATCH_HEADER) || undefined,
        body: m.string(),
      });
    }
    return out;
  };
  const lastSeq = async () => (await (await jetstreamManager(nc)).streams.info(AUDIT_STREAM)).state.last_seq;
  const waitUntil = async (ok: () => boolean) => {
    for (let i = 0; i < 250 && !ok(); i++) await sleep(20);
  };

  it('holds publishes from separate turns for the linger, then sends them as one message and reports the ack', async () => {
    const acked: Publishable[] = [];
    const failures: unknown[] = [];
    const pub = new JetStreamPublisher<Publishable>(
      5000,
      (x) => acked.push(...x),
      (e) => failures.push(e),
      // Long enough that the checks below run well inside it even on a loaded machine.
      2000,
    );
    pub.attach(nc);
    const before = await stored();
    const items = [1, 2, 3].map((n) => item(n));
    for (const x of items) {
      pub.publish(x);
      await nextTurn();
    }
    expect(pub.inflight).toBe(3);
    await nc.flush();
    // Nothing reached the stream yet: all three still wait for the linger to end.
    expect(await stored()).toBe(before);
    for (let i = 0; i < 250 && acked.length < 3; i++) await sleep(20);
    expect(failures).toEqual([]);
    expect(acked.map((x) => x.msgID)).toEqual(['pub.1', 'pub.2', 'pub.3']);
    expect(failures).toEqual([]);
    expect(pub.inflight).toBe(0);
    expect(await stored()).toBe(before + 1);
    pub.close();
  });

  it('forget() drops held publishes: none reaches the stream and no ack is reported', async () => {
    const acked: Publishable[] = [];
    const pub = new JetStreamPublisher<Publishable>(
      5000,
      (x) => acked.push(...x),
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
    expect(acked.map((x) => x.msgID)).toEqual(['pub.12']);
    expect(await stored()).toBe(before + 1);
    pub.close();
  });

  it('groups held events by subject, in order, within the event and size limits; one event alone stays as it was', async () => {
    const acks: string[][] = [];
    const pub = new JetStreamPublisher<Publishable>(
      5000,
      (x) => acks.push(x.map((i) => i.msgID)),
      () => {},
      20,
      { maxEvents: 3, maxChars: 40 },
    );
    pub.attach(nc);
    const after = await lastSeq();
    const a = 'pgwarden.audit.test.a';
    const b = 'pgwarden.audit.test.b';
    // 31..34 on a (3 per message at most), 35 and 36 on b, then 37 on a: 37 joins the open batch of a (34).
    const items = [item(31, a), item(35, b), item(32, a), item(33, a), item(34, a), item(36, b), item(37, a)];
    const big = { subject: b, msgID: 'pub.big', data: JSON.stringify({ pad: 'x'.repeat(40) }) };
    for (const x of [...items, big]) pub.publish(x);
    expect(pub.inflight).toBe(8);
    await waitUntil(() => pub.inflight === 0);
    expect(await messagesAfter(after)).toEqual([
      { subject: a, id: 'pub.31+3', batch: '3', body: '{"n":31}\n{"n":32}\n{"n":33}' },
      { subject: b, id: 'pub.35+2', batch: '2', body: '{"n":35}\n{"n":36}' },
      { subject: a, id: 'pub.34+2', batch: '2', body: '{"n":34}\n{"n":37}' },
      // Over maxChars with the others: alone, byte for byte the event, under its own id and no batch header.
      { subject: b, id: 'pub.big', batch: undefined, body: big.data },
    ]);
    expect(acks.map((x) => x.join()).sort()).toEqual([
      'pub.31,pub.32,pub.33',
      'pub.34,pub.37',
      'pub.35,pub.36',
      'pub.big',
    ]);
    pub.close();
  });

  it('a batch sent again after forget() is the same message: JetStream drops the repeat and acks it', async () => {
    const acks: string[][] = [];
    const pub = new JetStreamPublisher<Publishable>(
      5000,
      (x) => acks.push(x.map((i) => i.msgID)),
      () => {},
      0,
    );
    pub.attach(nc);
    const after = await lastSeq();
    const items = [21, 22, 23].map((n) => item(n));
    for (const x of items) pub.publish(x);
    await waitUntil(() => acks.length === 1);
    // As after an ack timeout: the caller forgets and re-sends from the oldest entry, here with one new event.
    pub.forget();
    for (const x of [...items, item(24)]) pub.publish(x);
    expect(pub.inflight).toBe(4);
    await waitUntil(() => acks.length === 3);
    expect(acks).toEqual([['pub.21', 'pub.22', 'pub.23'], ['pub.21', 'pub.22', 'pub.23'], ['pub.24']]);
    expect((await messagesAfter(after)).map((m) => m.id)).toEqual(['pub.21+3', 'pub.24']);
    pub.close();
  });
});
