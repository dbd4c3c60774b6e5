import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { compileSidecarPolicy, createPolicyHooks } from '../../sidecar/src/governance/index.js';
import { createPolicySource } from '../../sidecar/src/policy-source/index.js';
import { startSidecar } from '../../sidecar/src/start-sidecar.js';
import { createGovernanceDb, type GovernanceDb } from './governance-db.js';
import { errorOf, examplePolicy, type Governed, memoryAudit, startGoverned, writePolicy } from './governed-sidecar.js';

let db: GovernanceDb;
let g: Governed;
let policy: Record<string, any>;

beforeAll(async () => {
  db = await createGovernanceDb('reload');
  policy = examplePolicy('analyst-readonly.yaml');
  policy.spec.role = db.roles.analyst;
  g = await startGoverned(db.name, policy, { http: true });
});
afterAll(async () => {
  await g?.close();
  await db?.drop();
});

const http = (port: number, path: string) =>
  fetch(`http://127.0.0.1:${port}${path}`).then(async (r) => ({ status: r.status, body: await r.text() }));

describe('hot reload through the real sidecar', () => {
  it('a new policy changes decisions for the next statements of an open session; a bad one is rejected and changes nothing', async () => {
    const c = await g.client();
    const reads = await db.readCount();
    expect(await errorOf(c, 'SELECT * FROM products')).toBeUndefined();
    expect(await db.readCount()).toBe(reads + 1);

    let n = g.events.length;
    const stricter = structuredClone(policy);
    stricter.spec.rules.unshift({ name: 'no-products', action: 'deny', tables: ['public.products'] });
    writePolicy(g.policyFile, stricter);
    const loaded = await g.waitEvent((e) => e.type === 'policy.loaded', n);
    expect(loaded).toMatchObject({ names: ['analyst'], hash: expect.stringMatching(/^sha256:/) });

    const err = await errorOf(c, 'SELECT * FROM products');
    expect(err?.code).toBe('42501');
    expect(err?.message).toContain('rule "no-products"');
    expect(await db.readCount()).toBe(reads + 1);
    expect(await errorOf(c, 'SELECT count(*) FROM orders')).toBeUndefined();

    n = g.events.length;
    const broken = structuredClone(stricter);
    broken.spec.rules[0].action = 'explode';
    writePolicy(g.policyFile, broken);
    const rejected = await g.waitEvent((e) => e.type === 'policy.rejected', n);
    expect(rejected).toMatchObject({ code: 'PGW_POLICY_INVALID', kept: { hash: (loaded as { hash: string }).hash } });
    expect((await errorOf(c, 'SELECT * FROM products'))?.message).toContain('rule "no-products"');

    const httpPort = g.gs.listeners[0].sidecar.httpPort!;
    expect((await http(httpPort, '/metrics')).body).toMatch(/^pgwarden_policy_reload_failures_total 1$/m);
    expect((await http(httpPort, '/readyz')).status).toBe(200);
    await c.end();
  });
});

describe('hot reload and prepared statements', () => {
  it('a statement parsed under the old policy is decided again at its next Execute', async () => {
    // The test before left a stricter policy in force.
    const n0 = g.events.length;
    writePolicy(g.policyFile, policy);
    await g.waitEvent((e) => e.type === 'policy.loaded', n0);
    const c = await g.client();
    const prepared = { name: 's1', text: 'SELECT id FROM orders WHERE id = $1' };
    expect((await c.query({ ...prepared, values: [1] })).rows).toEqual([{ id: 1 }]);

    const n = g.events.length;
    const stricter = structuredClone(policy);
    stricter.spec.rules.unshift({ name: 'no-orders', action: 'deny', tables: ['public.orders'] });
    writePolicy(g.policyFile, stricter);
    await g.waitEvent((e) => e.type === 'policy.loaded', n);
    expect((await errorOf(c, 'SELECT id FROM orders WHERE id = 1'))?.code).toBe('42501');
    // pg binds and executes s1 without parsing it again: the reload must reach it all the same.
    for (const id of [1, 2]) {
      const err = await errorOf(c, prepared as never, [id]);
      expect(err?.code).toBe('42501');
      expect(err?.message).toContain('rule "no-orders"');
    }

    const m = g.events.length;
    writePolicy(g.policyFile, policy);
    await g.waitEvent((e) => e.type === 'policy.loaded', m);
    expect((await c.query({ ...prepared, values: [2] })).rows).toEqual([{ id: 2 }]);
    await c.end();
  });
});

describe('readiness', () => {
  it('/readyz fails and logins are refused until a first valid policy arrives', async () => {
    const shared = inject('pg');
    const dir = mkdtempSync(join(tmpdir(), 'pgwarden-ready-'));
    const file = join(dir, 'policy.yaml');
    writeFileSync(
      file,
      'apiVersion: pgwarden.dev/v1alpha1\nkind: DatabaseAccessPolicy\nmetadata: {name: x}\nspec: {}\n',
    );
    const source = createPolicySource({ path: file, compile: compileSidecarPolicy, debounceMs: 30, pollMs: 0 });
    source.start();
    expect(source.ready()).toBe(false);
    const hooks = await createPolicyHooks({ source });
    const sidecar = await startSidecar({
      listen: { host: '127.0.0.1', port: 0 },
      upstream: { host: shared.host, port: shared.port, database: db.name, sslmode: 'disable' },
      credentials: { username: 'app_scram', password: 'scram-pw-1' },
      hooks,
      audit: memoryAudit(),
      http: { host: '127.0.0.1', port: 0 },
    });
    try {
      const notReady = await http(sidecar.httpPort!, '/readyz');
      expect(notReady.status).toBe(503);
      expect(notReady.body).toContain('policy not loaded');
      const refused = await new pg.Client({ host: '127.0.0.1', port: sidecar.port, user: 'agent', database: 'app' })
        .connect()
        .then(
          () => undefined,
          (e: Error & { code?: string }) => e,
        );
      expect(refused?.code).toBe('57P03');
      const good = examplePolicy('analyst-readonly.yaml');
      good.spec.role = db.roles.analyst;
      const loaded = new Promise((resolve) => source.on((e) => e.type === 'policy.loaded' && resolve(e)));
      writePolicy(file, good);
      await loaded;
      expect((await http(sidecar.httpPort!, '/readyz')).status).toBe(200);
      const c = new pg.Client({ host: '127.0.0.1', port: sidecar.port, user: 'agent', database: 'app' });
      await c.connect();
      expect((await c.query('SELECT current_user AS u')).rows[0].u).toBe(db.roles.analyst);
      await c.end();
    } finally {
      source.close();
      await sidecar.close(500);
    }
  });
});
