import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { B } from '../protocol/codes.js';
import { runScript, type Step, Z } from '../testing/differential-scripts.js';
import { errorOf, msg, RawClient, rowOf, tagOf, types } from '../testing/raw-client.js';
import { type Fixture, ROLE, startFixture } from '../testing/sidecar-fixture.js';
import { connectUpstream } from '../upstream/connect.js';
import { allowAllHooks } from './allow-all-hooks.js';
import type { ProxyHooks, StatementRequest, Verdict } from './hooks.js';

// DISCARD ALL undoes what the sidecar set up after login (SET ROLE, settings): the proxy runs its setup SQL again
// right behind it, and the client sees PostgreSQL's answer to a DISCARD ALL as if that setup were the session's
// default. Real PostgreSQL, the real proxy; verdicts carry no statement kinds here, so the proxy goes by the text.
const shared = inject('pg');
const tag = `${process.pid}_${Math.floor(Math.random() * 1e6)}`;
const role = `pgw_discard_${tag}`;
/** A role whose membership is taken away mid-session, to make the restore fail. */
const doomed = `pgw_discard_doomed_${tag}`;
const table = `pgw_discard_t_${tag}`;
/** DateStyle is reported (ParameterStatus): it shows what reaches the client while the restore runs. */
const SETTINGS = ['SET statement_timeout = 54321', "SET DateStyle = 'SQL, DMY'"];

/**
 * Hooks that set up `setRole` and SETTINGS and allow everything. `kinds`: verdicts name each statement's kind by its
 * first word, as a policy's parser would (then a failed DISCARD ALL gives the names it made the proxy forget back);
 * else they name none and the proxy goes by the text.
 */
function hooksWith(setRole: string, kinds = false): ProxyHooks {
  const kindOf = (text: string) => {
    const word = /^\s*(\w+)/.exec(text)?.[1].toLowerCase() ?? '';
    return ['discard', 'prepare', 'deallocate'].includes(word) ? word : 'select';
  };
  const decide = (req: StatementRequest): Verdict => {
    // A verdict naming a wrong kind: the proxy must not trust it into running a DISCARD ALL it did not hold for.
    if (req.sql.includes('mislabelled')) return { action: 'allow', statements: [{ text: req.sql, kind: 'select' }] };
    if (!kinds) return { action: 'allow' };
    const parts = req.sql.split(';').filter((t) => t.trim() !== '');
    return { action: 'allow', statements: parts.map((text) => ({ text, kind: kindOf(text) })) };
  };
  return {
    ...allowAllHooks(),
    openSession() {
      return {
        ...allowAllHooks().openSession({} as never),
        setupSql: () => [`SET ROLE "${setRole}"`, ...SETTINGS],
        checkQuery: decide,
        checkParse: decide,
      };
    },
  };
}

async function superuser(): Promise<pg.Client> {
  const c = new pg.Client({ host: shared.socketDir, port: shared.port, user: 'postgres', database: shared.database });
  await c.connect();
  return c;
}

const status = (m: { buf: Buffer }[]) => String.fromCharCode(m[m.length - 1].buf[5]);

