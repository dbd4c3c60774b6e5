import { createServer, type RequestListener } from 'node:http';
import type { Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { postWebhook } from './webhook-post.js';

const servers: { close(): Promise<void> }[] = [];

/** A real HTTP server on a free loopback port answering with `handler`. */
async function serve(handler: RequestListener): Promise<URL> {
  const sockets = new Set<Socket>();
  const server = createServer(handler);
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  servers.push({
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  });
  return new URL(`http://127.0.0.1:${(server.address() as { port: number }).port}/hook/secret-path`);
}

afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

describe('postWebhook', () => {
  it('sends the body with its headers and resolves with the status and Retry-After', async () => {
    let got: { body: string; headers: Record<string, unknown> } | undefined;
    const url = await serve((req, res) => {
      let body = '';
      req.on('data', (c) => {
        body += c;
      });
      req.on('end', () => {
        got = { body, headers: req.headers };
        res.writeHead(429, { 'retry-after': '3' }).end();
      });
    });
    expect(await postWebhook(url, '{"a":1}', { 'content-type': 'application/json' })).toEqual({
      status: 429,
      retryAfterMs: 3000,
    });
    expect(got).toMatchObject({
      body: '{"a":1}',
      headers: { 'content-type': 'application/json', 'content-length': '7' },
    });
  });

  it('does not follow a redirect', async () => {
    let posts = 0;
    const url = await serve((req, res) => {
      posts++;
      req.resume();
      res.writeHead(302, { location: '/elsewhere' }).end();
    });
    expect(await postWebhook(url, '{}', {})).toMatchObject({ status: 302 });
    expect(posts).toBe(1);
  });

  it('gives up on a receiver that never answers, and at once when aborted: the receiver may have taken it', async () => {
    let received = 0;
    const url = await serve((req) => {
      req.resume();
      req.on('end', () => received++);
    });
    const t0 = Date.now();
    expect(await postWebhook(url, '{}', {}, { timeoutMs: 200 })).toEqual({
      error: 'timed out after 200 ms',
      maybeDelivered: true,
    });
    expect(Date.now() - t0).toBeLessThan(2000);
    const stop = new AbortController();
    const pending = postWebhook(url, '{}', {}, { signal: stop.signal });
    setTimeout(() => stop.abort(), 50);
    expect(await pending).toEqual({ error: 'aborted', maybeDelivered: true });
    // Both bodies arrived: neither answer did.
    expect(received).toBe(2);
  });

  it('sends nothing when aborted before it starts, and does not crash on the request it never made', async () => {
    let posts = 0;
    const url = await serve((req, res) => {
      posts++;
      req.resume();
      res.end();
    });
    const stop = new AbortController();
    stop.abort();
    expect(await postWebhook(url, '{}', {}, { signal: stop.signal })).toEqual({ error: 'aborted' });
    // An error event of a request destroyed with no listener yet would have thrown by now.
    await new Promise((r) => setTimeout(r, 200));
    expect(posts).toBe(0);
  });

  it('reports a refused connection by its code only, without the URL', async () => {
    const url = await serve(() => {});
    await servers.pop()?.close();
    const result = await postWebhook(url, '{}', {});
    expect(result).toEqual({ error: 'ECONNREFUSED' });
  });

  it('reads at most a bounded answer body', async () => {
    let cut: () => void = () => {};
    const answerCut = new Promise<void>((r) => {
      cut = r;
    });
    const url = await serve((req, res) => {
      req.resume();
      res.on('close', () => cut());
      res.writeHead(200);
      // An endless answer: the post resolves on the status, then the socket is cut after 16 KiB.
      const chunk = Buffer.alloc(64 * 1024, 120);
      const pump = () => {
        while (res.write(chunk)) if (res.destroyed) return;
        res.once('drain', pump);
      };
      pump();
    });
    const t0 = Date.now();
    expect(await postWebhook(url, '{}', {}, { timeoutMs: 10_000 })).toMatchObject({ status: 200 });
    await answerCut;
    // Cut by the size bound, not by the 10 s deadline.
    expect(Date.now() - t0).toBeLessThan(3000);
  });
});
