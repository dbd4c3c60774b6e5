import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  DYNAMIC_NAME_SCRIPTS,
  NAME_SCRIPTS,
  PIPELINED_NAME_SCRIPTS,
  PROCEDURAL_NAME_SCRIPTS,
  runScript,
  type Step,
} from '../testing/differential-scripts.js';
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
  do: 'do',
  call: 'call',
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

/** Runs `steps` on a direct session and through the sidecar; every answer must be PostgreSQL's. */
async function expectSameAsDirect(fx: Fixture, steps: Step[]): Promise<void> {
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
}

describe('differential: names a failing multi-statement Query did not remove stay usable, as in PostgreSQL', () => {
  let fx: Fixture;
  beforeAll(async () => {
    fx = await startFixture({ hooks });
  });
  afterAll(async () => {
    await fx?.sidecar.close(1000);
  });

  for (const [name, { steps }] of Object.entries({
    ...NAME_SCRIPTS,
    ...PROCEDURAL_NAME_SCRIPTS,
    ...PIPELINED_NAME_SCRIPTS,
    ...DYNAMIC_NAME_SCRIPTS,
  }))
    it(name, () => expectSameAsDirect(fx, steps));
});

describe('the same without statement kinds (no policy): the proxy splits the Query itself', () => {
  let fx: Fixture;
  beforeAll(async () => {
    fx = await startFixture();
  });
  afterAll(async () => {
    await fx?.sidecar.close(1000);
  });

  for (const [name, { steps }] of Object.entries({
    ...NAME_SCRIPTS,
    ...PROCEDURAL_NAME_SCRIPTS,
    ...DYNAMIC_NAME_SCRIPTS,
  }))
    it(name, () => expectSameAsDirect(fx, steps));
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

describe('a DO with EXECUTE that ran: PostgreSQL is asked which statements are left', () => {
  let fx: Fixture;
  beforeAll(async () => {
    fx = await startFixture({ hooks });
  });
  afterAll(async () => {
    await fx?.sidecar.close(1000);
  });

  it("one it kept runs, one it dropped gets PostgreSQL's 26000, one it PREPAREd again in its place stays unchecked", async () => {
    // EXECUTE's text may be computed ('DEALL' || 'OCATE b'): which statements it removed is not in the SQL.
    const { client } = await RawClient.startup(fx.sidecar.port);
    const run = async (...m: Buffer[]) => {
      client.send(...m);
      return client.untilReady();
    };
    try {
      const parsed = await run(
        msg.parse('a', 'SELECT 1 AS a'),
        msg.parse('b', 'SELECT 2 AS b'),
        msg.parse('c', 'SELECT 3 AS c'),
        msg.sync(),
      );
      expect(types(parsed)).toBe('1 1 1 Z');
      const sql = "DO $$BEGIN EXECUTE 'DEALL' || 'OCATE a'; DEALLOCATE c; PREPARE c AS SELECT 'not checked'; END$$";
      expect(types(await run(msg.query(`${sql}; SELECT 1/0`)))).toBe('C E Z');
      expect(types(await run(msg.bind('', 'b'), msg.execute(''), msg.sync()))).toBe('2 D C Z');
      const dropped = await run(msg.bind('', 'a'), msg.execute(''), msg.sync());
      expect(types(dropped)).toBe('E Z');
      expect(errorOf(dropped[0]).get('C')).toBe('26000');
      const unchecked = await run(msg.bind('', 'c'), msg.execute(''), msg.sync());
      expect(types(unchecked)).toBe('2 E Z');
      expect(errorOf(unchecked[1]).get('C')).toBe('42501');
    } finally {
      client.close();
    }
  });
});

describe.each([
  ['with statement kinds', true],
  ['without statement kinds', false],
])('a DEALLOCATE that PL/pgSQL ran itself, before a failure (%s)', (_label, kinds) => {
  let fx: Fixture;
  beforeAll(async () => {
    fx = await startFixture(kinds ? { hooks } : {});
  });
  afterAll(async () => {
    await fx?.sidecar.close(1000);
  });

  it('the statement is gone, and its name PREPAREd again stays unchecked', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    const run = async (...m: Buffer[]) => {
      client.send(...m);
      return client.untilReady();
    };
    try {
      expect(types(await run(msg.parse('a', 'SELECT 1 AS a'), msg.parse('b', 'SELECT 2 AS b'), msg.sync()))).toBe(
        '1 1 Z',
      );
      // The DO completes (its DEALLOCATE ran), the next statement fails: `a` is gone, `b` never named.
      expect(types(await run(msg.query('DO $$BEGIN DEALLOCATE a; END$$; SELECT 1/0')))).toBe('C E Z');
      const gone = await run(msg.bind('', 'a'), msg.execute(''), msg.sync());
      expect(types(gone)).toBe('E Z');
      expect(errorOf(gone[0]).get('C')).toBe('26000');
      expect(types(await run(msg.query("PREPARE a AS SELECT 'not checked' AS a")))).toBe('C Z');
      const unchecked = await run(msg.bind('', 'a'), msg.execute(''), msg.sync());
      expect(types(unchecked)).toBe('2 E Z');
      expect(errorOf(unchecked[1]).get('C')).toBe('42501');
      expect(types(await run(msg.bind('', 'b'), msg.execute(''), msg.sync()))).toBe('2 D C Z');
    } finally {
      client.close();
    }
  });
  it('also when the DO runs through the extended protocol and fails after its DEALLOCATE', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    const run = async (...m: Buffer[]) => {
      client.send(...m);
      return client.untilReady();
    };
    try {
      const failing = 'DO $$BEGIN DEALLOCATE a; PERFORM 1/0; END$$';
      expect(types(await run(msg.parse('a', 'SELECT 1 AS a'), msg.parse('x', failing), msg.sync()))).toBe('1 1 Z');
      const failed = await run(msg.bind('', 'x'), msg.execute(''), msg.sync());
      expect(types(failed)).toBe('2 E Z');
      expect(errorOf(failed[1]).get('C')).toBe('22012');
      expect(types(await run(msg.query("PREPARE a AS SELECT 'not checked' AS a")))).toBe('C Z');
      const unchecked = await run(msg.bind('', 'a'), msg.execute(''), msg.sync());
      expect(types(unchecked)).toBe('2 E Z');
      expect(errorOf(unchecked[1]).get('C')).toBe('42501');
    } finally {
      client.close();
    }
  });
});

