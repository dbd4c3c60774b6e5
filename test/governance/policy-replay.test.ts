import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { BIN, BUILT } from '../../cli/src/testing/cli-process.js';
import { type Collector, startCollector } from '../../collector/src/collector.js';
import { createTestDatabase } from '../../collector/src/testing/test-database.js';
import { ROLES } from '../harness/postgres.js';
import { createGovernanceDb, type GovernanceDb } from './governance-db.js';
import { examplePolicy, type Governed, startGoverned, writePolicy } from './governed-sidecar.js';

// `pgwarden policy replay` end to end: the real sidecar under the shipped analyst policy records a session, a real
// collector stores the trail, and the built CLI replays it against candidate policies. Under CI a missing build
// fails instead of skipping.
describe.skipIf(!BUILT && !process.env.CI)('pgwarden policy replay against a collector’s trail', () => {
  let db: GovernanceDb;
  let g: Governed;
  let collector: Collector;
  let store: Awaited<ReturnType<typeof createTestDatabase>>;
  const dir = mkdtempSync(join(tmpdir(), 'pgwarden-replay-'));

  beforeAll(async () => {
    db = await createGovernanceDb('replay');
    const policy = examplePolicy('analyst-readonly.yaml');
    policy.spec.role = db.roles.analyst;
    g = await startGoverned(db.name, policy);
    // A store on the shared cluster: what the replay reads does not depend on the store, and an embedded (PGlite)
    // one took ~4 s of this file's start to initialise (collector/src/embedded-store.test.ts covers that store).
    store = await createTestDatabase(inject('pg'), ROLES.superuser);
    collector = await startCollector({
      store: { url: store.url },
      http: { host: '127.0.0.1', port: 0 },
      logger: pino({ level: 'silent' }),
    });
  }, 60_000);
  afterAll(async () => {
    await g?.close();
    await collector?.stop();
    await store?.drop();
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  // Asynchronously: the collector answers from this process, so a synchronous spawn would wait on itself.
  const run = (args: string[]) =>
    new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(BIN, args, { encoding: 'utf8' }, (err, stdout, stderr) =>
        resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
    });
  const replay = (files: string[], ...args: string[]) =>
    run(['policy', 'replay', ...files, '--collector', collector.url, ...args]);

  it('reproduces the trail with the policy in force, and shows what a stricter candidate would deny', async () => {
    const c = await g.client();
    await c.query('SELECT id FROM orders WHERE id = 1');
    await c.query('SELECT email FROM customers WHERE id = 1');
    await c.query('SELECT email FROM customers WHERE id = 2');
    await expect(c.query('DELETE FROM orders WHERE id = 1')).rejects.toMatchObject({ code: '42501' });
    await c.end();
    // The sidecar's own events, as NATS would deliver them.
    const events = () => g.audit.events.filter((e) => e.type === 'statement');
    const t0 = Date.now();
    while (events().length < 4 && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 20));
    for (const e of g.audit.events) expect(await collector.ingest(e)).toBe('stored');

    const current = join(dir, 'current.yaml');
    writePolicy(current, examplePolicy('analyst-readonly.yaml'));
    const same = await replay([current]);
    expect(same.status, same.stderr).toBe(0);
    expect(same.stdout).toContain('replayed 4 statement(s) of 1 session(s)');
    expect(same.stdout).toContain('no decision would change');

    const stricter = examplePolicy('analyst-readonly.yaml');
    stricter.spec.rules.unshift({ name: 'no-pii', action: 'deny', tables: ['public.customers'] });
    const candidate = join(dir, 'stricter.yaml');
    writePolicy(candidate, stricter);
    const r = await replay([candidate], '--fail-on', 'denied');
    expect(r.status, r.stderr).toBe(1);
    expect(r.stdout).toMatch(/allow → deny\s+2 {2}changed/);
    expect(r.stdout).toContain('2× allow → deny (rule "no-pii") [rule]  SELECT email FROM customers WHERE id = $1');
    const json = JSON.parse((await replay([candidate], '--json')).stdout);
    expect(json.transitions).toEqual({ 'allow → allow': 1, 'allow → deny': 2, 'deny → deny': 1 });

    // The same trail from the sidecar's own audit file (`--audit file:PATH`), without a collector.
    const file = join(dir, 'sidecar-audit.jsonl');
    writeFileSync(file, `${g.audit.events.map((e) => JSON.stringify(e)).join('\n')}\nnot an event\n`);
    const local = JSON.parse((await run(['policy', 'replay', candidate, '--audit-file', file, '--json'])).stdout);
    expect(local.transitions).toEqual(json.transitions);
    const missing = await run(['policy', 'replay', candidate, '--audit-file', join(dir, 'none.jsonl')]);
    expect([missing.status, missing.stderr]).toEqual([2, expect.stringContaining('cannot read --audit-file')]);

    // Nothing of another policy's trail, and a clear exit 2 when the collector cannot be asked.
    expect((await replay([candidate], '--policy', 'someone-else')).stdout).toContain('replayed 0 statement(s)');
    const down = await run(['policy', 'replay', candidate, '--collector', 'http://127.0.0.1:9']);
    expect([down.status, down.stderr]).toEqual([2, expect.stringContaining('cannot reach the collector')]);
  }, 60_000);
});
