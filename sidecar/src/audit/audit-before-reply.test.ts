import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type Sidecar, startSidecar } from '../start-sidecar.js';
import { createAuditRecorder } from './audit-recorder.js';
import { type AuditSink, eventJson } from './audit-sink.js';

/**
 * A sink that, like the spool, holds events for a write later in the turn and makes them durable only when
 * flushed. A client must never see a statement's reply before its event is durable: a kill of the sidecar in
 * between would leave a statement the client saw run and the trail never holds.
 */
class DeferringSink implements AuditSink {
  pending: string[] = [];
  durable: string[] = [];
  emit(event: Record<string, unknown>): void {
    this.pending.push(eventJson(event));
  }
  flush(): void {
    this.durable.push(...this.pending);
    this.pending = [];
  }
  ready(): boolean {
    return true;
  }
  async close(): Promise<void> {}
  durableStatements(): string[] {
    return this.durable
      .map((j) => JSON.parse(j) as { type: string; statement?: { text: string } })
      .filter((e) => e.type === 'statement')
      .map((e) => e.statement!.text);
  }
}

let sidecar: Sidecar;
const sink = new DeferringSink();

beforeAll(async () => {
  const shared = inject('pg');
  sidecar = await startSidecar({
    listen: { host: '127.0.0.1', port: 0 },
    upstream: { host: shared.host, port: shared.port, database: shared.database, sslmode: 'disable' },
    credentials: { username: 'app_scram', password: 'scram-pw-1' },
    audit: sink,
    auditRecorder: createAuditRecorder(sink),
  });
});

afterAll(async () => {
  await sidecar?.close(1000);
});

describe('audit events are durable before the client sees the reply', () => {
  it('simple, failing and extended-protocol statements', async () => {
    const c = new pg.Client({ host: '127.0.0.1', port: sidecar.port, user: 'agent', database: 'app', password: 'x' });
    await c.connect();
    try {
      await c.query('SELECT 1');
      expect(sink.durableStatements()).toEqual(['SELECT 1']);
      // node-postgres rejects at the ErrorResponse; the statement (and its event) ends at the ReadyForQuery after
      // it, which the client gets only once that event is durable: by the next reply at the latest.
      await expect(c.query('SELECT 1/0')).rejects.toMatchObject({ code: '22012' });
      await c.query('SELECT $1::int AS n', [7]);
      expect(sink.durableStatements()).toEqual(['SELECT 1', 'SELECT 1/0', 'SELECT $1::int AS n']);
      expect(sink.pending.filter((j) => j.includes('"type":"statement"'))).toEqual([]);
    } finally {
      await c.end();
    }
  });
});
