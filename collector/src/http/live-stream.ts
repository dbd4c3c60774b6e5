import type { ServerResponse } from 'node:http';
import type { AuditEvent } from '../event.js';
import { type LiveFilter, matchesFilter } from './event-filter.js';
import { SECURITY_HEADERS } from './json-io.js';

interface Client {
  res: ServerResponse;
  filter: LiveFilter;
}

/**
 * Server-sent events (https://html.spec.whatwg.org/multipage/server-sent-events.html): each stored event is one
 * `event: audit` message whose `id` is the event id; chain findings go out as `event: finding`. A client too slow
 * to drain its socket is disconnected rather than buffered without bound (it reconnects and re-reads the API).
 */
export class LiveStream {
  private readonly clients = new Set<Client>();
  private readonly heartbeat: NodeJS.Timeout;

  constructor(
    private readonly maxBufferedBytes = 4 * 1024 * 1024,
    heartbeatMs = 15_000,
  ) {
    // A comment line keeps proxies from closing an idle stream.
    this.heartbeat = setInterval(() => this.broadcastRaw(': keep-alive\n\n'), heartbeatMs);
    this.heartbeat.unref();
  }

  get size(): number {
    return this.clients.size;
  }

  add(res: ServerResponse, filter: LiveFilter): void {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
      ...SECURITY_HEADERS,
    });
    res.write(': connected\n\n');
    const client = { res, filter };
    this.clients.add(client);
    res.on('close', () => this.clients.delete(client));
  }

  publish(events: readonly AuditEvent[]): void {
    if (this.clients.size === 0) return;
    for (const c of this.clients) {
      let chunk = '';
      for (const e of events)
        if (matchesFilter(e, c.filter)) chunk += `event: audit\n${sseId(e.id)}data: ${JSON.stringify(e)}\n\n`;
      if (chunk) this.write(c, chunk);
    }
  }

  /** To every client not limited to some namespaces: a finding names a session of any namespace. */
  publishFinding(finding: unknown): void {
    const chunk = `event: finding\ndata: ${JSON.stringify(finding)}\n\n`;
    for (const c of this.clients) if (!c.filter.namespaces) this.write(c, chunk);
  }

  close(): void {
    clearInterval(this.heartbeat);
    for (const c of this.clients) c.res.end();
    this.clients.clear();
  }

  private broadcastRaw(chunk: string): void {
    for (const c of this.clients) this.write(c, chunk);
  }

  private write(c: Client, chunk: string): void {
    if (c.res.writableLength > this.maxBufferedBytes) {
      c.res.destroy();
      this.clients.delete(c);
      return;
    }
    c.res.write(chunk);
  }
}

/**
 * The `id:` line of an event, or none: a line break in it would end the field and let the rest of the id be read as
 * fields of its own (a forged `data:` for an event that is not in the trail), and a NUL makes browsers ignore it
 * (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation). The sidecar's ids
 * (`<session>.<seq>`) have neither; a session id is whatever its producer chose.
 */
export const sseId = (id: string) => (/[\r\n\0]/.test(id) ? '' : `id: ${id}\n`);
