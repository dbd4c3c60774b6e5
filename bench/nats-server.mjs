// A throwaway nats-server with JetStream for the benchmark's NATS audit leg (the logic of test/harness/nats.ts,
// kept in plain ESM because bench/ runs without a TypeScript build step).
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { freePort, waitForPort } from './net.mjs';

/** The stream the sidecar publishes audit events to (sidecar/src/audit/audit-stream.ts). */
const AUDIT_STREAM = 'PGWARDEN_AUDIT';

function binary() {
  const candidates = [
    process.env.PGWARDEN_NATS_SERVER,
    '/usr/sbin/nats-server',
    '/usr/bin/nats-server',
    '/usr/local/bin/nats-server',
  ];
  const found = candidates.find((c) => c && existsSync(c));
  if (!found) throw new Error('nats-server not found: apt-get install -y nats-server (or set PGWARDEN_NATS_SERVER)');
  return found;
}

/** Starts nats-server -js on a free loopback port. Returns {url, pid, auditMessages(), stop()}. */
export async function startBenchNats() {
  const storeDir = mkdtempSync(join(tmpdir(), 'pgwarden-bench-nats-'));
  const port = await freePort();
  const child = spawn(binary(), ['-js', '-sd', storeDir, '-a', '127.0.0.1', '-p', String(port)], {
    stdio: 'ignore',
  });
  let exited = false;
  const exit = new Promise((resolve) => child.on('exit', resolve));
  exit.then(() => {
    exited = true;
  });
  const url = `nats://127.0.0.1:${port}`;
  try {
    await waitForPort(port, { alive: () => !exited });
  } catch (err) {
    child.kill('SIGKILL');
    rmSync(storeDir, { recursive: true, force: true });
    throw err;
  }
  const server = {
    url,
    pid: child.pid,
    /** JetStream messages the last auditMessages() read (events ÷ messages = the sink's mean batch size). */
    messages: 0,
    /** Audit events in the stream: a message carries one event, or `Pgwarden-Batch: N` of them (docs/audit.md). */
    async auditMessages() {
      const nc = await connect({ servers: url });
      try {
        const js = jetstream(nc);
        const info = await (await jetstreamManager(nc)).streams.info(AUDIT_STREAM);
        const total = info.state.messages;
        server.messages = total;
        if (total === 0) return 0;
        const consumer = await js.consumers.get(AUDIT_STREAM); // ordered, ephemeral
        const messages = await consumer.consume({ max_messages: 1000 });
        let seen = 0;
        let events = 0;
        for await (const m of messages) {
          events += Number(m.headers?.get('Pgwarden-Batch') || 1);
          if (++seen >= total) break;
        }
        return events;
      } catch {
        return 0;
      } finally {
        await nc.close();
      }
    },
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exit;
        clearTimeout(timer);
      }
      rmSync(storeDir, { recursive: true, force: true });
    },
  };
  return server;
}