describe.each([
  ['with statement kinds', true],
  ['without statement kinds', false],
])('names behind a statement whose error the client got from the proxy (%s)', (_label, kinds) => {
  // A statement marked `/* capped */` returns at most one row (Verdict.maxRows): past it the client gets 54000 and
  // nothing more of its Query, but PostgreSQL runs the Query on to its end or its first error. A second Query sent in
  // the same write keeps the proxy from cancelling (a cancel could hit it), so the capped statement always completes.
  // Which names are gone is what ran upstream, though the client saw none of it.
  const check = (req: StatementRequest): Verdict => {
    const v: Verdict = kinds ? decide(req) : { action: 'allow' };
    if (req.sql.includes('/* guarded */')) return { ...v, maxAffected: 1 };
    return req.sql.includes('/* capped */') ? { ...v, maxRows: 1 } : v;
  };
  const capHooks: ProxyHooks = {
    ...allowAllHooks(),
    openSession() {
      return { ...allowAllHooks().openSession({} as never), checkQuery: check, checkParse: check };
    },
  };
  const CAPPED = 'SELECT g /* capped */ FROM generate_series(1, 3) g';
  let fx: Fixture;
  let client: RawClient;
  beforeAll(async () => {
    fx = await startFixture({ hooks: capHooks });
  });
  afterAll(async () => {
    await fx?.sidecar.close(1000);
  });
  const run = async (...m: Buffer[]) => {
    client.send(...m);
    return client.untilReady();
  };
  const cappedQuery = async (sql: string) => {
    client.send(msg.query(sql), msg.query('SELECT 1'));
    const got = await client.untilReady(2);
    expect(types(got)).toBe('T D E Z T D C Z');
    expect(errorOf(got[2]).get('C')).toBe('54000');
  };

  it('a DEALLOCATE behind the error that stopped the Query never ran: the statement still binds and runs', async () => {
    client = (await RawClient.startup(fx.sidecar.port)).client;
    try {
      expect(types(await run(msg.parse('a', 'SELECT 1 AS a'), msg.sync()))).toBe('1 Z');
      await cappedQuery(`${CAPPED}; SELECT 1/0; DEALLOCATE a`);
      expect(types(await run(msg.bind('', 'a'), msg.execute(''), msg.sync()))).toBe('2 D C Z');
    } finally {
      client.close();
    }
  });

  it("one that ran behind the capped statement is gone: PostgreSQL's 26000, and its name PREPAREd again is unchecked", async () => {
    client = (await RawClient.startup(fx.sidecar.port)).client;
    try {
      expect(types(await run(msg.parse('a', 'SELECT 1 AS a'), msg.sync()))).toBe('1 Z');
      await cappedQuery(`${CAPPED}; DEALLOCATE a; SELECT 1/0`);
      const gone = await run(msg.bind('', 'a'), msg.execute(''), msg.sync());
      expect(types(gone)).toBe('E Z');
      expect(errorOf(gone[0]).get('C')).toBe('26000');
      expect(types(await run(msg.query("PREPARE a AS SELECT 'not checked' AS a")))).toBe('C Z');
      const unchecked = await run(msg.bind('', 'a'), msg.execute(''), msg.sync());
      expect(types(unchecked)).toBe('2 E Z');
      expect(errorOf(unchecked[1]).get('C')).toBe('42501');
    } finally {
      client.close();
    }
  });
  it('behind a guarded write over its cap (rolled back by the proxy), as behind a capped read', async () => {
    client = (await RawClient.startup(fx.sidecar.port)).client;
    try {
      expect(types(await run(msg.parse('a', 'SELECT 1 AS a'), msg.parse('b', 'SELECT 2 AS b'), msg.sync()))).toBe(
        '1 1 Z',
      );
      expect(types(await run(msg.query('CREATE TEMP TABLE guarded_t AS SELECT g FROM generate_series(1, 2) g')))).toBe(
        'C Z',
      );
      // The UPDATE changes two rows, one more than its cap: the client gets 54000, and PostgreSQL runs on.
      const got = await run(
        msg.query('UPDATE guarded_t SET g = g /* guarded */; DEALLOCATE b; SELECT 1/0; DEALLOCATE a'),
      );
      expect(types(got)).toBe('E Z');
      expect(errorOf(got[0]).get('C')).toBe('54000');
      expect(types(await run(msg.bind('', 'a'), msg.execute(''), msg.sync()))).toBe('2 D C Z');
      const gone = await run(msg.bind('', 'b'), msg.execute(''), msg.sync());
      expect(types(gone)).toBe('E Z');
      expect(errorOf(gone[0]).get('C')).toBe('26000');
    } finally {
      client.close();
    }
  });
});
