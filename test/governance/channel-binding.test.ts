import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GovernedSidecar } from '../../sidecar/src/governance/index.js';
import { freePort } from '../harness/index.js';
import { createGovernanceDb, type GovernanceDb } from './governance-db.js';
import { listenerClient, startListeners } from './governed-sidecar.js';

// The policy's database.channelBinding reaches the sidecar's upstream login (unit tests of the exchange itself, with
// a machine in the middle, are in sidecar/src/upstream/connect.test.ts).
let db: GovernanceDb;
let gs: GovernedSidecar;
const ports = { bound: 0, plain: 0 };

const policy = (name: string, port: number, database: object) => ({
  apiVersion: 'pgwarden.dev/v1alpha1',
  kind: 'DatabaseAccessPolicy',
  metadata: { name, namespace: 'agents' },
  spec: {
    database: { host: 'ignored.example', name: 'ignored', ...database },
    listen: { port },
    role: db.roles.analyst,
    rules: [{ name: 'read', action: 'allow', statements: ['select'] }],
  },
});

beforeAll(async () => {
  db = await createGovernanceDb('cbind');
  ports.bound = await freePort();
  ports.plain = await freePort();
  // Host, port and database only: sslMode and channelBinding stay the policies' own.
  gs = await startListeners(db.name, [
    policy('bound', ports.bound, { sslMode: 'require', channelBinding: 'require' }),
    policy('plain', ports.plain, { sslMode: 'disable', channelBinding: 'require' }),
  ]);
});
afterAll(async () => {
  await gs?.close(500);
  await db?.drop();
});

const connect = listenerClient;

describe('database.channelBinding', () => {
  it('require over TLS: the session is served (only a SCRAM-SHA-256-PLUS login PostgreSQL accepted gets here)', async () => {
    const c = await connect(ports.bound);
    // pg_stat_ssl hides the row from the policy's role (not the login's), so the answer is the role itself.
    const r = await c.query('SELECT current_user AS u');
    expect(r.rows).toEqual([{ u: db.roles.analyst }]);
    await c.end();
  });

  it('require without TLS: the agent gets FATAL 08001 naming the reason, and no password left the sidecar', async () => {
    const err = await connect(ports.plain).then(
      () => undefined,
      (e: Error & { code?: string; severity?: string }) => e,
    );
    expect(err?.code).toBe('08001');
    expect(err?.severity).toBe('FATAL');
    expect(err?.message).toMatch(/channel_binding=require needs TLS/);
    expect(err?.message).not.toContain('scram-pw-1');
  });
});
