import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { freePort, waitForPort } from '../harness/index.js';
import { createGovernanceDb, type GovernanceDb } from './governance-db.js';
import { errorOf, examplePolicy, writePolicy } from './governed-sidecar.js';
import { startTestIdp, type TestIdp } from './oidc-provider.js';

const CLI = new URL('../../cli/dist/main.js', import.meta.url);
// `make test` builds first; a bare `vitest run` on a fresh checkout has no cli/dist to launch.
const built = existsSync(CLI);

// Under CI nothing may be skipped silently: a missing build or browser fails these tests instead.
describe.skipIf(!built && !process.env.CI)('pgwarden sidecar --policy (the CLI process)', () => {
  let db: GovernanceDb;
  let child: ChildProcess;
  let port: number;
  let auditFile: string;
  let stderr = '';
  let idp: TestIdp;

  beforeAll(async () => {
    const shared = inject('pg');
    db = await createGovernanceDb('cli');
    const dir = mkdtempSync(join(tmpdir(), 'pgwarden-cli-'));
    idp = await startTestIdp();
    const policy = examplePolicy('analyst-readonly.yaml');
    policy.spec.role = db.roles.analyst;
    policy.spec.authentication = { mode: 'oidc', oidc: { issuer: idp.issuer, audience: 'pgwarden' } };
    writePolicy(join(dir, 'policy.yaml'), policy);
    mkdirSync(join(dir, 'creds'));
    writeFileSync(join(dir, 'creds', 'username'), 'app_scram\n');
    writeFileSync(join(dir, 'creds', 'password'), 'scram-pw-1\n');
    auditFile = join(dir, 'audit.jsonl');
    port = await freePort();
    child = spawn(
      process.execPath,
      [
        'bin/pgwarden',
        'sidecar',
        '--policy',
        join(dir, 'policy.yaml'),
        '--upstream',
        `postgres://${shared.host}:${shared.port}/${db.name}?sslmode=disable`,
        '--credentials-dir',
        join(dir, 'creds'),
        '--listen',
        `127.0.0.1:${port}`,
        '--http',
        'off',
        '--audit',
        `file:${auditFile}`,
        '--oidc-ca-file',
        idp.caFile,
      ],
      {
        cwd: new URL('../../', import.meta.url),
        stdio: ['ignore', 'ignore', 'pipe'],
        // The environment equivalent of --oidc-max-token-lifetime (the policy sets no maxTokenLifetime).
        env: { ...process.env, PGWARDEN_OIDC_MAX_TOKEN_LIFETIME: '2h' },
      },
    );
    child.stderr!.on('data', (d) => (stderr += d));
    // Node start + WASM parser load can take seconds on a loaded CI machine.
    await waitForPort(port, '127.0.0.1', 40_000).catch((err: Error) => {
      throw new Error(`sidecar did not listen: ${err.message}; exit ${child.exitCode}; stderr: ${stderr}`);
    });
  });
  afterAll(async () => {
    if (child && child.exitCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    await db?.drop();
    await idp?.close();
  });

  it('enforces the policy from the file: OIDC login (IdP CA from --oidc-ca-file), role set, denials audited', async () => {
    const expired = new pg.Client({
      host: '127.0.0.1',
      port,
      user: 'agent',
      database: 'app',
      password: await idp.sign({ exp: 1 }),
    });
    expect(
      (
        await expired.connect().then(
          () => undefined,
          (e: { code?: string }) => e,
        )
      )?.code,
    ).toBe('28P01');
    const T = Math.floor(Date.now() / 1000);
    const long = new pg.Client({
      host: '127.0.0.1',
      port,
      user: 'agent',
      database: 'app',
      password: await idp.sign({ iat: T, exp: T + 3 * 3600 }),
    });
    const refused = await long.connect().then(
      () => undefined,
      (e: { code?: string; message?: string }) => e,
    );
    expect(refused?.code).toBe('28P01');
    expect(refused?.message).toMatch(/lifetime 3h \(exp - iat\) exceeds the maximum of 2h/);
    const token = await idp.sign({ sub: 'cli-user' });
    const c = new pg.Client({ host: '127.0.0.1', port, user: 'agent', database: 'app', password: token });
    await c.connect();
    expect((await c.query('SELECT current_user AS u')).rows[0].u).toBe(db.roles.analyst);
    const before = await db.fingerprint();
    expect((await errorOf(c, 'DELETE FROM orders WHERE id = 1'))?.code).toBe('42501');
    expect((await errorOf(c, 'RESET ROLE'))?.code).toBe('42501');
    expect(await db.fingerprint()).toBe(before);
    await c.end();
    await new Promise((r) => setTimeout(r, 300));
    const events = readFileSync(auditFile, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const denial = events.find((e) => e.type === 'statement' && /DELETE FROM orders/.test(JSON.stringify(e.statement)));
    const loaded = events.find((e) => e.type === 'policy.loaded');
    expect(denial).toMatchObject({
      decision: {
        action: 'deny',
        code: '42501',
        reason: 'default: statement kind "delete" is not allowed by any rule',
      },
      policy: { name: 'analyst', hash: loaded.policy.hash },
      statement: { kind: 'delete', tables: ['public.orders'] },
    });
    const reset = events.find((e) => e.type === 'statement' && e.statement?.text === 'RESET ROLE');
    expect(reset?.decision).toMatchObject({ action: 'deny', reason: 'identity-change' });
    expect(stderr).not.toMatch(/scram-pw-1/);
    const signature = token.split('.')[2];
    expect(readFileSync(auditFile, 'utf8')).not.toContain(signature);
    expect(stderr).not.toContain(signature);
  });
});
