import { createHmac } from 'node:crypto';
import { jetstreamManager } from '@nats-io/jetstream';
import { APPROVALS_STREAM } from '@pgwarden/policy';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { approvalClosed, approvalRequest } from '../testing/approval-messages.js';
import { type NotifyWorld, startNotifyWorld } from '../testing/notify-world.js';
import { waitFor } from '../testing/wait-for.js';
import { noticeId as idOf } from '../testing/webhook-receiver.js';

/** Planted in the webhook's path and as the signing secret: neither may reach a log line or a metric. */
const URL_TOKEN = 'T0KEN-b7c4e1f09a2d';
const SIGNING_SECRET = 'whsec-5e8d1c3a7f60';
const ALICE = 'alice-token-0c1d2e3f';

describe('approval notifications (real nats-server, PostgreSQL and HTTP receivers)', () => {
  let w: NotifyWorld;
  let secretFile: string;
  const settle = (ms = 300) => new Promise((r) => setTimeout(r, ms));

  beforeAll(async () => {
    w = await startNotifyWorld(URL_TOKEN, ALICE, SIGNING_SECRET);
    secretFile = w.secretFile;
  });
  afterAll(async () => {
    await w?.close();
  });

  it('posts one JSON notice per held statement: the documented body, no SQL, a link to the web UI', async () => {
    const rx = await w.receiver();
    // Already in the stream when notifications are turned on: not announced (the consumer starts at new messages).
    const old = await w.held();
    const c = await w.notifying(rx.url, w.durable(), {}, { publicUrl: 'https://pgwarden.example.com/' });
    const r = await w.held();
    await waitFor(() => rx.posts.length === 1);
    expect(rx.idsPosted()).not.toContain(old.id);
    expect(rx.posts[0].path).toBe(`/services/${URL_TOKEN}`);
    expect(rx.posts[0].headers['content-type']).toBe('application/json');
    expect(rx.posts[0].headers['x-pgwarden-signature']).toBeUndefined();
    expect(JSON.parse(rx.posts[0].body)).toEqual({
      type: 'approval.requested',
      id: r.id,
      policy: { name: 'writer-review', namespace: 'agents' },
      rule: 'writes-need-approval',
      session: 'sess-held-1',
      identity: r.identity,
      requestedAt: r.requestedAt,
      expiresAt: r.expiresAt,
      url: `https://pgwarden.example.com/?approval=${r.id}#approvals`,
    });
    expect(rx.posts[0].body).not.toContain('DELETE FROM');
    await waitFor(async () => (await w.notifications(c)).sent === 1);
    await w.stop(c);
    expect(rx.posts).toHaveLength(1);
  });

  it('posts a Slack line with the SQL cut to 500 characters when asked, signed so the receiver can check it', async () => {
    const rx = await w.receiver();
    const c = await w.notifying(rx.url, w.durable(), {
      format: 'slack',
      includeSql: true,
      signingSecretFile: secretFile,
    });
    const sql = `UPDATE accounts SET note = '${'n'.repeat(800)}' WHERE id = 7 -- TAIL-MARKER`;
    const r = await w.held({ sql });
    await waitFor(() => rx.posts.length === 1);
    const { headers, body } = rx.posts[0];
    const text: string = JSON.parse(body).text;
    expect(Object.keys(JSON.parse(body))).toEqual(['text']);
    expect(text).toMatch(
      /^Statement held for approval: policy agents\/writer-review, rule writes-need-approval, asked by ana, expires in 10 min\.\n```UPDATE accounts SET note = 'n+…```$/,
    );
    expect(text).not.toContain('TAIL-MARKER');
    expect(Array.from(text.slice(text.indexOf('```') + 3, -3))).toHaveLength(500);

    // What a receiver does: recompute the HMAC over "<timestamp>.<raw body>" and compare.
    const ts = String(headers['x-pgwarden-timestamp']);
    expect(Math.abs(Number(ts) - Date.now() / 1000)).toBeLessThan(60);
    const sign = (secret: string) => `sha256=${createHmac('sha256', secret).update(`${ts}.${body}`).digest('hex')}`;
    expect(headers['x-pgwarden-signature']).toBe(sign(SIGNING_SECRET));
    expect(headers['x-pgwarden-signature']).not.toBe(sign('whsec-guess'));
    // Without a public URL there is no link (and no id) in a Slack line.
    expect(text).not.toContain(r.id);
    await w.stop(c);
  });

  it('posts once per request with two replicas sharing the stream', async () => {
    const rx = await w.receiver();
    const name = w.durable();
    const [a, b] = [await w.notifying(rx.url, name, { format: 'json' }), await w.notifying(rx.url, name)];
    // Both replicas pull from the one consumer before anything is published.
    const jsm = await jetstreamManager(w.nc);
    await waitFor(async () => (await jsm.consumers.info(APPROVALS_STREAM, name)).num_waiting >= 2);
    const ids = [];
    for (let i = 0; i < 6; i++) ids.push((await w.held()).id);
    await waitFor(() => rx.posts.length >= 6);
    await settle();
    expect(rx.idsPosted().sort()).toEqual([...ids].sort());
    const [na, nb] = [await w.notifications(a), await w.notifications(b)];
    expect(na.sent + nb.sent).toBe(6);
    await w.stop(a);
    await w.stop(b);
  });

  it('retries a 500 until it is delivered, and gives up on a 400 at once', async () => {
    const answers = new Map<string, number[]>();
    const rx = await w.receiver((body) => answers.get(idOf(body) as string)?.shift() ?? 200);
    const c = await w.notifying(rx.url, w.durable());
    const flaky = approvalRequest();
    const refused = approvalRequest();
    answers.set(flaky.id, [500, 500]);
    answers.set(refused.id, [400]);
    await w.publish('request', flaky);
    await w.publish('request', refused);
    await waitFor(async () => {
      const n = await w.notifications(c);
      return n.sent === 1 && n.failed === 1;
    });
    await settle();
    const flakyPosts = rx.posts.filter((p) => idOf(p.body) === flaky.id).map((p) => p.at);
    expect(flakyPosts).toHaveLength(3);
    // Redelivered after the backoff (50 ms, then 100 ms), not at once.
    expect(flakyPosts[1] - flakyPosts[0]).toBeGreaterThanOrEqual(45);
    expect(flakyPosts[2] - flakyPosts[1]).toBeGreaterThanOrEqual(95);
    expect(rx.idsPosted().filter((id) => id === refused.id)).toHaveLength(1);
    expect(await w.notifications(c)).toEqual({ sent: 1, failed: 1, retried: 2, skipped: 0 });
    const failure = w.logs.map((l) => JSON.parse(l)).find((l) => l.msg === 'approval notification failed');
    expect(failure).toMatchObject({ approval: refused.id, reason: 'HTTP 400 (not retried)', webhook: rx.origin });
    await w.stop(c);
  });

  it('skips a request already expired, and after a restart one the sidecar closed meanwhile', async () => {
    const rx = await w.receiver();
    const name = w.durable();
    const first = await w.notifying(rx.url, name);
    await w.held({ expiresAt: new Date(Date.now() - 1000).toISOString() });
    await waitFor(async () => (await w.notifications(first)).skipped === 1);
    await w.stop(first);

    // Published while no replica runs; the restarted one replays the queue before it announces anything.
    const withdrawn = await w.held();
    await w.publish('closed', approvalClosed(withdrawn.id, 'withdrawn'));
    const pending = await w.held();
    const second = await w.notifying(rx.url, name);
    await waitFor(async () => (await w.notifications(second)).sent >= 1);
    await settle();
    expect(rx.idsPosted()).toEqual([pending.id]);
    expect(await w.notifications(second)).toMatchObject({ sent: 1, skipped: 1 });
    // Nor is its end: the closing was in the stream before this replica started.
    await waitFor(async () => (await w.notifications(second, 'outcome')).skipped === 1);
    expect(rx.idsPosted()).toEqual([pending.id]);
    await w.stop(second);
  });

  it('does not announce a request an active grant covers: the collector approves it under the grant instead', async () => {
    const rx = await w.receiver();
    const c = await w.notifying(rx.url, w.durable());
    const shape = { grantMax: '1h', fingerprint: '0123456789abcdef', grantKey: 'd4'.repeat(32) };
    const first = await w.held(shape);
    await waitFor(() => rx.idsPosted().includes(first.id));
    const decided = await fetch(`${c.url}/api/v1/approvals/${first.id}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ALICE}` },
      body: JSON.stringify({ decision: 'approve', grantFor: '30m' }),
    });
    expect(decided.status).toBe(200);
    const until = new Date(Date.now() + 1_800_000).toISOString();
    await w.publish('closed', approvalClosed(first.id, 'approved', { name: 'alice', groups: [] }, until));
    await waitFor(async () => {
      const r = await fetch(`${c.url}/api/v1/approvals?grants=active`, {
        headers: { authorization: `Bearer ${ALICE}` },
      });
      return ((await r.json()) as { approvals: { id: string }[] }).approvals.some((e) => e.id === first.id);
    });
    // The same shape held in another pod: approved under the grant, and nobody is paged for it.
    const before = (await w.notifications(c)).skipped ?? 0;
    const other = await w.held({ ...shape, identity: { ...first.identity, pod: 'analytics-7' } });
    await waitFor(async () => (await w.notifications(c)).skipped === before + 1);
    // Approved under the grant (by this replica or the fixture's, whichever the stream took first).
    const underOf = async () => {
      const r = await fetch(`${c.url}/api/v1/approvals/${other.id}`, { headers: { authorization: `Bearer ${ALICE}` } });
      return ((await r.json()) as { decision?: { under?: string } }).decision?.under;
    };
    await waitFor(async () => (await underOf()) !== undefined);
    expect(await underOf()).toBe(first.id);
    await settle();
    expect(rx.idsPosted()).not.toContain(other.id);
    expect(w.logs.some((l) => l.includes('covered by an active grant'))).toBe(true);
    await w.stop(c);
  });

  it('stops within seconds while a receiver never answers, handing the request back to the stream', async () => {
    const rx = await w.receiver(() => 'hang');
    const name = w.durable();
    // The POST would time out only after 20 s: stopping aborts it instead. The bound leaves a loaded machine room for
    // the rest of the collector's stop (NATS drained for at most 2 s) and still tells the two apart.
    const c = await w.notifying(rx.url, name, { timeoutMs: 20_000 });
    const r = await w.held();
    await waitFor(() => rx.posts.length === 1);
    const t0 = Date.now();
    await w.stop(c);
    expect(Date.now() - t0).toBeLessThan(10_000);
    // The next replica posts it at once, not after the consumer's 30 s ack wait.
    rx.control.respond = () => 200;
    const next = await w.notifying(rx.url, name);
    await waitFor(() => rx.posts.length === 2, 10_000);
    expect(rx.idsPosted()).toEqual([r.id, r.id]);
    await waitFor(async () => (await w.notifications(next)).sent === 1);
    await w.stop(next);
  });

  it('resumes after NATS restarts', async () => {
    const rx = await w.receiver();
    const c = await w.notifying(rx.url, w.durable());
    const reconnected = (async () => {
      for await (const s of w.nc.status()) if (s.type === 'reconnect') return;
    })();
    await w.fx.nats.kill();
    await w.fx.nats.start();
    await reconnected;
    const r = await w.held();
    await waitFor(() => rx.posts.length === 1);
    expect(rx.idsPosted()).toEqual([r.id]);
    await w.stop(c);
  });

  it('never puts the webhook URL, the signing secret or the SQL in a log line or a metric', async () => {
    const rx = await w.receiver((_, n) => (n === 1 ? 503 : 401));
    const c = await w.notifying(rx.url, w.durable(), { signingSecretFile: secretFile, includeSql: true });
    await w.held();
    await waitFor(async () => (await w.notifications(c)).failed === 1);
    const metrics = await (await fetch(`${c.url}/metrics`)).text();
    await w.stop(c);
    // This test's retry and failure, and every earlier test's lines if they ran.
    const all = w.logs.join('');
    const lines = w.logs.map((l) => JSON.parse(l));
    expect(lines).toContainEqual(
      expect.objectContaining({ msg: 'approval notification retried', reason: 'HTTP 503', webhook: rx.origin }),
    );
    expect(lines).toContainEqual(
      expect.objectContaining({ msg: 'approval notification failed', reason: 'HTTP 401 (not retried)' }),
    );
    for (const secret of [URL_TOKEN, '/services/', SIGNING_SECRET, 'DELETE FROM', 'UPDATE accounts']) {
      expect(all).not.toContain(secret);
      expect(metrics).not.toContain(secret);
    }
  });
});
