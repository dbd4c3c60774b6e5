import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { APPROVALS_STREAM, type ApprovalNotifiedMessage, approvalSubject } from '@pgwarden/policy';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { StallingRelay } from '../../../test/harness/stalling-relay.js';
import type { Collector } from '../collector.js';
import { approvalClosed } from '../testing/approval-messages.js';
import { type NotifyWorld, startNotifyWorld } from '../testing/notify-world.js';
import { waitFor } from '../testing/wait-for.js';
import type { WebhookReceiver } from '../testing/webhook-receiver.js';

const URL_TOKEN = 'T0KEN-5c2e8a1f70b3';
const SIGNING_SECRET = 'whsec-0a7d3e9b15c4';
const ALICE = 'alice-token-9a8b7c6d';
const alice = { name: 'alice', groups: [] };

const bodies = (rx: WebhookReceiver, type: string) =>
  rx.posts.map((p) => JSON.parse(p.body)).filter((b) => b.type === type);
const followUps = (rx: WebhookReceiver) => bodies(rx, 'approval.closed');
const requestNotices = (rx: WebhookReceiver) => bodies(rx, 'approval.requested');

/**
 * The races between a held statement's notice and its follow-up: each test drives one order of events with a
 * receiver that answers when told, so that the window the race needs is open for seconds, not microseconds.
 */
