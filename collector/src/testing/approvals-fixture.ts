import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import pino from 'pino';
import { inject } from 'vitest';
import { type StartNatsOptions, startNats, type TestNats } from '../../../test/harness/index.js';
import { ROLES } from '../../../test/harness/postgres.js';
import { sha256Hex } from '../auth/token-file.js';
import { type Collector, type CollectorOptions, startCollector } from '../collector.js';
import { createTestDatabase } from './test-database.js';
import { waitFor } from './wait-for.js';

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
 * Waits until `collector`'s approval queue has replayed its stream and its control stream is set up (until then
 * those routes answer 503), asking as the approver whose token is `token`.
 */
export async function untilApproverRoutesServe(collector: Collector, token: string): Promise<void> {
  const headers = { authorization: `Bearer ${token}` };
  for (const path of ['/api/v1/approvals', '/api/v1/suspensions'])
    await waitFor(async () => (await fetch(`${collector.url}${path}`, { headers })).status === 200);
}

/** Starts the fixture and waits until its approver routes serve (untilApproverRoutesServe) for `probeToken`. */
export async function startApprovalsFixture(
  approvers: string,
  probeToken: string,
  natsOptions?: StartNatsOptions,
): Promise<ApprovalsFixture> {
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-approvals-'));
  const approversFile = join(dir, 'approvers.yaml');
  writeFileSync(approversFile, approvers);
  const [nats, db] = await Promise.all([startNats(natsOptions), createTestDatabase(inject('pg'), ROLES.superuser)]);
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
  await untilApproverRoutesServe(collector, probeToken);
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

/** Two collectors whose approver routes cannot serve: one on NATS without an approvers file, one without NATS. */
export interface UnservedApproverRoutes {
  withoutFile: Collector;
  withoutNats: Collector;
}

/** Runs `fn` against UnservedApproverRoutes (`approvers`: the file the one without NATS has), then stops them. */
export async function withoutApproverRoutes(
  approvers: string,
  fn: (c: UnservedApproverRoutes) => Promise<void>,
): Promise<void> {
  const [nats, db] = await Promise.all([startNats(), createTestDatabase(inject('pg'), ROLES.superuser)]);
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-approvers-'));
  writeFileSync(join(dir, 'approvers.yaml'), approvers);
  const common = { store: { url: db.url }, http: { port: 0 }, logger: pino({ level: 'silent' }) };
  const withoutFile = await startCollector({ ...common, nats: { url: nats.url } });
  const withoutNats = await startCollector({ ...common, approvals: { approversFile: join(dir, 'approvers.yaml') } });
  try {
    await fn({ withoutFile, withoutNats });
  } finally {
    await withoutFile.stop();
    await withoutNats.stop();
    await db.drop();
    await nats.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
