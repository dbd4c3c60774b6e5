import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { B } from '../protocol/codes.js';
import { queryMessage } from '../protocol/frontend-messages.js';
import { errorOf, RawClient, types } from '../testing/raw-client.js';
import { type Fixture, ROLE, startFixture } from '../testing/sidecar-fixture.js';

/**
 * Settings under which PostgreSQL reads statement text differently from pgwarden's analyser (unsafe-settings.ts):
 * a session never runs under them, whichever way they are set.
 */
describe('settings statements cannot be checked under', () => {
  let fx: Fixture;
  let admin: pg.Client;
  let defaultsFx: Fixture | undefined;
  const role = `unsafe_defaults_${process.pid}`;
  beforeAll(async () => {
    fx = await startFixture();
    const shared = inject('pg');
    admin = new pg.Client({ host: shared.host, port: shared.port, database: shared.database, ...userOf(ROLE.super) });
    await admin.connect();
    await admin.query(`CREATE ROLE ${role} LOGIN PASSWORD 'unsafe-pw'`);
  });
  afterAll(async () => {
    await defaultsFx?.sidecar.close(500);
    await fx.sidecar.close(500);
    await admin.query(`DROP ROLE IF EXISTS ${role}`);
    await admin.end();
  });

  for (const [name, value] of [
    ['client_encoding', 'SJIS'],
    ['client_encoding', 'big5'],
    ['client_encoding', 'GBK'],
    ['standard_conforming_strings', 'off'],
  ]) {
    it(`refuses the startup parameter ${name}=${value} with FATAL 0A000`, async () => {
      const { client, messages } = await RawClient.startup(fx.sidecar.port, {
        user: 'agent',
        database: 'app',
        [name]: value,
      });
      const err = errorOf(messages[messages.length - 1]);
      expect(err.get('S')).toBe('FATAL');
      expect(err.get('C')).toBe('0A000');
      expect(err.get('M')).toMatch(new RegExp(`${name} \\S+ is not supported through pgwarden`));
      // The client never got a working session.
      expect(messages.some((m) => m.type === B.ReadyForQuery)).toBe(false);
      await client.closed();
    });

    it(`ends the session when a statement sets ${name} to ${value}, before anything behind it reaches the client`, async () => {
      const { client } = await RawClient.startup(fx.sidecar.port, { user: 'agent', database: 'app' });
      // Pipelined with the SET: the second query's answer must never reach the client.
      client.send(queryMessage(`SET ${name} = '${value}'`), queryMessage("SELECT 'after the change'"));
      const messages = await client.until(B.ReadyForQuery);
      const err = errorOf(messages[messages.length - 1]);
      expect(types(messages)).not.toContain('D');
      expect(err.get('S')).toBe('FATAL');
      expect(err.get('C')).toBe('0A000');
      expect(err.get('M')).toMatch(/the session was ended$/);
      await client.closed();
    });
  }

  it('keeps sessions under safe values: LATIN1, UTF8, standard_conforming_strings on', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port, {
      user: 'agent',
      database: 'app',
      client_encoding: 'LATIN1',
    });
    client.send(
      queryMessage("SET client_encoding = 'WIN1252'"),
      queryMessage('SET standard_conforming_strings = on'),
      queryMessage("SET client_encoding = 'UTF8'; SELECT current_setting('client_encoding')"),
    );
    const messages = await client.untilReady(3);
    // The server reports client_encoding (S) as it changes; standard_conforming_strings was on already.
    expect(types(messages)).toBe('C S Z C Z C T D C S Z');
    const row = messages.find((m) => m.type === B.DataRow)!;
    expect(row.buf.toString('utf8', 11)).toBe('UTF8');
    client.close();
  });

  it('refuses a session whose role defaults to standard_conforming_strings off (ALTER ROLE … SET)', async () => {
    await admin.query(`ALTER ROLE ${role} SET standard_conforming_strings = off`);
    defaultsFx = await startFixture({ credentials: { username: role, password: 'unsafe-pw' } });
    const { client, messages } = await RawClient.startup(defaultsFx.sidecar.port, { user: 'agent', database: 'app' });
    const err = errorOf(messages[messages.length - 1]);
    expect(err.get('S')).toBe('FATAL');
    expect(err.get('C')).toBe('0A000');
    expect(err.get('M')).toMatch(/standard_conforming_strings off is not supported through pgwarden/);
    await client.closed();
  });
});

function userOf(r: { username: string; password: string }) {
  return { user: r.username, password: r.password };
}
