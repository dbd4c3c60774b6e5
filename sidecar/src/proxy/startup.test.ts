import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { B, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE } from '../protocol/codes.js';
import { queryMessage, startupMessage } from '../protocol/frontend-messages.js';
import { startSidecar } from '../start-sidecar.js';
import { errorOf, RawClient, types } from '../testing/raw-client.js';
import { type Fixture, memorySink, ROLE, startFixture } from '../testing/sidecar-fixture.js';
import { allowAllHooks } from './allow-all-hooks.js';

function request(code: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeInt32BE(8, 0);
  b.writeInt32BE(code, 4);
  return b;
}

describe('client startup', () => {
  let fx: Fixture;
  beforeAll(async () => {
    fx = await startFixture();
  });
  afterAll(() => fx.sidecar.close(500));

  for (const [name, code] of [
    ['SSLRequest', SSL_REQUEST_CODE],
    ['GSSENCRequest', GSSENC_REQUEST_CODE],
  ] as const) {
    it(`answers ${name} with N and then accepts the StartupMessage`, async () => {
      const c = await RawClient.open(fx.sidecar.port);
      c.send(request(code));
      expect(String.fromCharCode(await c.byte())).toBe('N');
      c.send(startupMessage({ user: 'agent', database: 'app' }));
      const m = await c.until(B.ReadyForQuery);
      expect(types(m)).toMatch(/^R (S )+K Z$/);
      c.close();
    });
  }

  it('gives the client the proxy key, not the upstream one, and forwards allowed parameters', async () => {
    const { client, messages } = await RawClient.startup(fx.sidecar.port, {
      user: 'agent',
      database: 'app',
      application_name: 'startup-test',
    });
    const key = messages.find((m) => m.type === B.BackendKeyData)!;
    client.send(queryMessage("SELECT pg_backend_pid()::text || ' ' || current_setting('application_name')"));
    const rows = await client.untilReady();
    const row = rows.find((m) => m.type === B.DataRow)!;
    const [pid, app] = row.buf.toString('utf8', 11).split(' ');
    expect(app).toBe('startup-test');
    expect(key.buf.readInt32BE(5)).not.toBe(Number(pid));
    client.close();
  });

  const refusals: Array<[string, Record<string, string>, string, RegExp]> = [
    ['replication', { replication: 'database' }, '08P01', /replication connections are not allowed/],
    ['options with -c', { options: '-c role=postgres' }, '08P01', /"options" is not allowed/],
    ['options with --', { options: '--search_path=evil' }, '08P01', /"options" is not allowed/],
    ['role', { role: 'postgres' }, '28000', /changes the session identity/],
    ['session_authorization', { session_authorization: 'postgres' }, '28000', /changes the session identity/],
    // Refused by PostgreSQL, passed on as PostgreSQL words it (its SQLSTATE, not 08004, which clients retry).
    [
      'no_such_setting (PostgreSQL: unknown)',
      { no_such_setting: 'x' },
      '42704',
      /^unrecognized configuration parameter "no_such_setting"$/,
    ],
    [
      'DateStyle=Nonsense (PostgreSQL: bad value)',
      { DateStyle: 'Nonsense' },
      '22023',
      /^invalid value for parameter "DateStyle"/,
    ],
  ];
  for (const [name, extra, code, message] of refusals) {
    it(`refuses the startup parameter ${name} with FATAL ${code}`, async () => {
      const { client, messages } = await RawClient.startup(fx.sidecar.port, {
        user: 'agent',
        database: 'app',
        ...extra,
      });
      const err = errorOf(messages[messages.length - 1]);
      expect(err.get('S')).toBe('FATAL');
      expect(err.get('C')).toBe(code);
      expect(err.get('M')).toMatch(message);
      await client.closed();
    });
  }

  it('accepts replication=false and an empty options', async () => {
    const { client, messages } = await RawClient.startup(fx.sidecar.port, {
      user: 'a',
      database: 'app',
      replication: 'false',
      options: ' ',
    });
    expect(types(messages.slice(-1))).toBe('Z');
    client.close();
  });

  it('answers a newer protocol minor version and _pq_ options with NegotiateProtocolVersion', async () => {
    const c = await RawClient.open(fx.sidecar.port);
    const m = startupMessage({ user: 'agent', database: 'app', '_pq_.future': 'x' });
    m.writeInt32BE((3 << 16) | 2, 4);
    c.send(m);
    const msgs = await c.until(B.ReadyForQuery);
    expect(msgs[0].type).toBe(B.NegotiateProtocolVersion);
    expect(msgs[0].buf.readInt32BE(5)).toBe(3 << 16);
    expect(msgs[0].buf.toString('utf8', 13)).toBe('_pq_.future\0');
    c.close();
  });

  it('closes a connection that sends garbage with 08P01 while another session keeps working', async () => {
    const good = await fx.client();
    const bad = await RawClient.open(fx.sidecar.port);
    bad.send(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    const err = errorOf(await bad.next());
    expect(err.get('C')).toBe('08P01');
    await bad.closed();
    // Garbage after a valid startup, too.
    const { client: bad2 } = await RawClient.startup(fx.sidecar.port);
    bad2.send(Buffer.from([0x00, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
    const m = await bad2.until(B.ErrorResponse);
    expect(errorOf(m[m.length - 1]).get('C')).toBe('08P01');
    await bad2.closed();
    expect((await good.query('SELECT 42 AS n')).rows).toEqual([{ n: 42 }]);
    await good.end();
  });

  it('survives random messages after a valid startup (fast-check, live)', async () => {
    const fc = (await import('fast-check')).default;
    const types = [...'BCDEFHPQScdfpX?1'].map((c) => c.charCodeAt(0));
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            type: fc.constantFrom(...types),
            body: fc.uint8Array({ maxLength: 40 }),
            lie: fc.integer({ min: -3, max: 3 }),
          }),
          { minLength: 1, maxLength: 6 },
        ),
        async (msgs) => {
          const { client } = await RawClient.startup(fx.sidecar.port);
          for (const m of msgs) {
            const head = Buffer.alloc(5);
            head[0] = m.type;
            head.writeInt32BE(4 + m.body.length + m.lie, 1);
            client.send(head, Buffer.from(m.body));
          }
          // Either answers (errors, results) or a FATAL and close; never a crash. Give it a moment either way.
          await Promise.race([client.closed(), new Promise((r) => setTimeout(r, 60))]);
          client.close();
        },
      ),
      { numRuns: 40 },
    );
    const good = await fx.client();
    expect((await good.query('SELECT 1 AS alive')).rows).toEqual([{ alive: 1 }]);
    await good.end();
  });

  it('refuses a startup packet over 10000 bytes', async () => {
    const c = await RawClient.open(fx.sidecar.port);
    c.send(startupMessage({ user: 'agent', database: 'app', application_name: 'x'.repeat(10_000) }));
    const err = errorOf(await c.next());
    expect(err.get('C')).toBe('08P01');
    expect(err.get('M')).toMatch(/invalid length of startup packet/);
    await c.closed();
  });
});

