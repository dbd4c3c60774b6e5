import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGovernanceDb, type GovernanceDb } from './governance-db.js';
import { errorOf, examplePolicy, type Governed, startGoverned } from './governed-sidecar.js';

// Gaps of the policy engine closed through the real sidecar against PostgreSQL, under the example analyst policy.
let db: GovernanceDb;
let analyst: Governed;

beforeAll(async () => {
  db = await createGovernanceDb('gaps');
  const a = examplePolicy('analyst-readonly.yaml');
  a.spec.role = db.roles.analyst;
  analyst = await startGoverned(db.name, a);
}, 60_000);
afterAll(async () => {
  await analyst?.close();
  await db?.drop();
});

describe('denials by the default action', () => {
  it('say what no rule covered, to the client and in the audit event', async () => {
    const c = await analyst.client();
    const cases: [string, string][] = [
      ['COPY public.orders TO STDOUT', 'statement kind "copy" is not allowed by any rule'],
      [
        "SELECT * FROM hr.salaries WHERE amount > 'secret-literal'",
        'relation "hr.salaries" is not covered by any rule allowing select',
      ],
    ];
    for (const [sql, what] of cases) {
      const err = await errorOf(c, sql);
      expect(err?.code, sql).toBe('42501');
      expect(err?.message, sql).toBe(`pgwarden: statement denied by the default action: ${what}`);
      const e = analyst.audit.events.find((e) => e.type === 'statement' && e.statement?.text === sql);
      expect(e?.decision, sql).toMatchObject({ action: 'deny', code: '42501', reason: `default: ${what}` });
    }
  });
});
