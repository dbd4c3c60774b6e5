import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { startCollector } from './collector.js';
import { makeSession } from './testing/audit-events.js';

describe('collector with the embedded store and in-process ingest (the demo without NATS)', () => {
  it('stores, serves and verifies sessions; partitions work on PGlite too', async () => {
    const collector = await startCollector({ http: { port: 0 }, logger: pino({ level: 'silent' }) });
    try {
      const events = makeSession({ id: 'demo-1', statements: 3, denyEvery: 3 });
      expect(await Promise.all(events.map((e) => collector.ingest(e)))).toEqual(events.map(() => 'stored'));
      expect(await collector.ingest(events[0])).toBe('duplicate');
      expect(await collector.ingest({ hello: 'world' })).toBe('rejected');
      const s = await (await fetch(`${collector.url}/api/v1/sessions/demo-1`)).json();
      expect(s.session).toMatchObject({ events: 5, statements: 3, denied: 1, chain: 'ok', ended: true });
      expect(await collector.store.partitions.list()).toEqual(['audit_events_p20261130']);
      expect((await collector.verify()).map((r) => r.ok)).toEqual([true]);
      // HTTP ingest is on by default without NATS.
      const more = makeSession({ id: 'demo-2', statements: 1 });
      const r = await fetch(`${collector.url}/api/v1/ingest`, { method: 'POST', body: JSON.stringify(more) });
      expect(await r.json()).toEqual({ received: 3, stored: 3, duplicates: 0, rejected: 0 });
    } finally {
      await collector.stop();
    }
  }, 60_000);
});
