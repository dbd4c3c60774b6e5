import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { B } from '../protocol/codes.js';
import { msg, RawClient, rowOf, types } from '../testing/raw-client.js';
import { type Fixture, startFixture } from '../testing/sidecar-fixture.js';
import { allowAllHooks } from './allow-all-hooks.js';
import type { ProxyHooks, StatementRecord, StatementRequest, Verdict } from './hooks.js';

// A row-capped Execute (Verdict.maxRows) followed by more messages of its batch: the proxy cannot cancel without
// hitting them, so PostgreSQL runs them. The proxy used to treat them as skipped: a guarded UPDATE behind the cap
// changed every row unchecked and unaudited, and a Bind behind it was taken back here while it existed upstream.
const decide = (req: StatementRequest): Verdict =>
  req.sql.includes('generate_series(1, 10)')
    ? { action: 'allow', maxRows: 2 }
    : req.sql.startsWith('COPY (')
      ? { action: 'allow', maxRows: 1 }
      : req.sql.startsWith('UPDATE')
        ? { action: 'allow', maxAffected: 1 }
        : { action: 'allow' };
const records: StatementRecord[] = [];
const hooks: ProxyHooks = {
  ...allowAllHooks(),
  openSession(info) {
    return {
      ...allowAllHooks().openSession(info),
      checkParse: decide,
      checkQuery: decide,
      statementDone: (r: StatementRecord) => void records.push(r),
    };
  },
};

describe('a row-capped Execute with more of its batch behind it', () => {
  let fx: Fixture;
  beforeAll(async () => {
    fx = await startFixture({ hooks });
  });
  afterAll(() => fx.sidecar.close(500));

  it('a guarded write behind it is still counted: over its cap it is rolled back, and it is audited', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    const t = `capped_t_${process.pid}`;
    client.send(msg.query(`CREATE TABLE ${t} (n int); INSERT INTO ${t} SELECT generate_series(1, 5)`));
    await client.untilReady();
    client.send(
      msg.parse('', 'SELECT generate_series(1, 10)'),
      msg.bind('', ''),
      msg.execute(''),
      msg.parse('u', `UPDATE ${t} SET n = n + 100`),
      msg.bind('', 'u'),
      msg.execute(''),
      msg.sync(),
    );
    const m = await client.untilReady();
    expect(types(m)).toBe('1 2 D D E Z');
    client.send(msg.query(`SELECT count(*) FROM ${t} WHERE n > 100`));
    const r = await client.untilReady();
    expect(rowOf(r.find((x) => x.type === B.DataRow)!)).toEqual(['0']);
    const update = records.find((x) => x.request.sql.startsWith('UPDATE'));
    expect(update?.results[0]?.error?.code).toBe('54000');
    client.send(msg.query(`DROP TABLE ${t}`));
    await client.untilReady();
    client.close();
  });

  it('a Bind behind it exists upstream, and the next Execute of that portal keeps its own verdict', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    client.send(
      msg.query('BEGIN'),
      msg.parse('plain', 'SELECT 1'),
      msg.parse('series', 'SELECT generate_series(1, 10)'),
      msg.sync(),
    );
    await client.untilReady(2);
    client.send(msg.bind('c', 'series'), msg.execute('c'), msg.bind('', 'series'), msg.sync());
    const capped = await client.untilReady();
    expect(types(capped)).toBe('2 D D E Z');
    client.send(msg.execute(''), msg.sync());
    const next = await client.untilReady();
    // The unnamed portal is the series statement's: at most 2 rows, then the limit error.
    expect(next.filter((x) => x.type === B.DataRow)).toHaveLength(2);
    expect(types(next)).toBe('D D E Z');
    client.send(msg.query('ROLLBACK'));
    await client.untilReady();
    client.close();
  });

  it('a COPY FROM STDIN behind it is ended by the proxy (the client sends no data), not left waiting', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    const t = `capped_c_${process.pid}`;
    client.send(msg.query(`CREATE TABLE ${t} (n int)`));
    await client.untilReady();
    client.send(
      msg.parse('', 'SELECT generate_series(1, 10)'),
      msg.bind('', ''),
      msg.execute(''),
      msg.parse('', `COPY ${t} FROM STDIN`),
      msg.bind('', ''),
      msg.execute(''),
      msg.sync(),
    );
    expect(types(await client.untilReady())).toBe('1 2 D D E Z');
    client.send(msg.query(`SELECT count(*) FROM ${t}`));
    expect(rowOf((await client.untilReady()).find((x) => x.type === B.DataRow)!)).toEqual(['0']);
    client.send(msg.query(`DROP TABLE ${t}`));
    await client.untilReady();
    client.close();
  });

  it('rows of a statement behind it that nothing inspects are hidden too (the framer passed them uncounted)', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    client.send(
      msg.parse('', 'SELECT generate_series(1, 10)'),
      msg.bind('', ''),
      msg.execute(''),
      msg.parse('', "SELECT 'hidden-' || g FROM generate_series(1, 3) g"),
      msg.bind('', ''),
      msg.execute(''),
      msg.sync(),
    );
    expect(types(await client.untilReady())).toBe('1 2 D D E Z');
    client.close();
  });

  it("a COPY TO behind it does not get the CopyData it held at its own limit through (HEADER's line)", async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    client.send(
      msg.parse('', 'SELECT generate_series(1, 10)'),
      msg.bind('', ''),
      msg.execute(''),
      msg.parse('', "COPY (SELECT 'hidden') TO STDOUT (FORMAT csv, HEADER)"),
      msg.bind('', ''),
      msg.execute(''),
      msg.sync(),
    );
    expect(types(await client.untilReady())).toBe('1 2 D D E Z');
    client.close();
  });

  it('capped, and finished before its cancel landed: what the client sends before its Sync does not run', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    const t = `capped_f_${process.pid}`;
    client.send(msg.query(`CREATE TABLE ${t} (n int)`));
    await client.untilReady();
    records.length = 0;
    // The Flush makes PostgreSQL send the whole result at once: the statement is over before the proxy's cancel,
    // which the idle backend ignores, so the batch goes on upstream although the client was told of an error.
    client.send(msg.parse('', 'SELECT generate_series(1, 10)'), msg.bind('', ''), msg.execute(''), msg.flush());
    expect(types(await client.until(B.ErrorResponse))).toBe('1 2 D D E');
    await new Promise((r) => setTimeout(r, 100));
    client.send(msg.parse('', `INSERT INTO ${t} VALUES (1)`), msg.bind('', ''), msg.execute(''), msg.sync());
    expect(types(await client.untilReady())).toBe('Z');
    client.send(msg.query(`SELECT count(*) FROM ${t}`));
    expect(rowOf((await client.untilReady()).find((x) => x.type === B.DataRow)!)).toEqual(['0']);
    expect(records.filter((x) => x.request.sql.startsWith('INSERT'))).toEqual([]);
    client.send(msg.query(`DROP TABLE ${t}`));
    await client.untilReady();
    client.close();
  });
});