describe('DISCARD ALL through the sidecar keeps the session as the sidecar set it up', () => {
  let fx: Fixture;
  let su: pg.Client;

  beforeAll(async () => {
    su = await superuser();
    await su.query(`CREATE ROLE ${role} NOLOGIN; GRANT ${role} TO app_scram`);
    await su.query(`CREATE ROLE ${doomed} NOLOGIN; GRANT ${doomed} TO app_scram`);
    await su.query(`CREATE TABLE ${table} (who text); GRANT ALL ON ${table} TO PUBLIC`);
    fx = await startFixture({ hooks: hooksWith(role) });
  });
  afterAll(async () => {
    await fx?.sidecar.close(1000);
    await su.query(`DROP TABLE IF EXISTS ${table}`);
    await su.query(`DROP ROLE IF EXISTS ${role}; DROP ROLE IF EXISTS ${doomed}`);
    await su.end();
  });

  const whoami = async (c: RawClient) => {
    c.send(msg.query("SELECT current_user, current_setting('statement_timeout'), current_setting('DateStyle')"));
    return rowOf((await c.untilReady()).find((m) => m.type === B.DataRow)!);
  };

  it('simple Query: one CommandComplete "DISCARD ALL" and ReadyForQuery; the role and settings are back', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    try {
      expect(await whoami(client)).toEqual([role, '54321ms', 'SQL, DMY']);
      client.send(msg.query('SET statement_timeout = 0'), msg.query('DISCARD ALL'));
      const got = await client.untilReady(2);
      expect(types(got)).toBe('C Z C Z');
      expect(tagOf(got[2])).toBe('DISCARD ALL');
      expect(status(got)).toBe('I');
      expect(await whoami(client)).toEqual([role, '54321ms', 'SQL, DMY']);
    } finally {
      client.close();
    }
  });

  it('extended protocol, pipelined: what follows the DISCARD ALL in the batch runs as the role', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    try {
      client.send(
        msg.parse('', 'DISCARD ALL'),
        msg.bind('', ''),
        msg.execute(''),
        msg.parse('', 'SELECT current_user'),
        msg.bind('', ''),
        msg.execute(''),
        msg.sync(),
      );
      const got = await client.untilReady();
      expect(types(got)).toBe('1 2 C 1 2 D C Z');
      expect(tagOf(got[2])).toBe('DISCARD ALL');
      expect(rowOf(got[5])).toEqual([role]);
      expect(await whoami(client)).toEqual([role, '54321ms', 'SQL, DMY']);
    } finally {
      client.close();
    }
  });

  it('node-postgres: a DISCARD ALL prepared by name keeps the role; its cached statements are gone upstream', async () => {
    const c = await fx.client();
    try {
      await c.query({ name: 'one', text: 'SELECT 1 AS n' });
      await c.query({ name: 'discard', text: 'DISCARD ALL' });
      expect((await c.query({ text: 'SELECT current_user AS u', values: [] })).rows).toEqual([{ u: role }]);
      const prepared = await c.query('SELECT count(*)::int AS n FROM pg_prepared_statements');
      expect(prepared.rows).toEqual([{ n: 0 }]);
      // node-postgres still believes "one" is prepared and sends only Bind/Execute: PostgreSQL's own 26000.
      const err = await c.query({ name: 'one', text: 'SELECT 1 AS n' }).catch((e) => e);
      expect(err.code).toBe('26000');
      expect(err.message).toBe('prepared statement "one" does not exist');
    } finally {
      await c.end();
    }
  });

  it('restores the setup as it ran at login, whatever the hooks would set up now (a reloaded policy)', async () => {
    const base = hooksWith(role);
    let sessions = 0;
    const reloading: ProxyHooks = {
      ...base,
      openSession(info) {
        const h = base.openSession(info);
        // The first session's setup; any later call (none should come for it) answers as a policy without a role.
        return { ...h, setupSql: () => (sessions++ === 0 ? h.setupSql() : []) };
      },
    };
    const side = await startFixture({ hooks: reloading });
    const { client } = await RawClient.startup(side.sidecar.port);
    try {
      client.send(msg.query('DISCARD ALL'));
      expect(types(await client.untilReady())).toBe('C Z');
      expect(await whoami(client)).toEqual([role, '54321ms', 'SQL, DMY']);
    } finally {
      client.close();
      await side.sidecar.close(1000);
    }
  });

  it('the restore failing ends the session with FATAL, and nothing pipelined behind it runs', async () => {
    const side = await startFixture({ hooks: hooksWith(doomed) });
    const { client } = await RawClient.startup(side.sidecar.port);
    try {
      expect((await whoami(client))[0]).toBe(doomed);
      await su.query(`REVOKE ${doomed} FROM app_scram`);
      client.send(msg.query('DISCARD ALL'), msg.query(`INSERT INTO ${table} VALUES (current_user)`));
      const got = await client.until(Z);
      expect(types(got)).toBe('C E');
      const f = errorOf(got[1]);
      expect(f.get('S')).toBe('FATAL');
      expect(f.get('C')).toBe('42501');
      expect(f.get('M')).toMatch(/^pgwarden could not restore the session's role and settings after DISCARD ALL: /);
      await client.closed();
      expect((await su.query(`SELECT count(*)::int AS n FROM ${table}`)).rows).toEqual([{ n: 0 }]);
    } finally {
      client.close();
      await side.sidecar.close(1000);
    }
  });

  it('a DISCARD ALL the proxy did not hold the client for (a verdict naming another kind) ends the session', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    try {
      client.send(msg.query('DISCARD ALL -- mislabelled'));
      const got = await client.until(Z);
      expect(types(got)).toBe('E');
      expect(errorOf(got[0]).get('S')).toBe('FATAL');
      expect(errorOf(got[0]).get('C')).toBe('XX000');
      await client.closed();
    } finally {
      client.close();
    }
  });
});

/**
 * The same bytes as PostgreSQL would send if the sidecar's setup were the session's own defaults: the settings are
 * given to the direct session at login (RESET returns there), the role is left out (no script shows it).
 */