describe('follow-up notices: one per announced request, whatever the order of events (real nats-server, HTTP)', () => {
  let w: NotifyWorld;
  const settle = (ms = 300) => new Promise((r) => setTimeout(r, ms));
  /** The closings `durable`'s outcome consumer has handed out and not had acknowledged yet. */
  const closingsOut = async (durable: string) =>
    (await (await jetstreamManager(w.nc)).consumers.info(APPROVALS_STREAM, `${durable}-outcomes`)).num_ack_pending;
  /** The requests `durable`'s request consumer has handed out and not had acknowledged yet. */
  const requestsOut = async (durable: string) =>
    (await (await jetstreamManager(w.nc)).consumers.info(APPROVALS_STREAM, durable)).num_ack_pending;

  beforeAll(async () => {
    w = await startNotifyWorld(URL_TOKEN, ALICE, SIGNING_SECRET);
  });
  afterEach(async () => {
    await w?.stopAll();
  });
  afterAll(async () => {
    await w?.close();
  });

  it('posts a follow-up once when waiting for its announcement and posting it outlast the ack wait', async () => {
    // The request notice takes 3.5 s to answer; the hold ends at once, so its closing waits for it (4 s at most
    // with these settings), then the follow-up takes 6.5 s: 10 s in all, past the 9 s ack wait, each step within
    // its own bound (the defaults allow 5 + 16 + 10 s against 30 s).
    const rx = await w.receiver((body) =>
      JSON.parse(body).type === 'approval.requested' ? { status: 200, afterMs: 3500 } : { status: 200, afterMs: 6500 },
    );
    const c = await w.notifying(rx.url, w.durable(), { ackWaitMs: 9000, timeoutMs: 8000 });
    const r = await w.held();
    await waitFor(() => rx.posts.length === 1);
    await w.publish('closed', approvalClosed(r.id, 'expired'));
    await waitFor(async () => (await w.notifications(c, 'outcome')).sent === 1, 25_000);
    await settle(1000);
    // Not given to the replica again while it still worked on it: posted twice otherwise.
    expect(followUps(rx).map((f) => f.id)).toEqual([r.id]);
    expect(await w.notifications(c, 'outcome')).toEqual({ sent: 1, failed: 0, retried: 0, skipped: 0 });
    await w.stop(c);
  });

  it('follows up a request whose notice timed out: the receiver may have shown it, and its retry finds it closed', async () => {
    // The receiver takes 3 s to answer what it got; the notifier gives up on the POST after 1 s.
    const rx = await w.receiver((body) =>
      JSON.parse(body).type === 'approval.requested' ? { status: 200, afterMs: 3000 } : 200,
    );
    const c = await w.notifying(rx.url, w.durable(), { timeoutMs: 1000, retry: { baseDelayMs: 4000 } });
    const r = await w.held();
    await waitFor(async () => (await w.notifications(c)).retried === 1);
    await w.publish('closed', approvalClosed(r.id, 'withdrawn'));
    await waitFor(() => followUps(rx).length === 1);
    expect(followUps(rx)[0]).toMatchObject({ id: r.id, outcome: 'withdrawn' });
    // The retry finds the request closed and skips it: the receiver saw its notice once, then its end.
    await waitFor(async () => (await w.notifications(c)).skipped === 1);
    await settle();
    expect(requestNotices(rx).map((n) => n.id)).toEqual([r.id]);
    expect(followUps(rx)).toHaveLength(1);
    await w.stop(c);
  });

  it('follows up a request whose notice was being retried when it closed', async () => {
    // The first POST is refused; the retry (after 300 ms) takes 2 s to answer, and the hold ends during it.
    const rx = await w.receiver((body, n) => {
      if (JSON.parse(body).type !== 'approval.requested') return 200;
      return n === 1 ? 503 : { status: 200, afterMs: 2000 };
    });
    const c = await w.notifying(rx.url, w.durable(), { retry: { baseDelayMs: 300 } });
    const r = await w.held();
    await waitFor(() => rx.posts.length === 2);
    await w.publish('closed', approvalClosed(r.id, 'approved', alice));
    await waitFor(async () => (await w.notifications(c)).sent === 1);
    await waitFor(() => followUps(rx).length === 1);
    expect(followUps(rx)[0]).toMatchObject({ id: r.id, outcome: 'approved', by: { name: 'alice' } });
    await settle();
    expect(await w.notifications(c, 'outcome')).toEqual({ sent: 1, failed: 0, retried: 0, skipped: 0 });
    await w.stop(c);
  });

  /**
   * A replica of `name` that reaches NATS through a relay delaying each way by 300 ms once it is up: JetStream counts
   * a closing as given out (num_ack_pending) while it is still on its way, and a replica stopped before taking it
   * cannot hand it back (it comes back after the ack wait). So a test waits for the replica's own word that it holds
   * the closing (waitsOn), as it must on a loaded machine too, where the same gap opens by itself.
   */
  const slowReplica = async (url: string, name: string, opts: { ackWaitMs: number; timeoutMs?: number }) => {
    const target = new URL(w.fx.nats.url);
    const relay = new StallingRelay({ host: target.hostname, port: Number(target.port) });
    await relay.start();
    const c = await w.notifying(url, name, opts, { nats: { url: `nats://127.0.0.1:${relay.port}` } });
    relay.slow(relay.upstreamPorts(), 300);
    return { c, relay };
  };
  const waitsOn = (id: string) => w.logs.some((l) => l.includes(`closing ${id} waits`));
  /** Longer than any test here: a closing back within it was handed back, not given out again after the ack wait. */
  const LONG_ACK_WAIT_MS = 120_000;

  it('a replica stopping while a closing waits for its announcement hands it back, and the next one follows it up', async () => {
    const rx = await w.receiver();
    const name = w.durable();
    // Held before this group's consumers exist: in the queue, but announced by a replica of another group whose
    // notice is still on its way (its record comes later).
    const r = await w.held();
    // It waits 16 s at most for the record with these settings.
    const { c: first, relay } = await slowReplica(rx.url, name, { ackWaitMs: LONG_ACK_WAIT_MS });
    try {
      await w.publish('closed', approvalClosed(r.id, 'rejected', alice));
      await waitFor(() => waitsOn(r.id), 15_000, 'the first replica waiting on the closing');
      await w.stop(first);
    } finally {
      await relay.stop();
    }
    const notified: ApprovalNotifiedMessage = { v: 1, id: r.id, at: new Date().toISOString() };
    await jetstream(w.nc).publish(approvalSubject('notified', r.id), JSON.stringify(notified));
    const second = await w.notifying(rx.url, name, { ackWaitMs: LONG_ACK_WAIT_MS });
    await waitFor(() => followUps(rx).length === 1, 30_000, 'the follow-up, from the closing handed back');
    expect(followUps(rx)[0]).toMatchObject({ id: r.id, outcome: 'rejected' });
    await waitFor(async () => (await closingsOut(name)) === 0);
    expect(rx.posts).toHaveLength(1);
    await w.stop(second);
  }, 90_000);

  /**
   * A receiver, and a replica posting to it that reaches NATS through a relay cut (its sockets destroyed, as a
   * SIGKILL's are) the moment the receiver takes its first request notice: it posted, recorded nothing and
   * acknowledged nothing, so its request comes back (8 s ack wait) to the replica that `next()` starts.
   */
  const killedAfterPosting = async () => {
    const target = new URL(w.fx.nats.url);
    const relay = new StallingRelay({ host: target.hostname, port: Number(target.port) });
    await relay.start();
    const rx = await w.receiver((body) => {
      if (JSON.parse(body).type === 'approval.requested') void relay.stop();
      return 200;
    });
    const name = w.durable();
    const opts = { ackWaitMs: 8000, timeoutMs: 1000 };
    const killed = await w.notifying(rx.url, name, opts, { nats: { url: `nats://127.0.0.1:${relay.port}` } });
    let next: Collector | undefined;
    return {
      rx,
      name,
      next: async () => {
        next = await w.notifying(rx.url, name, opts);
        return next;
      },
      /** Stops both replicas, whatever the test got to: one left running would take the next test's messages too. */
      async stop() {
        if (next) await w.stop(next);
        await w.stop(killed);
        await relay.stop();
      },
    };
  };

  it('follows up a hold that closed before a killed replica’s request came back, once: the next one cannot tell it was shown', async () => {
    const { rx, name, next: start, stop } = await killedAfterPosting();
    try {
      const r = await w.held();
      await waitFor(() => requestNotices(rx).length === 1);
      // Closed before the request comes back: the next replica judges the closing with no record that the request
      // was announced (after a 3 s wait with these settings), and the request finds its hold closed.
      await w.publish('closed', approvalClosed(r.id, 'approved', alice));
      const next = await start();
      await waitFor(() => followUps(rx).length === 1, 40_000, 'the follow-up');
      expect(followUps(rx)[0]).toMatchObject({ id: r.id, outcome: 'approved', by: { name: 'alice' }, rule: r.rule });
      expect(rx.posts.map((p) => p.headers['x-pgwarden-notice-id'])).toEqual([
        `approval.requested:${r.id}`,
        `approval.closed:${r.id}`,
      ]);
      // Both deliveries settled: the closing skipped (the request's return followed it up), the request acknowledged.
      await waitFor(async () => (await w.notifications(next, 'outcome')).skipped === 1, 20_000);
      await waitFor(async () => (await closingsOut(name)) === 0);
      await waitFor(async () => (await requestsOut(name)) === 0);
      await settle(1000);
      expect(followUps(rx)).toHaveLength(1);
      expect(requestNotices(rx)).toHaveLength(1);
      expect(await w.notifications(next, 'outcome')).toEqual({ sent: 1, failed: 0, retried: 0, skipped: 1 });
    } finally {
      await stop();
    }
  }, 90_000);

  it('records a killed replica’s request as announced when it comes back decided but not closed, and follows up its closing', async () => {
    const { rx, name, next: start, stop } = await killedAfterPosting();
    try {
      const r = await w.held();
      await waitFor(() => requestNotices(rx).length === 1);
      const decided = await fetch(`${w.fx.collector.url}/api/v1/approvals/${r.id}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ALICE}`, 'content-type': 'application/json' },
        body: JSON.stringify({ decision: 'approve' }),
      });
      expect(decided.status).toBe(200);
      const next = await start();
      // The request comes back decided: skipped, and recorded as announced since the killed replica may have shown it.
      await waitFor(async () => (await w.notifications(next)).skipped === 1, 40_000, 'the request skipped');
      await waitFor(async () => (await requestsOut(name)) === 0);
      // Its sidecar applies the approval.
      await w.publish('closed', approvalClosed(r.id, 'approved', alice));
      await waitFor(() => followUps(rx).length === 1, 20_000, 'the follow-up');
      expect(followUps(rx)[0]).toMatchObject({ id: r.id, outcome: 'approved', by: { name: 'alice' } });
      await waitFor(async () => (await closingsOut(name)) === 0);
      await settle(1000);
      expect(rx.posts.map((p) => p.headers['x-pgwarden-notice-id'])).toEqual([
        `approval.requested:${r.id}`,
        `approval.closed:${r.id}`,
      ]);
      expect(await w.notifications(next, 'outcome')).toEqual({ sent: 1, failed: 0, retried: 0, skipped: 0 });
    } finally {
      await stop();
    }
  }, 90_000);

  it('a closing handed back by a stopping replica is judged again: no follow-up when nobody announced the request', async () => {
    const rx = await w.receiver();
    const name = w.durable();
    const r = await w.held();
    const { c: first, relay } = await slowReplica(rx.url, name, { ackWaitMs: LONG_ACK_WAIT_MS });
    try {
      await w.publish('closed', approvalClosed(r.id, 'expired'));
      await waitFor(() => waitsOn(r.id), 15_000, 'the first replica waiting on the closing');
      await w.stop(first);
    } finally {
      await relay.stop();
    }
    // No record comes: after its wait (7 s with these settings) the next replica skips the closing.
    const second = await w.notifying(rx.url, name, { ackWaitMs: LONG_ACK_WAIT_MS, timeoutMs: 1000 });
    await waitFor(async () => (await w.notifications(second, 'outcome')).skipped === 1, 30_000, 'the closing skipped');
    await settle();
    expect(rx.posts).toEqual([]);
    await w.stop(second);
  }, 90_000);
});

