import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';

export interface WebhookPost {
  at: number;
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
}

export type WebhookReceiver = Awaited<ReturnType<typeof startWebhookReceiver>>;

/**
 * A webhook receiver on a free loopback port, at a path holding `pathToken` (as a Slack webhook's carries its
 * token): records every POST and answers what `respond` says ('hang': never; `afterMs`: that much later).
 */
export async function startWebhookReceiver(
  pathToken: string,
  respond: (body: string, post: number) => number | 'hang' | { status: number; afterMs: number } = () => 200,
) {
  const posts: WebhookPost[] = [];
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
      if (typeof status === 'object') setTimeout(() => res.writeHead(status.status).end('{"ok":true}'), status.afterMs);
      else if (status !== 'hang') res.writeHead(status).end('{"ok":true}');
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
    url: `http://127.0.0.1:${port}/services/${pathToken}`,
    idsPosted: () => posts.map((p) => noticeId(p.body)),
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** The approval id a notice is about: a JSON body's `id`, or the link in a Slack line. */
export function noticeId(body: string): string | undefined {
  const o = JSON.parse(body);
  return o.id ?? /approval=([0-9a-f-]+)/.exec(o.text)?.[1];
}