const q = (sql: string): Step => ({ send: [msg.query(sql)], until: Z });
const SCRIPTS: Record<string, Step[]> = {
  'DISCARD ALL alone': [q('DISCARD ALL'), q('SHOW DateStyle')],
  'a setting the client changed is reported back to its default': [
    q('SET DateStyle TO ISO'),
    q('DISCARD ALL'),
    q('SHOW DateStyle'),
  ],
  'inside a transaction block: 25001, and the transaction is failed': [
    q('BEGIN'),
    q('DISCARD ALL'),
    q('SELECT 1'),
    q('ROLLBACK'),
  ],
  'in a multi-statement Query: 25001': [q('SELECT 1; DISCARD ALL'), q('SELECT 2')],
  'two simple Queries sent at once': [
    { send: [msg.query('DISCARD ALL'), msg.query('SHOW DateStyle')], until: Z, times: 2 },
  ],
  'extended protocol: unnamed, then a prepared statement of before is gone (26000)': [
    { send: [msg.parse('s1', 'SELECT 1'), msg.sync()] },
    { send: [msg.parse('', 'DISCARD ALL'), msg.bind('', ''), msg.describe('P', ''), msg.execute(''), msg.sync()] },
    { send: [msg.bind('p', 's1'), msg.execute('p'), msg.sync()] },
    q('SELECT count(*) FROM pg_prepared_statements'),
    { send: [msg.parse('s1', 'SELECT 2'), msg.bind('', 's1'), msg.execute(''), msg.sync()] },
  ],
  'extended protocol: after an Execute in the same batch (pipeline), and skipped after an error': [
    {
      send: [
        msg.parse('', 'SELECT 1'),
        msg.bind('', ''),
        msg.execute(''),
        msg.parse('d', 'DISCARD ALL'),
        msg.bind('', 'd'),
        msg.execute(''),
        msg.sync(),
      ],
    },
    {
      send: [
        msg.parse('', 'SELECT 1/0'),
        msg.bind('', ''),
        msg.execute(''),
        msg.bind('', 'd'),
        msg.execute(''),
        msg.sync(),
      ],
    },
    {
      send: [
        msg.bind('', 'd'),
        msg.execute(''),
        msg.parse('', 'SHOW DateStyle'),
        msg.bind('', ''),
        msg.execute(''),
        msg.sync(),
      ],
    },
  ],
  // PostgreSQL keeps the unnamed statement apart from the named ones DEALLOCATE ALL drops; only a simple Query
  // replaces it (exec_simple_query). The restore behind the DISCARD ALL must not either.
  'extended protocol: the unnamed statement survives a DISCARD ALL run from a named one': [
    { send: [msg.parse('', 'SELECT 1 AS kept'), msg.parse('d', 'DISCARD ALL'), msg.sync()] },
    { send: [msg.bind('', 'd'), msg.execute(''), msg.sync()] },
    { send: [msg.bind('', ''), msg.execute(''), msg.sync()] },
  ],
  'extended protocol: an unnamed DISCARD ALL runs again from its statement': [
    { send: [msg.parse('', 'DISCARD ALL'), msg.bind('', ''), msg.execute(''), msg.sync()] },
    { send: [msg.bind('', ''), msg.execute(''), msg.sync()] },
    {
      send: [
        msg.bind('', ''),
        msg.execute(''),
        msg.parse('', 'SHOW DateStyle'),
        msg.bind('', ''),
        msg.execute(''),
        msg.sync(),
      ],
    },
  ],
  'simple Query: the DISCARD ALL Query itself drops the unnamed statement (26000)': [
    { send: [msg.parse('', 'SELECT 1 AS gone'), msg.sync()] },
    q('DISCARD ALL'),
    { send: [msg.bind('', ''), msg.execute(''), msg.sync()] },
  ],
  'extended protocol inside a transaction block: 25001': [
    q('BEGIN'),
    { send: [msg.parse('', 'DISCARD ALL'), msg.bind('', ''), msg.execute(''), msg.sync()] },
    q('ROLLBACK'),
  ],
};

describe('differential: DISCARD ALL through the sidecar answers as PostgreSQL does', () => {
  let fx: Fixture;
  let su: pg.Client;
  const droleName = `pgw_discard_diff_${tag}`;

  beforeAll(async () => {
    su = await superuser();
    await su.query(`CREATE ROLE ${droleName} NOLOGIN; GRANT ${droleName} TO app_scram`);
    fx = await startFixture({ hooks: hooksWith(droleName, true) });
  });
  afterAll(async () => {
    await fx?.sidecar.close(1000);
    await su.query(`DROP ROLE IF EXISTS ${droleName}`);
    await su.end();
  });

  for (const [name, steps] of Object.entries(SCRIPTS)) {
    it(name, async () => {
      const upstream = { host: shared.host, port: shared.port, database: shared.database, sslmode: 'disable' as const };
      const app = { application_name: 'pgwarden-differential' };
      const up = await connectUpstream(upstream, ROLE.scram, {
        ...app,
        statement_timeout: '54321',
        DateStyle: 'SQL, DMY',
      });
      const direct = RawClient.fromSocket(up.socket);
      const proxied = (await RawClient.startup(fx.sidecar.port, { user: 'agent', database: 'app', ...app })).client;
      try {
        const want = await runScript(direct, steps);
        const got = await runScript(proxied, steps);
        expect(want.some((m) => m.startsWith('C DISCARD ALL') || m.includes('C25001'))).toBe(true);
        expect(got).toEqual(want);
      } finally {
        direct.close();
        proxied.close();
      }
    });
  }
});
