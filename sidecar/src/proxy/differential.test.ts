import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { B } from '../protocol/codes.js';
import { runBoth, SCRIPTS } from '../testing/differential-scripts.js';
import { errorOf, msg, RawClient, types } from '../testing/raw-client.js';
import { type Fixture, ROLE, startFixture } from '../testing/sidecar-fixture.js';
import { connectUpstream } from '../upstream/connect.js';

/**
 * Differential test: the same frontend bytes sent to PostgreSQL directly and through the sidecar (allow-all hooks)
 * must get the same backend bytes back, message for message, once startup is over (where BackendKeyData differs by
 * design). Each script (testing/differential-scripts.ts) runs in its own fresh session on both sides. What a client
 * library would paper over (an extra message, a reordered notice, a changed error field) shows here.
 */

describe('differential: PostgreSQL directly vs through the sidecar', () => {
  let fx: Fixture;
  const pg = inject('pg');
  beforeAll(async () => {
    fx = await startFixture();
  });
  afterAll(() => fx.sidecar.close(1000));

  for (const name of Object.keys(SCRIPTS)) {
    it(name, async () => {
      const upstream = { host: pg.host, port: pg.port, database: pg.database, sslmode: 'disable' as const };
      const { direct, proxied } = await runBoth(name, upstream, ROLE.scram, fx.sidecar.port);
      expect(direct.length).toBeGreaterThan(0);
      expect(proxied).toEqual(direct);
    });
  }

  it('startup: the same ParameterStatus messages in the same order, then ReadyForQuery', async () => {
    const up = await connectUpstream(
      { host: pg.host, port: pg.port, database: pg.database, sslmode: 'disable' },
      ROLE.scram,
      { application_name: 'pgwarden-differential', client_encoding: 'UTF8', DateStyle: 'ISO, MDY' },
    );
    up.socket.destroy();
    const { client, messages } = await RawClient.startup(fx.sidecar.port, {
      user: 'agent',
      database: 'app',
      application_name: 'pgwarden-differential',
      client_encoding: 'UTF8',
      DateStyle: 'ISO, MDY',
    });
    client.close();
    const shown = messages.map((m) => String.fromCharCode(m.type)).join('');
    // AuthenticationOk, the parameters, BackendKeyData (the proxy's own key, by design), ReadyForQuery.
    expect(shown).toMatch(/^RS+KZ$/);
    const params = messages
      .filter((m) => m.type === B.ParameterStatus)
      .map((m) => m.buf.subarray(5).toString('utf8').split('\0').slice(0, 2) as [string, string]);
    expect(params).toEqual(up.parameters);
    expect(params.length).toBeGreaterThanOrEqual(10);
  });

  it("Execute of a portal the proxy did not see made by Bind: PostgreSQL's own 34000, every field", async () => {
    // PostgreSQL answers 34000 for a portal that does not exist, or runs a cursor made with SQL DECLARE; the proxy
    // cannot plan masking for rows it never saw described, so it answers 34000 either way (docs/protocol.md), as the
    // server's own error for a stand-in portal: the same fields, F/L/R included, as a direct session gets. The
    // session stays in step: ReadyForQuery follows, as after any error.
    const upstream = { host: pg.host, port: pg.port, database: pg.database, sslmode: 'disable' as const };
    const direct = RawClient.fromSocket((await connectUpstream(upstream, ROLE.scram, {})).socket);
    const { client } = await RawClient.startup(fx.sidecar.port, { user: 'agent', database: 'app' });
    try {
      const seen: Map<string, string>[] = [];
      for (const c of [direct, client]) {
        c.send(msg.execute('nope', 0), msg.sync(), msg.query('SELECT 1 AS still_here'));
        const got = await c.untilReady(2);
        expect(types(got)).toBe('E Z T D C Z');
        seen.push(errorOf(got[0]));
      }
      expect(seen[0].get('M')).toBe('portal "nope" does not exist');
      expect(['F', 'L', 'R'].every((k) => seen[0].has(k))).toBe(true);
      expect([...seen[1]]).toEqual([...seen[0]]);
    } finally {
      direct.close();
      client.close();
    }
  });

  it('a Terminate while skipping to Sync after an error ends the session, as in PostgreSQL', async () => {
    const upstream = { host: pg.host, port: pg.port, database: pg.database, sslmode: 'disable' as const };
    const direct = RawClient.fromSocket((await connectUpstream(upstream, ROLE.scram, {})).socket);
    const { client: proxied } = await RawClient.startup(fx.sidecar.port, { user: 'agent', database: 'app' });
    const badDescribe = Buffer.from([0x44, 0, 0, 0, 6, 0x58, 0]);
    for (const c of [direct, proxied]) {
      c.send(badDescribe, msg.terminate());
      expect(types([await c.next()])).toBe('E');
      await c.closed();
    }
  });

  it("a notification PostgreSQL sends between a failed Query's error and its ReadyForQuery stays behind the error", async () => {
    // The proxy holds a failed Query's ErrorResponse until its ReadyForQuery (the statement's event is recorded first):
    // what PostgreSQL sends in between (here its own notification, delivered as the session goes idle) must keep its
    // place behind the error. Message types only: a self-notification carries the session's pid, which differs.
    const upstream = { host: pg.host, port: pg.port, database: pg.database, sslmode: 'disable' as const };
    const direct = RawClient.fromSocket((await connectUpstream(upstream, ROLE.scram, {})).socket);
    const { client: proxied } = await RawClient.startup(fx.sidecar.port, { user: 'agent', database: 'app' });
    const seen: string[] = [];
    try {
      for (const c of [direct, proxied]) {
        c.send(msg.query('LISTEN d_between'));
        await c.untilReady(1);
        c.send(msg.query("NOTIFY d_between, 'x'; COMMIT; SELECT 1/0"));
        seen.push(types(await c.untilReady(1)));
      }
    } finally {
      direct.close();
      proxied.close();
    }
    expect(seen[0]).toMatch(/E( A)+ Z$/);
    expect(seen[1]).toBe(seen[0]);
  });
});

describe('differential with TLS to the upstream (sslmode verify-full): the same bytes', () => {
  // TLS records cut the upstream stream at other places than TCP reads of a plain socket: the framing must not care.
  let fx: Fixture;
  const pg = inject('pg');
  beforeAll(async () => {
    fx = await startFixture({ sslmode: 'verify-full', host: 'localhost' });
  });
  afterAll(() => fx.sidecar.close(1000));

  it('the sidecar reaches PostgreSQL over TLS here', async () => {
    const c = await fx.client();
    const r = await c.query('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
    expect(r.rows).toEqual([{ ssl: true }]);
    await c.end();
  });

  for (const name of [
    'large and wide results, NULLs, binary-looking text',
    'COPY FROM STDIN (done and failed) and COPY TO STDOUT',
    'extended protocol: named statement reused, portal with row limit, Close, Describe',
    'a notice between the results of a multi-statement query, and a long statement',
  ]) {
    it(name, async () => {
      expect(SCRIPTS[name], name).toBeDefined();
      const upstream = { host: pg.host, port: pg.port, database: pg.database, sslmode: 'disable' as const };
      const { direct, proxied } = await runBoth(name, upstream, ROLE.scram, fx.sidecar.port);
      expect(direct.length).toBeGreaterThan(0);
      expect(proxied).toEqual(direct);
    });
  }
});
