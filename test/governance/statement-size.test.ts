import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGovernanceDb, type GovernanceDb } from './governance-db.js';
import { errorOf, type Governed, startGoverned } from './governed-sidecar.js';

// Under a policy every statement is parsed on the sidecar's only thread: a statement of a few MiB would stall every
// session and grow the process by hundreds of MiB, so the default limit there is 1 MiB (protocol/codes.ts).
let db: GovernanceDb;
let g: Governed;

beforeAll(async () => {
  db = await createGovernanceDb('stmtsize');
  g = await startGoverned(db.name, {
    apiVersion: 'pgwarden.dev/v1alpha1',
    kind: 'DatabaseAccessPolicy',
    metadata: { name: 'sized', namespace: 'agents' },
    spec: {
      database: { host: 'unused', name: 'app' },
      role: db.roles.writer,
      defaultAction: 'allow',
      guardrails: { blockDDL: false, requireWhere: [] },
    },
  });
});
afterAll(async () => {
  await g?.close();
  await db?.drop();
});

describe('statement size under a policy', () => {
  it('refuses a statement over 1 MiB with 54000 unread and unparsed; the session and others go on', async () => {
    const [a, b] = await Promise.all([g.client(), g.client()]);
    const n = (2 * 1024 * 1024) / 24;
    const big = `SELECT CASE ${Array.from({ length: n }, (_, i) => `WHEN ${i} = 0 THEN ${i}`).join(' ')} END`;
    const t0 = performance.now();
    const [err, other] = await Promise.all([errorOf(a, big), b.query('SELECT 1 AS one')]);
    expect(err).toMatchObject({
      code: '54000',
      message: 'statement is larger than the limit of 1048576 bytes set by pgwarden',
    });
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(other.rows).toEqual([{ one: 1 }]);
    expect((await a.query('SELECT 2 AS two')).rows).toEqual([{ two: 2 }]);
    const denied = g.audit.events.find((e) => e.type === 'statement' && e.decision?.reason === 'statement too large');
    expect(denied).toBeDefined();
    // Under the limit it is analysed and runs.
    expect(
      (
        await a.query(
          `SELECT CASE ${Array.from({ length: 1000 }, (_, i) => `WHEN ${i} = 0 THEN ${i}`).join(' ')} END AS c`,
        )
      ).rows,
    ).toEqual([{ c: 0 }]);
  });
});
