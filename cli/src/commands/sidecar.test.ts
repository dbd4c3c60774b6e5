import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type AuditEvent, auditVerifyKey, verifyChain, verifyCheckpoint } from '@pgwarden/policy';
import { Command } from 'commander';
import pg from 'pg';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { createTestDatabase } from '../../../collector/src/testing/test-database.js';
import { freePort, ROLES, waitForPort } from '../../../test/harness/index.js';
import { startCollectorProcess, stopProcess } from '../testing/cli-process.js';
import { parseUpstream, registerSidecar } from './sidecar.js';

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

describe('pgwarden sidecar flags', () => {
  it('are each documented in the sidecar flag table of docs/operations.md, with their environment variable', () => {
    const program = new Command();
    registerSidecar(program);
    const flags = program.commands[0].options.map((o) => o.long!);
    expect(flags).toEqual(expect.arrayContaining(['--audit-signing-key', '--audit-checkpoint-interval']));
    const doc = readFileSync(join(root, 'docs/operations.md'), 'utf8');
    const table = doc.slice(doc.indexOf('## Sidecar (`pgwarden sidecar`)'), doc.indexOf('### Health and readiness'));
    for (const flag of flags) {
      const env = flag.slice(2).replace(/-/g, '_').toUpperCase();
      expect(table, flag).toContain(`\`${flag}\` (\`${env}\`)`);
    }
  });
});

