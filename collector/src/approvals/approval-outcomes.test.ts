import { createHmac } from 'node:crypto';
import { jetstreamManager } from '@nats-io/jetstream';
import { APPROVALS_STREAM, type ApprovalClosedMessage } from '@pgwarden/policy';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Collector } from '../collector.js';
import { approvalClosed, approvalRequest } from '../testing/approval-messages.js';
import { type NotifyWorld, startNotifyWorld } from '../testing/notify-world.js';
import { waitFor } from '../testing/wait-for.js';
import type { WebhookReceiver } from '../testing/webhook-receiver.js';

/** Planted in the webhook's path and as the signing secret: neither may reach a log line or a metric. */
const URL_TOKEN = 'T0KEN-3a9f0c7d51e2';
const SIGNING_SECRET = 'whsec-91d0b7e4c2a8';
const ALICE = 'alice-token-4e5f6a7b';
const alice = { name: 'alice', groups: [] };

/** Follow-ups (type approval.closed) a receiver got, parsed. */
const followUps = (rx: WebhookReceiver) =>
  rx.posts.map((p) => JSON.parse(p.body)).filter((b) => b.type === 'approval.closed');
const requestNotices = (rx: WebhookReceiver) =>
  rx.posts.map((p) => JSON.parse(p.body)).filter((b) => b.type === 'approval.requested');

