import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import pino from 'pino';
import { inject } from 'vitest';
import { startNats, type TestNats } from '../../../test/harness/index.js';
import { ROLES } from '../../../test/harness/postgres.js';
import { sha256Hex } from '../auth/token-file.js';
import { type Collector, type CollectorOptions, startCollector } from '../collector.js';
import { createTestDatabase } from './test-database.js';

/** Test support: a collector with its own nats-server, store database and approvers file, ready to decide. */
export interface ApprovalsFixture {
  nats: TestNats;
  db: Awaited<ReturnType<typeof createTestDatabase>>;
  collector: Collector;
  /** A plain client of the same nats-server: plays the sidecar. */
  nc: NatsConnection;
  /** The approvers file (rewrite it to rotate tokens). */
  approversFile: string;
  /** Another collector on the same NATS and store (replicas, restarts). */
  start(over?: Partial<CollectorOptions>): Promise<Collector>;
  stop(): Promise<void>;
}

/** `approvers`: name → {token, groups}; the file keeps only the tokens' SHA-256, as in production. */
export function approversYaml(approvers: Record<string, { token: string; groups?: string[] }>): string {
  return Object.entries(approvers)
    .map(
      ([name, a]) =>
        `- {name: ${name}, groups: [${(a.groups ?? []).join(', ')}], tokenSha256: ${sha256Hex(a.token)}}\n`,
    )
    .join('');
}

/**
 * Starts the fixture and waits until the queue has replayed the stream it creates (until then the approval routes
 * answer 503), probing with `probeToken`.
 */
export async function startApprovalsFixture(approvers: string, probeToken: string): Promise<ApprovalsFixture> {
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-approvals-'));
  const approversFile = join(dir, 'approvers.yaml');
  writeFileSync(approversFile, approvers);
  const [nats, db] = await Promise.all([startNats(), createTestDatabase(inject('pg'), ROLES.superuser)]);
  const start = (over: Partial<CollectorOptions> = {}) =>
    startCollector({
      nats: { url: nats.url },
      store: { url: db.url },
      http: { port: 0 },
      logger: pino({ level: 'silent' }),
      approvals: { approversFile },
      ...over,
    });
  const collector = await start();
  const until = Date.now() + 15_000;
  const headers = { authorization: `Bearer ${probeToken}` };
  while ((await fetch(`${collector.url}/api/v1/approvals`, { headers })).status !== 200) {
    if (Date.now() > until) throw new Error('the approval queue did not load');
    await new Promise((r) => setTimeout(r, 50));
  }
  const nc = await connect({ servers: nats.url });
  return {
    nats,
    db,
    collector,
    nc,
    approversFile,
    start,
    async stop() {
      await nc.close();
      await collector.stop();
      await db.drop();
      await nats.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