/** The ports of a spawned `pgwarden sidecar`, from its start-up log line (port 0 for both listeners). */
async function listening(child: ChildProcess, stderr: () => string): Promise<{ listen: string; http: number }> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const line = stderr()
      .split('\n')
      .find((l) => l.includes('"sidecar listening"'));
    if (line) return JSON.parse(line) as { listen: string; http: number };
    if (Date.now() > deadline || child.exitCode !== null)
      throw new Error(`the sidecar did not start; stderr: ${stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

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
    let stderr = '';
    // Port 0 for both listeners, read back from the start-up log line: a port picked free beforehand can be taken by
    // another test's listener before the CLI (seconds to start on a loaded machine) binds it, as happened once.
    child = spawn(
      process.execPath,
      [bin, 'sidecar', '--credentials-dir', dir, '--audit', `file:${join(dir, 'audit.jsonl')}`, '--grace-period', '5s'],
      {
        env: {
          ...process.env,
          PGWARDEN_LISTEN: '127.0.0.1:0',
          PGWARDEN_UPSTREAM: `postgres://${shared.host}:${shared.port}/app?sslmode=verify-full`,
          PGWARDEN_CA_FILE: shared.caFile,
          PGWARDEN_HTTP: '127.0.0.1:0',
          PGWARDEN_MAX_RETAINED_STATEMENT_BYTES: '20000000',
          PGWARDEN_STATEMENT_STALL_TIMEOUT: '30s',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    child.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)));
    const started = await listening(child, () => stderr);
    const port = Number(started.listen.split(':').pop());
    const httpPort = started.http;
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
    // The process-wide bound on kept statements, from its environment variable; pg's query left nothing kept.
    expect(metrics).toMatch(/^pgwarden_retained_statement_bytes_limit 20000000$/m);
    expect(metrics).toMatch(/^pgwarden_retained_statement_bytes \d+$/m);

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
    // The port accepts as soon as it is bound; the log line may reach the pipe a moment later on a loaded machine.
    for (const until = Date.now() + 10_000; !/sidecar listening/.test(stderr) && Date.now() < until; )
      await new Promise((r) => setTimeout(r, 50));
    expect(stderr).toMatch(/sidecar listening/);
    expect(stderr).toContain('"listen":"0.0.0.0:');
  }, 90_000);

  it('signs its audit trail with --audit-signing-key: a session ends with a valid checkpoint, and the key is nowhere in the trail or the logs', async () => {
    const shared = inject('pg');
    const dir = mkdtempSync(join(tmpdir(), 'pgw-cli-signed-'));
    writeFileSync(join(dir, 'username'), 'app_scram\n');
    writeFileSync(join(dir, 'password'), 'scram-pw-1\n');
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const keyFile = join(dir, 'signing.key');
    const privatePem = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
    writeFileSync(keyFile, privatePem, { mode: 0o600 });
    const trusted = auditVerifyKey(publicKey.export({ format: 'pem', type: 'spki' }).toString());
    // The key as text in every form it could leak in: the PEM body, the raw private scalar (base64url and hex).
    const secretForms = [
      privatePem.split('\n')[1],
      privateKey.export({ format: 'jwk' }).d!,
      Buffer.from(privateKey.export({ format: 'jwk' }).d!, 'base64url').toString('hex'),
    ];
    const port = await freePort();
    const trail = join(dir, 'audit.jsonl');
    let stderr = '';
    child = spawn(
      process.execPath,
      [bin, 'sidecar', '--credentials-dir', dir, '--audit', `file:${trail}`, '--http', 'off', '--log-level', 'debug'],
      {
        env: {
          ...process.env,
          PGWARDEN_LISTEN: `127.0.0.1:${port}`,
          PGWARDEN_UPSTREAM: `postgres://${shared.host}:${shared.port}/app?sslmode=verify-full`,
          PGWARDEN_CA_FILE: shared.caFile,
          PGWARDEN_AUDIT_SIGNING_KEY: keyFile,
          PGWARDEN_AUDIT_CHECKPOINT_INTERVAL: '100ms',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    child.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)));
    await waitForPort(port, '127.0.0.1', 60_000).catch((err) => {
      throw new Error(`${err.message}; stderr: ${stderr}`);
    });
    const c = new pg.Client({ host: '127.0.0.1', port, user: 'agent', database: 'app' });
    await c.connect();
    await c.query('SELECT 1 AS one');
    // Long enough for a sweep to sign the open session before its next statement.
    await new Promise((r) => setTimeout(r, 300));
    await c.query('SELECT 2 AS two');
    await c.end();
    await new Promise((r) => setTimeout(r, 200));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);

    const text = readFileSync(trail, 'utf8');
    const events = text
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as AuditEvent);
    const sessionId = events.find((e) => e.type === 'session.start')?.session.id;
    const session = events.filter((e) => e.session.id === sessionId);
    const types = session.map((e) => e.type);
    expect(types.filter((t) => t !== 'audit.checkpoint')).toEqual([
      'session.start',
      'statement',
      'statement',
      'session.end',
    ]);
    // A sweep signed the open session between its statements; the end was signed at once.
    expect(types.slice(types.indexOf('statement'), types.lastIndexOf('statement'))).toContain('audit.checkpoint');
    expect(types.slice(-2)).toEqual(['session.end', 'audit.checkpoint']);
    const keyFor = (id: string) => (id === trusted.keyId ? trusted.key : undefined);
    for (const e of session.filter((x) => x.type === 'audit.checkpoint'))
      expect(verifyCheckpoint(e, keyFor)).toEqual({ ok: true, keyId: trusted.keyId, seq: e.session.seq - 1 });
    expect(verifyChain(events)).toMatchObject({ ok: true, open: [] });
    expect(stderr).toContain(`"keyId":"${trusted.keyId}"`);
    // The trail as the sidecar wrote it verifies with `pgwarden audit verify --file`, fully signed, signatures required.
    const keysFile = join(dir, 'audit-keys.json');
    writeFileSync(
      keysFile,
      JSON.stringify({ keys: [{ name: 'cli-test', publicKey: publicKey.export({ format: 'pem', type: 'spki' }) }] }),
    );
    const verified = spawnSync(
      process.execPath,
      [
        bin,
        'audit',
        'verify',
        '--file',
        trail,
        '--audit-keys',
        keysFile,
        '--require-signed-audit',
        '--session',
        sessionId!,
      ],
      { encoding: 'utf8' },
    );
    expect([verified.status, verified.stderr]).toEqual([0, '']);
    expect(verified.stdout).toContain(`session ${sessionId} (${session.length} events`);
    expect(verified.stdout).toMatch(/signed through seq \d+ by cli-test\): ok/);
    // Cut the session's tail after its first checkpoint: what is left links and is signed to its end, so only the
    // heads the sidecar's own chain recorded (audit.heads) show that the session went on.
    const firstCheckpoint = session.find((e) => e.type === 'audit.checkpoint')!.session.seq;
    expect(firstCheckpoint).toBeLessThan(session.length);
    const cut = join(dir, 'cut.jsonl');
    writeFileSync(
      cut,
      text
        .trim()
        .split('\n')
        .filter((l) => {
          const e = JSON.parse(l) as AuditEvent;
          return e.session.id !== sessionId || e.session.seq <= firstCheckpoint;
        })
        .join('\n'),
    );
    const heads = events.filter((e) => e.type === 'audit.heads');
    expect(heads.flatMap((e) => e.heads!.chains)).toContainEqual({
      id: sessionId,
      seq: session.length,
      hash: session.at(-1)!.hash,
    });
    const cutVerified = spawnSync(
      process.execPath,
      [
        bin,
        'audit',
        'verify',
        '--file',
        cut,
        '--audit-keys',
        keysFile,
        '--require-signed-audit',
        '--session',
        sessionId!,
      ],
      { encoding: 'utf8' },
    );
    expect(cutVerified.status).toBe(1);
    expect(cutVerified.stdout).toContain(
      `audit.gap seq ${firstCheckpoint + 1}..${session.length}: events ${firstCheckpoint + 1}..${session.length} are missing`,
    );
    for (const secret of secretForms) {
      expect(text).not.toContain(secret);
      expect(stderr).not.toContain(secret);
    }
  }, 90_000);

  it('a sidecar killed with a session open: the collector reads the session interrupted once its heads stop', async () => {
    const shared = inject('pg');
    const dir = mkdtempSync(join(tmpdir(), 'pgw-cli-killed-'));
    writeFileSync(join(dir, 'username'), 'app_scram\n');
    writeFileSync(join(dir, 'password'), 'scram-pw-1\n');
    const trail = join(dir, 'audit.jsonl');
    writeFileSync(trail, '');
    const port = await freePort();
    child = spawn(
      process.execPath,
      [bin, 'sidecar', '--credentials-dir', dir, '--audit', `file:${trail}`, '--http', 'off'],
      {
        env: {
          ...process.env,
          PGWARDEN_LISTEN: `127.0.0.1:${port}`,
          PGWARDEN_UPSTREAM: `postgres://${shared.host}:${shared.port}/app?sslmode=verify-full`,
          PGWARDEN_CA_FILE: shared.caFile,
          PGWARDEN_AUDIT_CHECKPOINT_INTERVAL: '100ms',
          PGWARDEN_AUDIT_HEADS_REFRESH: '1s',
        },
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child!.once('exit', (_c, sig) => resolve(sig)));
    await waitForPort(port, '127.0.0.1', 60_000);
    // A store on the shared cluster: how the collector reads the session does not depend on the store, and an
    // embedded (PGlite) one cost the collector process ~3.5 s of CPU to initialise.
    const store = await createTestDatabase(shared, ROLES.superuser);
    // A short grace: its periodic sweep (which counts interrupted sessions) then runs every second.
    const collector = await startCollectorProcess(['--store', store.url, '--tail-file', trail, '--gap-grace', '2']);
    try {
      const c = new pg.Client({ host: '127.0.0.1', port, user: 'agent', database: 'app' });
      await c.connect();
      c.on('error', () => {}); // the sidecar is killed under it
      await c.query('SELECT 1 AS one');
      type S = { id: string; state: string; lastHeard: string | null; ended: boolean };
      const sessions = async () =>
        ((await (await fetch(`${collector.url}/api/v1/sessions?limit=100`)).json()) as { items: S[] }).items.filter(
          (x) => !x.id.startsWith('collector-') && !x.id.startsWith('sidecar-'),
        );
      const until = async (ok: (s: S[]) => boolean, what: string) => {
        const by = Date.now() + 30_000;
        for (let s = await sessions(); ; s = await sessions()) {
          if (ok(s)) return s;
          if (Date.now() > by) throw new Error(`${what}: ${JSON.stringify(s)}`);
          await new Promise((r) => setTimeout(r, 200));
        }
      };
      // Open and named by its sidecar, idle: stays open across several refreshes.
      const [open] = await until((s) => s.length === 1 && s[0].lastHeard !== null, 'session named by its sidecar');
      expect(open).toMatchObject({ state: 'open', ended: false });
      await new Promise((r) => setTimeout(r, 3500));
      expect((await sessions())[0]).toMatchObject({ id: open.id, state: 'open' });
      child.kill('SIGKILL');
      expect(await exited).toBe('SIGKILL');
      const [cut] = await until((s) => s[0]?.state === 'interrupted', 'session read interrupted');
      expect(cut).toMatchObject({ id: open.id, ended: false });
      const filtered = (await (await fetch(`${collector.url}/api/v1/sessions?state=interrupted`)).json()) as {
        items: S[];
      };
      expect(filtered.items.map((x) => x.id)).toEqual([open.id]);
      // Counted once by the sweep, for the alert (PgwardenSessionsInterrupted in the chart's PrometheusRule).
      const counted = async () =>
        /^pgwarden_collector_sessions_interrupted_total 1$/m.test(
          await (await fetch(`${collector.url}/metrics`)).text(),
        );
      const countedBy = Date.now() + 15_000;
      while (!(await counted()) && Date.now() < countedBy) await new Promise((r) => setTimeout(r, 200));
      expect(await counted()).toBe(true);
      // The same from the command line.
      const listed = spawnSync(
        process.execPath,
        [bin, 'audit', 'sessions', '--collector', collector.url, '--state', 'interrupted'],
        { encoding: 'utf8' },
      );
      expect([listed.status, listed.stderr]).toEqual([0, '']);
      expect(listed.stdout).toMatch(
        new RegExp(`^\\S+Z ${open.id} .* chain=ok signature=unsigned interrupted \\(last heard \\S+Z\\)\\n$`),
      );
      const none = spawnSync(
        process.execPath,
        [bin, 'audit', 'sessions', '--collector', collector.url, '--state', 'ended'],
        {
          encoding: 'utf8',
        },
      );
      expect(none.stdout).toBe('no sessions\n');
      await c.end().catch(() => {});
    } finally {
      expect(await stopProcess(collector.child)).toBe(0);
      await store.drop();
    }
  }, 90_000);

  it('refuses to start with an unreadable or invalid --audit-signing-key: one line naming the file and why, never the key', () => {
    const shared = inject('pg');
    const dir = mkdtempSync(join(tmpdir(), 'pgw-cli-badkey-'));
    writeFileSync(join(dir, 'username'), 'app_scram\n');
    writeFileSync(join(dir, 'password'), 'scram-pw-1\n');
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ format: 'pem', type: 'pkcs8' });
    const ed = generateKeyPairSync('ed25519').publicKey.export({ format: 'pem', type: 'spki' });
    const files = { rsa: join(dir, 'rsa.key'), pub: join(dir, 'public.pem'), junk: join(dir, 'junk.key') };
    writeFileSync(files.rsa, rsa);
    writeFileSync(files.pub, ed);
    writeFileSync(files.junk, '-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END PRIVATE KEY-----\n');
    const cases: [string, string][] = [
      [join(dir, 'missing.key'), 'cannot read it (ENOENT)'],
      [files.rsa, 'the audit signing key must be Ed25519, not rsa'],
      [files.pub, 'this is a public key'],
      [files.junk, 'not a PEM (PKCS#8) private key'],
    ];
    for (const [file, reason] of cases) {
      const r = spawnSync(
        process.execPath,
        [bin, 'sidecar', '--credentials-dir', dir, '--audit', 'stdout', '--http', 'off', '--audit-signing-key', file],
        {
          env: {
            ...process.env,
            PGWARDEN_UPSTREAM: `postgres://${shared.host}:${shared.port}/app`,
            PGWARDEN_CA_FILE: shared.caFile,
          },
          encoding: 'utf8',
          timeout: 60_000,
        },
      );
      expect(r.status, r.stderr).toBe(1);
      const lines = r.stderr.trim().split('\n');
      expect(lines, r.stderr).toHaveLength(1);
      expect(JSON.parse(lines[0])).toMatchObject({
        msg: 'sidecar failed to start',
        err: expect.stringContaining(`--audit-signing-key ${file}: ${reason}`),
      });
      for (const key of [String(rsa), String(ed)]) expect(r.stderr).not.toContain(key.split('\n')[1]);
      expect(r.stderr).not.toContain('bm90IGEga2V5');
    }
  }, 120_000);

  // Before: it exited 1 in either failMode ("cannot create the audit at-risk record"), and was restarted into the
  // same failure; a pod whose native sidecar never starts runs none of its containers.
  it('starts without its at-risk record: failMode closed refuses statements (53000) and /readyz says why until the record can be made; open serves', async () => {
    const shared = inject('pg');
    const dir = mkdtempSync(join(tmpdir(), 'pgw-cli-at-risk-'));
    writeFileSync(join(dir, 'username'), 'app_scram\n');
    writeFileSync(join(dir, 'password'), 'scram-pw-1\n');
    const cases: [string, string[], string][] = [
      ['closed', ['--audit', `file:${join(dir, 'audit.jsonl')}`], join(dir, 'audit.jsonl.at-risk')],
      [
        'open',
        ['--audit', `file:${join(dir, 'open.jsonl')}`, '--audit-fail-mode', 'open'],
        join(dir, 'open.jsonl.at-risk'),
      ],
    ];
    for (const [mode, flags, record] of cases) {
      // Something in the way of the record: a directory where the file must go.
      mkdirSync(record);
      let stderr = '';
      child = spawn(process.execPath, [bin, 'sidecar', '--credentials-dir', dir, ...flags], {
        env: {
          ...process.env,
          PGWARDEN_LISTEN: '127.0.0.1:0',
          PGWARDEN_HTTP: '127.0.0.1:0',
          PGWARDEN_UPSTREAM: `postgres://${shared.host}:${shared.port}/app`,
          PGWARDEN_CA_FILE: shared.caFile,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child.stderr!.on('data', (d) => (stderr += d));
      const started = await listening(child, () => stderr);
      const readyz = async () => {
        const r = await fetch(`http://127.0.0.1:${started.http}/readyz`);
        return { status: r.status, body: await r.text() };
      };
      const ready = await readyz();
      expect(ready.status, mode).toBe(503);
      expect(ready.body).toContain(`audit sink not durable: cannot create the audit at-risk record ${record} (EISDIR)`);
      const c = new pg.Client({
        host: '127.0.0.1',
        port: Number(started.listen.split(':').pop()),
        user: 'agent',
        database: 'app',
      });
      await c.connect();
      try {
        if (mode === 'closed') {
          await expect(c.query('SELECT 1 AS n')).rejects.toMatchObject({ code: '53000' });
          rmSync(record, { recursive: true });
          for (let i = 0; i < 300 && (await readyz()).status !== 200; i++) await new Promise((r) => setTimeout(r, 50));
          expect(await readyz()).toEqual({ status: 200, body: 'ready\n' });
        }
        expect((await c.query('SELECT 1 AS n')).rows).toEqual([{ n: 1 }]);
      } finally {
        await c.end().catch(() => {});
      }
      const line = stderr.split('\n').find((l) => l.includes('at-risk record cannot be created'));
      expect(JSON.parse(line!)).toMatchObject({ level: 50 }); // pino's error
      expect(line).toContain(`${record} (EISDIR)`);
      expect(stderr).not.toContain('scram-pw-1');
      child.kill('SIGKILL');
    }
  }, 120_000);
});
