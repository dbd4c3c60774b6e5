import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { freePort, waitForPort } from '../../../test/harness/index.js';
import { parseUpstream } from './sidecar.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const bin = join(root, 'bin/pgwarden');
const built = existsSync(join(root, 'cli/dist/commands/sidecar.js'));

describe('parseUpstream', () => {
  it('reads host, port, database and sslmode, defaulting to verify-full', () => {
    expect(parseUpstream('postgres://db.example:6432/orders?sslmode=require')).toMatchObject({
      host: 'db.example',
      port: 6432,
      database: 'orders',
      sslmode: 'require',
    });
    expect(parseUpstream('postgresql://db/orders')).toMatchObject({ port: 5432, sslmode: 'verify-full' });
    expect(() => parseUpstream('postgres://db/orders?sslmode=prefer')).toThrow(/sslmode must be one of/);
    expect(() => parseUpstream('mysql://db/x')).toThrow(/postgres:\/\//);
  });

  it('reads channel_binding only when the URL names it, so a policy keeps its own', () => {
    expect(parseUpstream('postgres://db/orders?sslmode=require&channel_binding=require')).toMatchObject({
      channelBinding: 'require',
    });
    expect(parseUpstream('postgres://db/orders?channel_binding=disable').channelBinding).toBe('disable');
    expect('channelBinding' in parseUpstream('postgres://db/orders')).toBe(false);
    expect(() => parseUpstream('postgres://db/orders?channel_binding=maybe')).toThrow(
      /channel_binding must be one of disable, prefer, require/,
    );
  });
});

// The CLI runs from cli/dist: `make test` builds first. Without a build there is nothing to spawn.
// Under CI nothing may be skipped silently: a missing build or browser fails these tests instead.
describe.skipIf(!built && !process.env.CI)('pgwarden sidecar process', () => {
  let child: ChildProcess | undefined;
  afterEach(() => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
  });

  it('serves, reports health, and drains in-flight work on SIGTERM before exiting 0', async () => {
    const shared = inject('pg');
    const dir = mkdtempSync(join(tmpdir(), 'pgw-cli-'));
    writeFileSync(join(dir, 'username'), 'app_scram\n');
    writeFileSync(join(dir, 'password'), 'scram-pw-1\n');
    const [port, httpPort] = [await freePort(), await freePort()];
    let stderr = '';
    child = spawn(
      process.execPath,
      [bin, 'sidecar', '--credentials-dir', dir, '--audit', `file:${join(dir, 'audit.jsonl')}`, '--grace-period', '5s'],
      {
        env: {
          ...process.env,
          PGWARDEN_LISTEN: `127.0.0.1:${port}`,
          PGWARDEN_UPSTREAM: `postgres://${shared.host}:${shared.port}/app?sslmode=verify-full`,
          PGWARDEN_CA_FILE: shared.caFile,
          PGWARDEN_HTTP: `127.0.0.1:${httpPort}`,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    child.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)));
    // The CLI loads every subcommand's modules at start, which takes seconds on a loaded 2-core machine.
    await waitForPort(port, '127.0.0.1', 60_000).catch((err) => {
      throw new Error(`${err.message}; stderr: ${stderr}`);
    });
    await waitForPort(httpPort);
    const get = async (path: string) => {
      const r = await fetch(`http://127.0.0.1:${httpPort}${path}`);
      return { status: r.status, body: await r.text() };
    };
    expect(await get('/healthz')).toEqual({ status: 200, body: 'ok\n' });
    expect(await get('/readyz')).toEqual({ status: 200, body: 'ready\n' });
    const c = new pg.Client({ host: '127.0.0.1', port, user: 'agent', database: 'app' });
    const fatal: string[] = [];
    c.on('error', (err: Error & { code?: string }) => fatal.push(err.code ?? err.message));
    await c.connect();
    expect((await c.query('SELECT current_user AS u')).rows).toEqual([{ u: 'app_scram' }]);
    const metrics = (await get('/metrics')).body;
    expect(metrics).toMatch(/^pgwarden_sessions_active 1$/m);
    expect(metrics).toMatch(/^pgwarden_statements_total\{action="allow",outcome="ok"\} 1$/m);

    const inflight = c.query('SELECT pg_sleep(1) AS slept, 7 AS n');
    await new Promise((r) => setTimeout(r, 200));
    child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 200));
    // No new connections while draining.
    const late = new pg.Client({
      host: '127.0.0.1',
      port,
      user: 'agent',
      database: 'app',
      connectionTimeoutMillis: 2000,
    });
    await expect(late.connect()).rejects.toThrow();
    expect((await inflight).rows).toEqual([{ slept: '', n: 7 }]);
    expect(await exited).toBe(0);
    // The idle session was then ended the way PostgreSQL ends sessions on shutdown.
    expect(fatal[0]).toBe('57P01');
    await c.end().catch(() => {});

    const events = readFileSync(join(dir, 'audit.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(events.filter((e) => e.type === 'statement').map((e) => e.statement.text)).toEqual([
      'SELECT current_user AS u',
      'SELECT pg_sleep(1) AS slept, 7 AS n',
    ]);
    expect(stderr).not.toContain('scram-pw-1');
    expect(stderr).toMatch(/sidecar listening/);
  }, 90_000);

  it('listens on loopback only, unless told otherwise with --insecure-listen-any', async () => {
    const shared = inject('pg');
    const dir = mkdtempSync(join(tmpdir(), 'pgw-cli-listen-'));
    writeFileSync(join(dir, 'username'), 'app_scram\n');
    writeFileSync(join(dir, 'password'), 'scram-pw-1\n');
    const port = await freePort();
    const args = ['sidecar', '--credentials-dir', dir, '--audit', `file:${join(dir, 'audit.jsonl')}`, '--http', 'off'];
    const env = {
      ...process.env,
      PGWARDEN_UPSTREAM: `postgres://${shared.host}:${shared.port}/app?sslmode=verify-full`,
      PGWARDEN_CA_FILE: shared.caFile,
    };
    const refused = spawnSync(process.execPath, [bin, ...args, '--listen', `0.0.0.0:${port}`], {
      env,
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain(
      `--listen 0.0.0.0:${port} is not a loopback address: anyone who reaches it would act as this pod`,
    );
    let stderr = '';
    child = spawn(process.execPath, [bin, ...args, '--listen', `0.0.0.0:${port}`, '--insecure-listen-any'], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stderr!.on('data', (d) => (stderr += d));
    await waitForPort(port, '127.0.0.1', 60_000).catch((err) => {
      throw new Error(`${err.message}; stderr: ${stderr}`);
    });
    expect(stderr).toMatch(/sidecar listening/);
    expect(stderr).toContain('"listen":"0.0.0.0:');
  }, 90_000);
});
