import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { NAME_SCRIPTS, runScript } from '../testing/differential-scripts.js';
import { errorOf, msg, RawClient, types } from '../testing/raw-client.js';
import { type Fixture, ROLE, startFixture } from '../testing/sidecar-fixture.js';
import { connectUpstream } from '../upstream/connect.js';
import { allowAllHooks } from './allow-all-hooks.js';
import type { ProxyHooks, StatementRequest, Verdict } from './hooks.js';

// A multi-statement simple Query runs its statements in order and stops at the first error (postgres.c,
// exec_simple_query). A DEALLOCATE, CLOSE or DECLARE the proxy forgot names for when it forwarded the Query may be the
// one that failed, or behind it and never run: PostgreSQL still has those names, and so must the proxy, or the
// client's next Bind or Execute of them gets an error PostgreSQL would not give. Those that completed stay done, even
// when the implicit transaction rolls back (prepared statements are not transactional; CLOSE drops a portal at once).
// The same bytes go to PostgreSQL directly and through the sidecar, whose verdicts name each statement's kind as a
// policy's parser would (the scripts' statements are split at `;`, kinds by the first word).

const KINDS: Record<string, string> = {
  deallocate: 'deallocate',
  declare: 'cursor',
  close: 'cursor',
  fetch: 'cursor',
  begin: 'transaction',
  savepoint: 'transaction',
  rollback: 'transaction',
  commit: 'transaction',
  prepare: 'prepare',
  discard: 'discard',
};

function decide(req: StatementRequest): Verdict {
  const parts = req.sql.split(';').filter((t) => t.trim() !== '');
  const kindOf = (text: string) => KINDS[/^\s*(\w+)/.exec(text)?.[1].toLowerCase() ?? ''] ?? 'select';
  return { action: 'allow', statements: parts.map((text) => ({ text: text.trim(), kind: kindOf(text) })) };
}

const hooks: ProxyHooks = {
  ...allowAllHooks(),
  openSession() {
    return { ...allowAllHooks().openSession({} as never), checkQuery: decide, checkParse: decide };
  },
};

describe('differential: names a failing multi-statement Query did not remove stay usable, as in PostgreSQL', () => {
  let fx: Fixture;
  beforeAll(async () => {
    fx = await startFixture({ hooks });
  });
  afterAll(async () => {
    await fx?.sidecar.close(1000);
  });

  for (const [name, { steps }] of Object.entries(NAME_SCRIPTS)) {
    it(name, async () => {
      const shared = inject('pg');
      const upstream = { host: shared.host, port: shared.port, database: shared.database, sslmode: 'disable' as const };
      const direct = RawClient.fromSocket((await connectUpstream(upstream, ROLE.scram, {})).socket);
      const proxied = (await RawClient.startup(fx.sidecar.port)).client;
      try {
        const want = await runScript(direct, steps);
        const got = await runScript(proxied, steps);
        expect(want.length).toBeGreaterThan(0);
        expect(got).toEqual(want);
      } finally {
        direct.close();
        proxied.close();
      }
    });
  }
});

describe('names a completed statement of a failing Query removed stay forgotten', () => {
  let fx: Fixture;
  beforeAll(async () => {
    fx = await startFixture({ hooks });
  });
  afterAll(async () => {
    await fx?.sidecar.close(1000);
  });

  it('a name SQL PREPARE takes again after the Query is unchecked, not the old statement', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    try {
      client.send(msg.parse('a', 'SELECT 1 AS a'), msg.sync());
      expect(types(await client.untilReady())).toBe('1 Z');
      client.send(msg.query('DEALLOCATE a; SELECT 1/0; DEALLOCATE a'));
      expect(types(await client.untilReady())).toBe('C E Z');
      client.send(msg.query("PREPARE a AS SELECT 'not checked' AS a"));
      expect(types(await client.untilReady())).toBe('C Z');
      client.send(msg.bind('', 'a'), msg.execute(''), msg.sync());
      const got = await client.untilReady();
      expect(types(got)).toBe('2 E Z');
      expect(errorOf(got[1]).get('C')).toBe('42501');
      expect(errorOf(got[1]).get('M')).toMatch(/did not check/);
    } finally {
      client.close();
    }
  });
});
