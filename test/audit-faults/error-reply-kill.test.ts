import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { readAuditStream } from '../../sidecar/src/audit/nats-test-kit.js';
import { startNats, type TestNats } from '../harness/index.js';
import { BUILT, type Proc, spoolingSidecar } from './processes.js';

/**
 * A failed statement and a kill of the sidecar between its ErrorResponse and its ReadyForQuery. node-postgres reports
 * the failure at the ErrorResponse, while the statement is recorded at its ReadyForQuery: a client that saw the error
 * must find the statement in the trail after the sidecar is SIGKILLed right then, with its events in the spool.
 * PostgreSQL sends the two messages with separate flushes (elog.c flushes an error at once); a TCP relay between the
 * sidecar and PostgreSQL holds everything after an ErrorResponse for HOLD_MS, so the kill lands in that window
 * every time instead of by chance.
 */
const HOLD_MS = 600;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Relays client ⇄ upstream; upstream → client bytes after an ErrorResponse wait HOLD_MS (in order). */
function errorDelayingRelay(upstream: { host: string; port: number }): Promise<{ port: number; server: Server }> {
  const server = createServer((down: Socket) => {
    const up = tcpConnect(upstream.port, upstream.host);
    down.on('error', () => up.destroy());
    up.on('error', () => down.destroy());
    down.on('close', () => up.destroy());
    up.on('close', () => down.destroy());
    down.pipe(up);
    // Server → client messages are all typed (no SSLRequest with sslmode=disable): type byte, int32 length.
    let pending = Buffer.alloc(0);
    let queue = Promise.resolve();
    up.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      let at = 0;
      let cut = -1;
      while (pending.length - at >= 5) {
        const len = pending.readInt32BE(at + 1);
        if (pending.length - at < len + 1) break;
        at += len + 1;
        if (pending[at - len - 1] === 0x45) cut = at; // 'E'
      }
      const whole = pending.subarray(0, at);
      pending = Buffer.from(pending.subarray(at));
      const now = cut < 0 ? whole : whole.subarray(0, cut);
      const later = cut < 0 ? undefined : Buffer.from(whole.subarray(cut));
      queue = queue.then(async () => {
        if (!down.destroyed) down.write(now);
        if (later === undefined) return;
        await sleep(HOLD_MS);
        if (!down.destroyed) down.write(later);
      });
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve({ port: (server.address() as { port: number }).port, server })),
  );
}

describe.skipIf(!BUILT && !process.env.CI)(
  "sidecar killed between a failed statement's ErrorResponse and its ReadyForQuery",
  () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgwarden-error-kill-'));
    let nats: TestNats | undefined;
    let sidecar: Proc | undefined;
    let relay: Server | undefined;
    afterAll(async () => {
      await sidecar?.kill();
      await nats?.stop();
      relay?.close();
      rmSync(dir, { recursive: true, force: true });
    });

    it('a failure the client was told of is in the trail after the kill (simple Query and extended protocol)', async () => {
      const shared = inject('pg');
      nats = await startNats();
      const r = await errorDelayingRelay({ host: shared.host, port: shared.port });
      relay = r.server;
      const { port, start: startSidecar } = await spoolingSidecar(
        dir,
        `postgres://127.0.0.1:${r.port}/app?sslmode=disable`,
        () => nats!.url,
      );

      // Each failing statement in a session of its own, the sidecar killed as soon as the client reports the error.
      const cases: { sql: string; params?: unknown[] }[] = [
        { sql: "SELECT 1/0 AS simple_fail, 'a' || 'b'" },
        // Fails in its Execute (1/$1 with a constant would fail in the Bind already, where the plan folds it).
        { sql: 'SELECT x / ($1::int - x) AS extended_fail FROM generate_series(1, 2) x', params: [1] },
      ];
      const told: string[] = [];
      for (const c of cases) {
        sidecar = await startSidecar();
        const client = new pg.Client({ host: '127.0.0.1', port, user: 'agent', database: 'app' });
        client.on('error', () => {});
        await client.connect();
        await client.query("SELECT 'warm-up'");
        await nats.kill();
        // In spool mode from here on (in direct mode an event waits in memory for its ack: a kill loses it, documented).
        for (let t = 0; t < 200 && !/disconnected; spooling/.test(sidecar.output()); t++) await sleep(25);
        const err = (await client.query(c.sql, c.params).then(
          () => undefined,
          (e: { code?: string }) => e,
        )) as { code?: string } | undefined;
        await sidecar.kill();
        told.push(err?.code ?? 'none');
        await client.end().catch(() => {});
        await nats.start();
      }
      // The client was told of each failure before the kill.
      expect(told).toEqual(['22012', '22012']);

      // Everything the killed sidecars spooled is delivered by the next one.
      sidecar = await startSidecar();
      const until = Date.now() + 20_000;
      let failed: { text: string; code: string | undefined }[] = [];
      while (Date.now() < until) {
        const events = (await readAuditStream(nats.url).catch(() => [])).map((m) => m.event as Record<string, any>);
        failed = events
          .filter((e) => e.type === 'statement' && /_fail/.test(e.statement?.text ?? ''))
          .map((e) => ({ text: e.statement.text, code: e.result?.error?.code }));
        if (failed.length >= cases.length) break;
        await sleep(200);
      }
      const byText = (a: { text: string }, b: { text: string }) => a.text.localeCompare(b.text);
      expect(failed.sort(byText)).toEqual(cases.map((c) => ({ text: c.sql, code: '22012' })).sort(byText));
    }, 90_000);
  },
);