describe('a request notice is acknowledged only once its record is in the stream (real nats-server, HTTP)', () => {
  let w: NotifyWorld;
  let credentials: string;
  beforeAll(async () => {
    // Connections without credentials (the test's own, the second replica) are `full`; the first replica signs in as
    // `norecord`, which may not publish the record that a request was announced: it dies, as far as the stream can
    // tell, between posting a notice and recording it.
    const config = `
      authorization {
        users = [
          { user: full, password: full-pw-1f3a }
          { user: norecord, password: norecord-pw-7c2e, permissions: { publish: { deny: ["pgwarden.approval.notified.>"] } } }
        ]
      }
      no_auth_user: full
    `;
    w = await startNotifyWorld(URL_TOKEN, ALICE, SIGNING_SECRET, { config });
    credentials = mkdtempSync(join(tmpdir(), 'pgwarden-norecord-'));
    writeFileSync(join(credentials, 'username'), 'norecord\n');
    writeFileSync(join(credentials, 'password'), 'norecord-pw-7c2e\n');
  });
  afterAll(async () => {
    await w?.close();
    if (credentials) rmSync(credentials, { recursive: true, force: true });
  });

  it('a request given out again while still pending is announced again, recorded, and its closing followed up once', async () => {
    const rx = await w.receiver();
    const name = w.durable();
    const first = await w.notifying(
      rx.url,
      name,
      { ackWaitMs: 20_000, timeoutMs: 3000 },
      { nats: { url: w.fx.nats.url, credentialsDir: credentials } },
    );
    const r = await w.held();
    await waitFor(() => w.logs.some((l) => l.includes(`approval notice ${r.id} sent but not recorded`)), 20_000);
    await w.stop(first);
    const second = await w.notifying(rx.url, name, { ackWaitMs: 20_000, timeoutMs: 3000 });
    // Posted again under the same notice id (receivers drop the second), and recorded this time.
    await waitFor(() => requestNotices(rx).length === 2, 30_000);
    await waitFor(async () => (await w.notifications(second)).sent === 1);
    await w.publish('closed', approvalClosed(r.id, 'expired'));
    await waitFor(() => followUps(rx).length === 1, 30_000);
    expect(new Set(rx.posts.map((p) => p.headers['x-pgwarden-notice-id']))).toEqual(
      new Set([`approval.requested:${r.id}`, `approval.closed:${r.id}`]),
    );
    await new Promise((res) => setTimeout(res, 500));
    expect(followUps(rx)).toHaveLength(1);
    await w.stop(second);
  }, 90_000);
});
