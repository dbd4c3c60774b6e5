import { createHmac, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { APPROVALS_STREAM, type ApprovalRequestMessage, approvalSubject } from '@pgwarden/policy';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Collector } from '../collector.js';
import { approvalClosed, approvalRequest } from '../testing/approval-messages.js';
import { type ApprovalsFixture, approversYaml, startApprovalsFixture } from '../testing/approvals-fixture.js';
import { waitFor } from '../testing/wait-for.js';
import type { ApprovalNotificationOptions } from './approval-notifier-config.js';

/** Planted in the webhook's path and as the signing secret: neither may reach a log line or a metric. */
const URL_TOKEN = 'T0KEN-b7c4e1f09a2d';
const SIGNING_SECRET = 'whsec-5e8d1c3a7f60';
const ALICE = 'alice-token-0c1d2e3f';

interface Post {
  at: number;
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
}

/** A webhook receiver on a free loopback port: records every POST and answers what `respond` says. */
async function startReceiver(respond: (body: string, post: number) => number | 'hang' = () => 200) {
  const posts: Post[] = [];
  const sockets = new Set<Socket>();
  const control = { respond };
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => {
      body += c;
    });
    req.on('end', () => {
      posts.push({ at: Date.now(), path: req.url ?? '', headers: req.headers, body });
      const status = control.respond(body, posts.length);
      if (status !== 'hang') res.writeHead(status).end('{"ok":true}');
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return {
    posts,
    control,
    origin: `http://127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}/services/${URL_TOKEN}`,
    idsPosted: () => posts.map((p) => idOf(p.body)),
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** The approval id a notice is about, in either format. */
function idOf(body: string): string | undefined {
  const o = JSON.parse(body);
  return o.id ?? /approval=([0-9a-f-]+)/.exec(o.text)?.[1];
}

describe('approval notifications (real nats-server, PostgreSQL and HTTP receivers)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-notify-'));
  const secretFile = join(dir, 'signing-secret');
  writeFileSync(secretFile, `${SIGNING_SECRET}\n`);
  let fx: ApprovalsFixture;
  /** Plays the sidecars; reconnects at once after the NATS restart below. */
  let nc: NatsConnection;
  const logs: string[] = [];
  const receivers: Awaited<ReturnType<typeof startReceiver>>[] = [];
  const running: Collector[] = [];

  const receiver = async (respond?: Parameters<typeof startReceiver>[0]) => {
    const r = await startReceiver(respond);
    receivers.push(r);
    return r;
  };
  /**
   * A collector posting to `url` (written to a file, as the chart mounts it) through consumer `durable`, resolved
   * once that consumer exists: it delivers only what is published after it was created.
   */
  const notifying = async (
    url: string,
    durable: string,
    over: Partial<ApprovalNotificationOptions> = {},
    more = {},
  ) => {
    const urlFile = join(dir, `url-${randomUUID()}`);
    writeFileSync(urlFile, `${url}\n`);
    const c = await fx.start({
      logger: pino({ level: 'debug' }, { write: (line: string) => void logs.push(line) }),
      approvalNotifications: { webhookUrlFile: urlFile, durable, retry: { baseDelayMs: 50 }, ...over },
      ...more,
    });
    running.push(c);
    const jsm = await jetstreamManager(nc);
    await waitFor(() =>
      jsm.consumers.info(APPROVALS_STREAM, durable).then(
        () => true,
        () => false,
      ),
    );
    return c;
  };
  const publish = async (kind: 'request' | 'closed', msg: { id: string }) =>
    jetstream(nc).publish(approvalSubject(kind, msg.id), JSON.stringify(msg));
  const held = async (over: Partial<ApprovalRequestMessage> = {}) => {
    const r = approvalRequest(over);
    await publish('request', r);
    return r;
  };
  const notifications = async (c: Collector) => {
    const text = await (await fetch(`${c.url}/metrics`)).text();
    const out: Record<string, number> = {};
    for (const m of text.matchAll(/^pgwarden_collector_approval_notifications_total\{outcome="(\w+)"\} (\d+)/gm))
      out[m[1]] = Number(m[2]);
    return out;
  };
  const durable = () => `notify-${randomUUID().slice(0, 8)}`;
  const stop = async (c: Collector) => {
    running.splice(running.indexOf(c), 1);
    await c.stop();
  };
  const settle = (ms = 300) => new Promise((r) => setTimeout(r, ms));

  beforeAll(async () => {
    fx = await startApprovalsFixture(approversYaml({ alice: { token: ALICE, groups: ['dba'] } }), ALICE);
    nc = await connect({ servers: fx.nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  });
  afterAll(async () => {
    for (const c of running) await c.stop();
    for (const r of receivers) await r.close();
    await nc?.close();
    await fx?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('posts one JSON notice per held statement: the documented body, no SQL, a link to the web UI', async () => {
    const rx = await receiver();
    // Already in the stream when notifications are turned on: not announced (the consumer starts at new messages).
    const old = await held();
    const c = await notifying(rx.url, durable(), {}, { publicUrl: 'https://pgwarden.example.com/' });
    const r = await held();
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
    await waitFor(async () => (await notifications(c)).sent === 1);
    await stop(c);
    expect(rx.posts).toHaveLength(1);
  });

  it('posts a Slack line with the SQL cut to 500 characters when asked, signed so the receiver can check it', async () => {
    const rx = await receiver();
    const c = await notifying(rx.url, durable(), { format: 'slack', includeSql: true, signingSecretFile: secretFile });
    const sql = `UPDATE accounts SET note = '${'n'.repeat(800)}' WHERE id = 7 -- TAIL-MARKER`;
    const r = await held({ sql });
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
    await stop(c);
  });

  it('posts once per request with two replicas sharing the stream', async () => {
    const rx = await receiver();
    const name = durable();
    const [a, b] = [await notifying(rx.url, name, { format: 'json' }), await notifying(rx.url, name)];
    // Both replicas pull from the one consumer before anything is published.
    const jsm = await jetstreamManager(nc);
    await waitFor(async () => (await jsm.consumers.info(APPROVALS_STREAM, name)).num_waiting >= 2);
    const ids = [];
    for (let i = 0; i < 6; i++) ids.push((await held()).id);
    await waitFor(() => rx.posts.length >= 6);
    await settle();
    expect(rx.idsPosted().sort()).toEqual([...ids].sort());
    const [na, nb] = [await notifications(a), await notifications(b)];
    expect(na.sent + nb.sent).toBe(6);
    await stop(a);
    await stop(b);
  });

  it('retries a 500 until it is delivered, and gives up on a 400 at once', async () => {
    const answers = new Map<string, number[]>();
    const rx = await receiver((body) => answers.get(idOf(body) as string)?.shift() ?? 200);
    const c = await notifying(rx.url, durable());
    const flaky = approvalRequest();
    const refused = approvalRequest();
    answers.set(flaky.id, [500, 500]);
    answers.set(refused.id, [400]);
    await publish('request', flaky);
    await publish('request', refused);
    await waitFor(async () => {
      const n = await notifications(c);
      return n.sent === 1 && n.failed === 1;
    });
    await settle();
    const flakyPosts = rx.posts.filter((p) => idOf(p.body) === flaky.id).map((p) => p.at);
    expect(flakyPosts).toHaveLength(3);
    // Redelivered after the backoff (50 ms, then 100 ms), not at once.
    expect(flakyPosts[1] - flakyPosts[0]).toBeGreaterThanOrEqual(45);
    expect(flakyPosts[2] - flakyPosts[1]).toBeGreaterThanOrEqual(95);
    expect(rx.idsPosted().filter((id) => id === refused.id)).toHaveLength(1);
    expect(await notifications(c)).toEqual({ sent: 1, failed: 1, retried: 2, skipped: 0 });
    const failure = logs.map((l) => JSON.parse(l)).find((l) => l.msg === 'approval notification failed');
    expect(failure).toMatchObject({ approval: refused.id, reason: 'HTTP 400 (not retried)', webhook: rx.origin });
    await stop(c);
  });

  it('skips a request already expired, and after a restart one the sidecar closed meanwhile', async () => {
    const rx = await receiver();
    const name = durable();
    const first = await notifying(rx.url, name);
    await held({ expiresAt: new Date(Date.now() - 1000).toISOString() });
    await waitFor(async () => (await notifications(first)).skipped === 1);
    await stop(first);

    // Published while no replica runs; the restarted one replays the queue before it announces anything.
    const withdrawn = await held();
    await publish('closed', approvalClosed(withdrawn.id, 'withdrawn'));
    const pending = await held();
    const second = await notifying(rx.url, name);
    await waitFor(async () => (await notifications(second)).sent >= 1);
    await settle();
    expect(rx.idsPosted()).toEqual([pending.id]);
    expect(await notifications(second)).toMatchObject({ sent: 1, skipped: 1 });
    await stop(second);
  });

  it('stops within seconds while a receiver never answers, handing the request back to the stream', async () => {
    const rx = await receiver(() => 'hang');
    const name = durable();
    const c = await notifying(rx.url, name);
    const r = await held();
    await waitFor(() => rx.posts.length === 1);
    const t0 = Date.now();
    await stop(c);
    expect(Date.now() - t0).toBeLessThan(3000);
    // The next replica posts it at once, not after the consumer's 30 s ack wait.
    rx.control.respond = () => 200;
    const next = await notifying(rx.url, name);
    await waitFor(() => rx.posts.length === 2, 10_000);
    expect(rx.idsPosted()).toEqual([r.id, r.id]);
    await waitFor(async () => (await notifications(next)).sent === 1);
    await stop(next);
  });

  it('resumes after NATS restarts', async () => {
    const rx = await receiver();
    const c = await notifying(rx.url, durable());
    const reconnected = (async () => {
      for await (const s of nc.status()) if (s.type === 'reconnect') return;
    })();
    await fx.nats.kill();
    await fx.nats.start();
    await reconnected;
    const r = await held();
    await waitFor(() => rx.posts.length === 1);
    expect(rx.idsPosted()).toEqual([r.id]);
    await stop(c);
  });

  it('never puts the webhook URL, the signing secret or the SQL in a log line or a metric', async () => {
    const rx = await receiver((_, n) => (n === 1 ? 503 : 401));
    const c = await notifying(rx.url, durable(), { signingSecretFile: secretFile, includeSql: true });
    await held();
    await waitFor(async () => (await notifications(c)).failed === 1);
    const metrics = await (await fetch(`${c.url}/metrics`)).text();
    await stop(c);
    // This test's retry and failure, and every earlier test's lines if they ran.
    const all = logs.join('');
    const lines = logs.map((l) => JSON.parse(l));
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