describe('upstream authentication and TLS through the sidecar', () => {
  const cases = [
    { role: 'scram', sslmode: 'disable' },
    { role: 'md5', sslmode: 'disable' },
    { role: 'clear', sslmode: 'disable' },
    { role: 'tls', sslmode: 'require' },
    { role: 'tls', sslmode: 'verify-ca' },
    { role: 'tls', sslmode: 'verify-full' },
  ] as const;
  for (const { role, sslmode } of cases) {
    it(`${ROLE[role].username} over sslmode=${sslmode}`, async () => {
      const fx = await startFixture({ role, sslmode });
      const c = await fx.client();
      const r = await c.query(
        'SELECT current_user AS u, (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS ssl',
      );
      expect(r.rows).toEqual([{ u: ROLE[role].username, ssl: sslmode !== 'disable' }]);
      await c.end();
      await fx.sidecar.close(500);
    });
  }

  it('sends FATAL 08006 without secrets when the upstream is unreachable', async () => {
    const sidecar = await startSidecar({
      listen: { host: '127.0.0.1', port: 0 },
      upstream: { host: '127.0.0.1', port: 1, database: 'app', sslmode: 'disable' },
      credentials: { username: 'app_scram', password: 'very-secret-pw' },
      audit: memorySink(),
    });
    const c = new pg.Client({ host: '127.0.0.1', port: sidecar.port, user: 'agent', database: 'app' });
    const err = await c.connect().catch((e) => e);
    expect(err.code).toBe('08006');
    expect(err.severity).toBe('FATAL');
    expect(err.message).toMatch(/could not connect to upstream 127\.0\.0\.1:1/);
    expect(JSON.stringify(err)).not.toContain('very-secret-pw');
    await sidecar.close(100);
  });

  it('asks for a password when the hooks need one and refuses a wrong one', async () => {
    const base = allowAllHooks();
    const seen: string[] = [];
    const fx = await startFixture({
      hooks: {
        ...base,
        needsPassword: true,
        authenticate: async (req) => {
          seen.push(req.password ?? '');
          return req.password === 'agent-token'
            ? { ok: true, identity: { groups: [], user: 'agent' } }
            : {
                ok: false,
                code: '28P01',
                message: 'password authentication failed for user "agent"',
                reason: 'bad token',
              };
        },
      },
    });
    const c = await fx.client({ password: 'agent-token' });
    expect((await c.query('SELECT 1 AS x')).rows).toEqual([{ x: 1 }]);
    await c.end();
    const err = await fx.client({ password: 'wrong' }).catch((e) => e);
    expect(err.code).toBe('28P01');
    expect(seen).toEqual(['agent-token', 'wrong']);
    await fx.sidecar.close(500);
  });

  it('re-reads the credentials directory when the files change', async () => {
    const { mkdtempSync, writeFileSync, utimesSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const dir = mkdtempSync(join(tmpdir(), 'pgw-creds-'));
    writeFileSync(join(dir, 'username'), 'app_md5\n');
    writeFileSync(join(dir, 'password'), 'md5-pw-2\n');
    const shared = inject('pg');
    const sidecar = await startSidecar({
      listen: { host: '127.0.0.1', port: 0 },
      upstream: { host: shared.host, port: shared.port, database: 'app', sslmode: 'disable' },
      credentials: { dir },
      audit: memorySink(),
    });
    const who = async () => {
      const c = new pg.Client({ host: '127.0.0.1', port: sidecar.port, user: 'agent', database: 'app' });
      await c.connect();
      const u = (await c.query('SELECT current_user AS u')).rows[0].u;
      await c.end();
      return u;
    };
    expect(await who()).toBe('app_md5');
    writeFileSync(join(dir, 'username'), 'app_clear\n');
    writeFileSync(join(dir, 'password'), 'clear-pw-3\n');
    const later = new Date(Date.now() + 5000);
    utimesSync(join(dir, 'username'), later, later);
    expect(await who()).toBe('app_clear');
    await sidecar.close(500);
  });
});
