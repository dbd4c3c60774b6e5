import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorOf, msg, RawClient, types } from '../testing/raw-client.js';
import { type Fixture, startFixture } from '../testing/sidecar-fixture.js';
import { allowAllHooks } from './allow-all-hooks.js';
import type { ProxyHooks, StatementRequest, Verdict } from './hooks.js';

// After an error in the extended protocol PostgreSQL skips the client's messages up to its next Sync, also those the
// client sends only after it saw the error. The proxy must skip them too: a Parse it applied that never ran upstream
// left it judging the unnamed statement by other SQL than PostgreSQL runs. Real PostgreSQL, the real proxy.
const SERIES = 'SELECT generate_series(1, 10)';
const decide = (req: StatementRequest): Verdict | Promise<Verdict> => {
  if (req.sql === SERIES) return { action: 'allow', maxRows: 2 };
  if (req.sql.includes('slow')) return new Promise((r) => setTimeout(() => r({ action: 'allow' }), 100));
  return { action: 'allow' };
};
const hooks: ProxyHooks = {
  ...allowAllHooks(),
  openSession(info) {
    return { ...allowAllHooks().openSession(info), checkParse: decide, checkQuery: decide };
  },
};
/** A Flush with a body: PostgreSQL's 08P01 "invalid message format", then a skip to Sync. */
const BAD_FLUSH = Buffer.from([0x48, 0, 0, 0, 5, 0x41]);

describe('messages PostgreSQL skips after an error are skipped by the proxy too', () => {
  let fx: Fixture;
  beforeAll(async () => {
    fx = await startFixture({ hooks });
  });
  afterAll(() => fx.sidecar.close(500));

  const cases: [string, Buffer[], string][] = [
    ['a failed Bind', [msg.bind('p', 'nonexistent'), msg.flush()], '26000'],
    ['a malformed Flush', [BAD_FLUSH], '08P01'],
  ];
  for (const [what, failing, code] of cases)
    it(`${what}, then a Parse sent after the error: the unnamed statement stays the one PostgreSQL has`, async () => {
      const { client } = await RawClient.startup(fx.sidecar.port);
      try {
        client.send(msg.parse('', SERIES), msg.sync());
        expect(types(await client.untilReady())).toBe('1 Z');
        client.send(...failing);
        const err = await client.until(0x45);
        expect(errorOf(err.at(-1)!).get('C')).toBe(code);
        // Skipped upstream: no ParseComplete.
        client.send(msg.parse('', 'SELECT 1'), msg.sync());
        expect(types(await client.untilReady())).toBe('Z');
        // PostgreSQL runs the series under its own verdict (maxRows 2), not that of the skipped Parse.
        client.send(msg.bind('', ''), msg.execute(''), msg.sync());
        const got = await client.untilReady();
        expect(types(got)).toBe('2 D D E Z');
        expect(errorOf(got[3]).get('C')).toBe('54000');
      } finally {
        client.close();
      }
    });

  it('a Parse whose verdict was pending when an earlier message failed is skipped too', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    try {
      client.send(msg.parse('', SERIES), msg.sync());
      expect(types(await client.untilReady())).toBe('1 Z');
      client.send(msg.bind('p', 'nonexistent'), msg.flush(), msg.parse('', 'SELECT 1 /* slow */'), msg.sync());
      expect(types(await client.untilReady())).toBe('E Z');
      client.send(msg.bind('', ''), msg.execute(''), msg.sync());
      const got = await client.untilReady();
      expect(types(got)).toBe('2 D D E Z');
      expect(errorOf(got[3]).get('C')).toBe('54000');
      // The session goes on normally.
      client.send(msg.parse('', 'SELECT 1 /* slow */'), msg.bind('', ''), msg.execute(''), msg.sync());
      expect(types(await client.untilReady())).toBe('1 2 D C Z');
    } finally {
      client.close();
    }
  });
});
