import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { allowAllHooks } from '../proxy/allow-all-hooks.js';
import { type SidecarLogger, startSidecar } from '../start-sidecar.js';
import { memorySink, startFixture } from '../testing/sidecar-fixture.js';

const get = async (port: number, path: string) => {
  const r = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: r.status, body: await r.text() };
};

/** A sidecar whose upstream (port 1) refuses every connection, so it is never ready. */
const unreachableUpstream = (http: { host: string; port: number }, logger?: SidecarLogger) =>
  startSidecar({
    listen: { host: '127.0.0.1', port: 0 },
    upstream: { host: '127.0.0.1', port: 1, database: 'app', sslmode: 'disable' },
    credentials: { username: 'u', password: 'secret-pw' },
    audit: memorySink(),
    http,
    logger,
  });

describe('admin HTTP', () => {
  it('is ready when the upstream is reachable and the policy loaded, and counts sessions and bytes', async () => {
    let policyLoaded = false;
    const fx = await startFixture({
      http: { host: '127.0.0.1', port: 0 },
      hooks: { ...allowAllHooks(), ready: () => policyLoaded },
    });
    const port = fx.sidecar.httpPort!;
    expect(await get(port, '/healthz')).toEqual({ status: 200, body: 'ok\n' });
    expect(await get(port, '/readyz')).toEqual({ status: 503, body: 'not ready: policy not loaded\n' });
    policyLoaded = true;
    expect(await get(port, '/readyz')).toEqual({ status: 200, body: 'ready\n' });
    const c = await fx.client();
    await c.query('SELECT 1');
    const m = (await get(port, '/metrics')).body;
    expect(m).toMatch(/^pgwarden_sessions_active 1$/m);
    expect(m).toMatch(/^pgwarden_sessions_total 1$/m);
    expect(m).toMatch(/^pgwarden_statements_total\{action="allow",outcome="ok"\} 1$/m);
    expect(Number(/^pgwarden_bytes_total\{direction="upstream_to_client"\} (\d+)$/m.exec(m)?.[1])).toBeGreaterThan(0);
    expect(m).toMatch(/^pgwarden_process_resident_memory_bytes \d+/m);
    expect((await get(port, '/nope')).status).toBe(404);
    await c.end();
    await fx.sidecar.close(500);
  });

  it('is not ready while its credentials cannot be read, and tells the client nothing of where they are kept', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgwarden-creds-'));
    writeFileSync(join(dir, 'username'), 'app_scram\n');
    const fx = await startFixture({ http: { host: '127.0.0.1', port: 0 }, credentials: { dir } });
    try {
      const r = await get(fx.sidecar.httpPort!, '/readyz');
      expect(r.status).toBe(503);
      expect(r.body).toMatch(
        /credentials unreadable: credentials directory .* must hold files "username" and "password"/,
      );
      const err = await fx.client().catch((e) => e);
      expect(err.message).toBe('pgwarden cannot read its database credentials; see the sidecar log');
      expect(err.message).not.toContain(dir);
      // The mounted Secret arrives: ready, and logins work.
      writeFileSync(join(dir, 'password'), 'scram-pw-1\n');
      expect((await get(fx.sidecar.httpPort!, '/readyz')).status).toBe(200);
      const c = await fx.client();
      expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
      await c.end();
    } finally {
      await fx.sidecar.close(500);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('is not ready when the upstream is unreachable, and counts the failed connects', async () => {
    const sidecar = await unreachableUpstream({ host: '127.0.0.1', port: 0 });
    const r = await get(sidecar.httpPort!, '/readyz');
    expect(r.status).toBe(503);
    expect(r.body).toMatch(/upstream unreachable: could not connect to upstream 127\.0\.0\.1:1/);
    const pg = (await import('pg')).default;
    const c = new pg.Client({ host: '127.0.0.1', port: sidecar.port, user: 'a', database: 'app' });
    await c.connect().catch(() => {});
    const m = (await get(sidecar.httpPort!, '/metrics')).body;
    expect(m).toMatch(/^pgwarden_upstream_errors_total\{code="PGW_UPSTREAM_CONNECT"\} 1$/m);
    expect(m).not.toContain('secret-pw');
    await sidecar.close(100);
  });

  it('tells the reasons for not being ready to local callers only, and logs them when they change', async () => {
    const lan = Object.values(networkInterfaces())
      .flat()
      .find((a) => a && a.family === 'IPv4' && !a.internal)?.address;
    // Every machine this runs on (a VM, CI) has a non-loopback interface; without one there is nothing to compare.
    expect(lan, 'a non-loopback IPv4 address').toBeDefined();
    const logged: { obj: object; msg?: string }[] = [];
    const log = {
      info() {},
      error() {},
      debug() {},
      warn: (obj: object, msg?: string) => void logged.push({ obj, msg }),
    };
    const sidecar = await unreachableUpstream({ host: '0.0.0.0', port: 0 }, log);
    try {
      const local = await get(sidecar.httpPort!, '/readyz');
      expect(local.body).toMatch(/upstream unreachable: could not connect to upstream 127\.0\.0\.1:1/);
      const r = await fetch(`http://${lan}:${sidecar.httpPort}/readyz`);
      expect(r.status).toBe(503);
      const body = await r.text();
      expect(body).toBe('not ready (1 check failing; the reasons are shown on 127.0.0.1 and in the log)\n');
      expect(body).not.toContain('127.0.0.1:1');
      await get(sidecar.httpPort!, '/readyz');
      // Logged once, when the answer first became "not ready".
      expect(logged.filter((l) => l.msg === 'not ready')).toHaveLength(1);
      expect(JSON.stringify(logged[0].obj)).toContain('upstream unreachable');
    } finally {
      await sidecar.close(100);
    }
  });

  it('fails to start, with nothing listening on the proxy port, when its admin port is taken', async () => {
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const adminPort = (taken.address() as { port: number }).port;
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const proxyPort = (probe.address() as { port: number }).port;
    await new Promise((r) => probe.close(r));
    try {
      const err = await startSidecar({
        listen: { host: '127.0.0.1', port: proxyPort },
        upstream: { host: '127.0.0.1', port: 1, database: 'app', sslmode: 'disable' },
        credentials: { username: 'u', password: 'secret-pw' },
        audit: memorySink(),
        http: { host: '127.0.0.1', port: adminPort },
      }).catch((e: NodeJS.ErrnoException) => e);
      expect((err as NodeJS.ErrnoException).code).toBe('EADDRINUSE');
      // The proxy port was never taken (before, it answered clients first and stayed bound after the failure).
      const again = createServer();
      await new Promise<void>((resolve, reject) => {
        again.once('error', reject);
        again.listen(proxyPort, '127.0.0.1', resolve);
      });
      await new Promise((r) => again.close(r));
    } finally {
      await new Promise((r) => taken.close(r));
    }
  });

  it('holds connections unread until serveFrom resolves, and closes them if it rejects', async () => {
    let open!: () => void;
    const gate = new Promise<void>((r) => {
      open = r;
    });
    const fx = await startFixture({ serveFrom: gate });
    const early = fx.client();
    const settled = await Promise.race([early.then(() => 'connected'), new Promise((r) => setTimeout(r, 300, 'held'))]);
    expect(settled).toBe('held');
    open();
    const c = await early;
    expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    await c.end();
    await fx.sidecar.close(500);

    let fail!: (e: Error) => void;
    const refused = new Promise<void>((_, reject) => {
      fail = reject;
    });
    refused.catch(() => undefined);
    const fy = await startFixture({ serveFrom: refused });
    const socket = connect(fy.sidecar.port, '127.0.0.1');
    const bytes: Buffer[] = [];
    socket.on('data', (b: Buffer) => bytes.push(b));
    const closed = new Promise((r) => socket.on('close', r));
    await new Promise((r) => socket.on('connect', r));
    fail(new Error('another listener could not start'));
    await closed;
    expect(Buffer.concat(bytes).length).toBe(0);
    await fy.sidecar.close(100);
  });
});