describe('follow-up notices when a held statement’s wait ends (real nats-server, PostgreSQL, HTTP receivers)', () => {
  let w: NotifyWorld;
  let secretFile: string;
  const settle = (ms = 300) => new Promise((r) => setTimeout(r, ms));
  /** Alice approves `id` through `c`'s API, as the web UI does. */
  const approve = async (c: Collector, id: string) => {
    const res = await fetch(`${c.url}/api/v1/approvals/${id}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ALICE}`, 'content-type': 'application/json' },
      body: JSON.stringify({ decision: 'approve' }),
    });
    expect(res.status).toBe(200);
  };
  /** The sidecar's end of the hold. */
  const close = (closed: ApprovalClosedMessage) => w.publish('closed', closed);

  beforeAll(async () => {
    w = await startNotifyWorld(URL_TOKEN, ALICE, SIGNING_SECRET);
    secretFile = w.secretFile;
  });
  afterAll(async () => {
    await w?.close();
  });

  it('posts one request notice then one signed follow-up: the documented body, never the SQL', async () => {
    const rx = await w.receiver();
    const c = await w.notifying(
      rx.url,
      w.durable(),
      { signingSecretFile: secretFile },
      { publicUrl: 'https://pgwarden.example.com' },
    );
    const r = await w.held();
    await waitFor(() => rx.posts.length === 1);
    await approve(c, r.id);
    const grantUntil = new Date(Date.now() + 3_600_000).toISOString();
    const closed = approvalClosed(r.id, 'approved', alice, grantUntil);
    await close(closed);
    await waitFor(() => rx.posts.length === 2);
    expect(JSON.parse(rx.posts[0].body)).toMatchObject({ type: 'approval.requested', id: r.id });
    const { headers, body } = rx.posts[1];
    expect(JSON.parse(body)).toEqual({
      type: 'approval.closed',
      id: r.id,
      outcome: 'approved',
      by: { name: 'alice' },
      at: closed.at,
      grantUntil,
      policy: { name: 'writer-review', namespace: 'agents' },
      rule: 'writes-need-approval',
      session: 'sess-held-1',
      url: `https://pgwarden.example.com/?approval=${r.id}#approvals`,
    });
    expect(body).not.toContain('DELETE FROM');

    // What a receiver does: recompute the HMAC over "<timestamp>.<raw body>" and compare.
    const ts = String(headers['x-pgwarden-timestamp']);
    expect(Math.abs(Number(ts) - Date.now() / 1000)).toBeLessThan(60);
    const sign = (secret: string) => `sha256=${createHmac('sha256', secret).update(`${ts}.${body}`).digest('hex')}`;
    expect(headers['x-pgwarden-signature']).toBe(sign(SIGNING_SECRET));
    expect(headers['x-pgwarden-signature']).not.toBe(sign('whsec-guess'));

    await waitFor(async () => (await w.notifications(c, 'outcome')).sent === 1);
    await settle();
    expect(rx.posts).toHaveLength(2);
    expect(await w.notifications(c, 'outcome')).toEqual({ sent: 1, failed: 0, retried: 0, skipped: 0 });
    expect(await w.notifications(c, 'request')).toMatchObject({ sent: 1 });
    await w.stop(c);
  });

  it('posts each follow-up once with two replicas sharing the stream, whichever announced the request', async () => {
    const rx = await w.receiver();
    const name = w.durable();
    const [a, b] = [await w.notifying(rx.url, name), await w.notifying(rx.url, name)];
    // Both replicas pull from both consumers before anything is published.
    const jsm = await jetstreamManager(w.nc);
    for (const consumer of [name, `${name}-outcomes`])
      await waitFor(async () => (await jsm.consumers.info(APPROVALS_STREAM, consumer)).num_waiting >= 2);
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push((await w.held()).id);
    await waitFor(() => rx.posts.length >= 6);
    const outcomes = ['approved', 'rejected', 'expired', 'withdrawn', 'approved', 'rejected'] as const;
    for (const [i, id] of ids.entries())
      await close(
        approvalClosed(id, outcomes[i], outcomes[i] === 'approved' || outcomes[i] === 'rejected' ? alice : undefined),
      );
    await waitFor(() => rx.posts.length >= 12);
    await settle();
    expect(rx.posts).toHaveLength(12);
    expect(
      followUps(rx)
        .map((f) => f.id)
        .sort(),
    ).toEqual([...ids].sort());
    expect(followUps(rx).map((f) => `${f.id}:${f.outcome}`)).toEqual(
      expect.arrayContaining(ids.map((id, i) => `${id}:${outcomes[i]}`)),
    );
    const [na, nb] = [await w.notifications(a, 'outcome'), await w.notifications(b, 'outcome')];
    expect(na.sent + nb.sent).toBe(6);
    await w.stop(a);
    await w.stop(b);
  });

  it('posts no follow-up for a closing on another namespace’s subject than its request’s', async () => {
    const rx = await w.receiver();
    const c = await w.notifying(rx.url, w.durable());
    const r = approvalRequest();
    await w.publish('request', r, 'agents');
    await waitFor(() => requestNotices(rx).length === 1);
    // A sidecar of team-b that learned the id, or one that names no namespace as earlier sidecars did.
    await w.publish('closed', approvalClosed(r.id, 'withdrawn'), 'team-b');
    await w.publish('closed', approvalClosed(r.id, 'withdrawn'));
    await settle(500);
    expect(followUps(rx)).toEqual([]);
    await w.publish('closed', approvalClosed(r.id, 'expired'), 'agents');
    await waitFor(() => followUps(rx).length === 1);
    expect(followUps(rx)[0]).toMatchObject({ id: r.id, outcome: 'expired' });
    // Nor is a request claiming a namespace other than its subject's announced.
    const claimed = approvalRequest();
    await w.publish('request', claimed, 'team-b');
    await settle(500);
    expect(requestNotices(rx).map((n) => n.id)).toEqual([r.id]);
    await w.stop(c);
  });

  it('retries a follow-up answered 503, then delivers it', async () => {
    let refusedOnce = false;
    const rx = await w.receiver((body) => {
      if (JSON.parse(body).type !== 'approval.closed' || refusedOnce) return 200;
      refusedOnce = true;
      return 503;
    });
    const c = await w.notifying(rx.url, w.durable());
    const r = await w.held();
    await waitFor(() => rx.posts.length === 1);
    await close(approvalClosed(r.id, 'rejected', alice));
    await waitFor(async () => (await w.notifications(c, 'outcome')).sent === 1);
    await settle();
    const posts = rx.posts.filter((p) => JSON.parse(p.body).type === 'approval.closed');
    expect(posts).toHaveLength(2);
    expect(posts[1].body).toBe(posts[0].body);
    // One id for the notice at every attempt, distinct from its request notice's: what a receiver dedupes on.
    expect(posts.map((p) => p.headers['x-pgwarden-notice-id'])).toEqual([
      `approval.closed:${r.id}`,
      `approval.closed:${r.id}`,
    ]);
    expect(rx.posts[0].headers['x-pgwarden-notice-id']).toBe(`approval.requested:${r.id}`);
    // Redelivered after the backoff (50 ms), not at once.
    expect(posts[1].at - posts[0].at).toBeGreaterThanOrEqual(45);
    expect(await w.notifications(c, 'outcome')).toEqual({ sent: 1, failed: 0, retried: 1, skipped: 0 });
    await w.stop(c);
  });

  it('follows up a request that closed while its notice was still being posted', async () => {
    // The receiver takes 800 ms to answer the request notice; the hold ends 100 ms into that POST, so the closing
    // reaches the stream before the record that the request was announced.
    const rx = await w.receiver((body) =>
      JSON.parse(body).type === 'approval.requested' ? { status: 200, afterMs: 800 } : 200,
    );
    const c = await w.notifying(rx.url, w.durable());
    const r = await w.held();
    await waitFor(() => rx.posts.length === 1);
    await settle(100);
    await close(approvalClosed(r.id, 'expired'));
    await waitFor(() => followUps(rx).length === 1, 15_000);
    expect(followUps(rx)[0]).toMatchObject({ id: r.id, outcome: 'expired' });
    await settle();
    expect(followUps(rx)).toHaveLength(1);
    await w.stop(c);
  });

  it('posts no follow-up for a request decided before its notice went out', async () => {
    // The request notice is refused once; its retry is due after 1.5 s, and the decision comes before that.
    const rx = await w.receiver((_, n) => (n === 1 ? 503 : 200));
    const c = await w.notifying(rx.url, w.durable(), { retry: { baseDelayMs: 1500 } });
    const r = await w.held();
    await waitFor(async () => (await w.notifications(c)).retried === 1);
    await approve(c, r.id);
    await close(approvalClosed(r.id, 'approved', alice));
    await waitFor(async () => (await w.notifications(c, 'outcome')).skipped === 1);
    // The retry finds it decided and skips it too: nobody is told of a statement, or its end, that was never shown.
    await waitFor(async () => (await w.notifications(c)).skipped === 1);
    await settle();
    expect(rx.posts).toHaveLength(1);
    expect(await w.notifications(c, 'outcome')).toEqual({ sent: 0, failed: 0, retried: 0, skipped: 1 });
    const lines = w.logs.map((l) => JSON.parse(l));
    expect(lines).toContainEqual(
      expect.objectContaining({
        msg: 'approval notification skipped',
        kind: 'outcome',
        approval: r.id,
        reason: 'request not announced',
      }),
    );
    await w.stop(c);
  });

  it('after a restart: follows up requests announced before it, also one that ended meanwhile; none nobody announced', async () => {
    const rx = await w.receiver();
    const name = w.durable();
    const first = await w.notifying(rx.url, name);
    const [endsMeanwhile, endsAfter] = [await w.held(), await w.held()];
    await waitFor(() => rx.posts.length === 2);
    await w.stop(first);

    // While no replica runs (a one-replica rolling restart): one announced request ends, and another is held,
    // decided and closed before anyone could announce it.
    await close(approvalClosed(endsMeanwhile.id, 'approved', alice));
    const unseen = await w.held();
    await close(approvalClosed(unseen.id, 'approved', alice));
    const second = await w.notifying(rx.url, name);
    // The stream records that the first run announced endsMeanwhile: its follow-up goes out after the restart.
    await waitFor(async () => (await w.notifications(second)).skipped === 1);
    await waitFor(async () => (await w.notifications(second, 'outcome')).skipped === 1);
    await waitFor(() => rx.posts.length === 3);
    // This replica never handled endsAfter either; announced by the first run, it is followed up too.
    await close(approvalClosed(endsAfter.id, 'expired'));
    await waitFor(() => rx.posts.length === 4);
    await settle();
    expect(requestNotices(rx).map((n) => n.id)).toEqual([endsMeanwhile.id, endsAfter.id]);
    expect(followUps(rx)).toMatchObject([
      { id: endsMeanwhile.id, outcome: 'approved', by: { name: 'alice' } },
      { id: endsAfter.id, outcome: 'expired' },
    ]);
    expect(rx.posts).toHaveLength(4);
    expect(await w.notifications(second, 'outcome')).toMatchObject({ sent: 2, skipped: 1 });
    await w.stop(second);
  });

  it('announces requests only with outcomes off', async () => {
    const rx = await w.receiver();
    const name = w.durable();
    const c = await w.notifying(rx.url, name, { outcomes: false });
    const r = await w.held();
    await waitFor(() => rx.posts.length === 1);
    await close(approvalClosed(r.id, 'withdrawn'));
    await settle(500);
    expect(requestNotices(rx).map((n) => n.id)).toEqual([r.id]);
    expect(followUps(rx)).toEqual([]);
    const jsm = await jetstreamManager(w.nc);
    await expect(jsm.consumers.info(APPROVALS_STREAM, `${name}-outcomes`)).rejects.toThrow(/consumer not found/);
    expect(await w.notifications(c, 'outcome')).toEqual({});
    await w.stop(c);
  });

  it('logs a failed follow-up with its kind and the webhook’s origin, never the URL, the secret or the SQL', async () => {
    const rx = await w.receiver((body) => (JSON.parse(body).type === 'approval.closed' ? 401 : 200));
    const c = await w.notifying(rx.url, w.durable(), { signingSecretFile: secretFile, includeSql: true });
    const r = await w.held();
    await waitFor(() => rx.posts.length === 1);
    await close(approvalClosed(r.id, 'withdrawn'));
    await waitFor(async () => (await w.notifications(c, 'outcome')).failed === 1);
    const metrics = await (await fetch(`${c.url}/metrics`)).text();
    await w.stop(c);
    // The SQL went into the request notice (asked for), never into its follow-up.
    expect(rx.posts[0].body).toContain('DELETE FROM');
    expect(rx.posts[1].body).not.toContain('DELETE FROM');
    const lines = w.logs.map((l) => JSON.parse(l));
    expect(lines).toContainEqual(
      expect.objectContaining({
        msg: 'approval notification failed',
        kind: 'outcome',
        approval: r.id,
        reason: 'HTTP 401 (not retried)',
        webhook: rx.origin,
      }),
    );
    const all = w.logs.join('');
    for (const secret of [URL_TOKEN, '/services/', SIGNING_SECRET, 'DELETE FROM']) {
      expect(all).not.toContain(secret);
      expect(metrics).not.toContain(secret);
    }
  });
});
