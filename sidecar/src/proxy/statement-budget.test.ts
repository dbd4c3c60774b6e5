import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { B } from '../protocol/codes.js';
import { errorOf, msg, RawClient, rowOf, types } from '../testing/raw-client.js';
import { type Fixture, startFixture } from '../testing/sidecar-fixture.js';
import type { RawMessage } from '../upstream/message-reader.js';
import { allowAllHooks } from './allow-all-hooks.js';
import type { ProxyHooks, Verdict } from './hooks.js';
import { StatementBudget } from './statement-budget.js';

/**
 * Statement text read whole is counted over every session of the process: many sessions sending large statements at
 * once are refused (53200, as PostgreSQL refuses what it cannot allocate) rather than together exhaust the sidecar's
 * memory, and everything else keeps working.
 */
const big = (tag: string) => `SELECT length('${'x'.repeat(700 * 1024)}') AS ${tag}`;
const codes = (m: RawMessage[]) => m.filter((x) => x.type === B.ErrorResponse).map((x) => errorOf(x).get('C'));
const until = async (f: () => boolean) => {
  for (let i = 0; i < 200 && !f(); i++) await new Promise((r) => setTimeout(r, 10));
};

describe('process-wide budget for statement text', () => {
  let fx: Fixture;
  const budget = new StatementBudget(1024 * 1024, 0);
  beforeAll(async () => {
    fx = await startFixture({ statementBudget: budget });
  });
  afterAll(() => fx.sidecar.close(500));

  it('a large statement past the budget gets 53200 and its session goes on; others are untouched', async () => {
    const a = (await RawClient.startup(fx.sidecar.port)).client;
    const b = (await RawClient.startup(fx.sidecar.port)).client;
    try {
      // Session a is sending a 700 KiB statement: the sidecar is reading it whole.
      const q = msg.query(big('a'));
      a.send(q.subarray(0, 300 * 1024));
      await until(() => budget.held > 0);
      expect(budget.held).toBe(q.length);
      // Session b's as large one does not fit beside it: refused unread, the session goes on.
      b.send(msg.query(big('b')), msg.query('SELECT 1 AS small'));
      const refused = await b.untilReady(2);
      expect(types(refused)).toBe('E Z T D C Z');
      const e = refused.find((x) => x.type === B.ErrorResponse)!;
      expect([errorOf(e).get('S'), errorOf(e).get('C'), errorOf(e).get('M')]).toEqual([
        'ERROR',
        '53200',
        'out of memory',
      ]);
      // So is a Parse; the batch skips to its Sync as after any error.
      b.send(msg.parse('', big('b')), msg.bind('', ''), msg.execute(''), msg.sync());
      expect(codes(await b.untilReady())).toEqual(['53200']);
      // Another session's statements and a's own go on.
      const c = await fx.client();
      expect((await c.query('SELECT 2 AS two')).rows).toEqual([{ two: 2 }]);
      await c.end();
      a.send(q.subarray(300 * 1024));
      const done = await a.untilReady();
      expect(done.filter((x) => x.type === B.DataRow).map(rowOf)).toEqual([[String(700 * 1024)]]);
      // Answered: its bytes are given back, and b's statement now fits.
      expect(budget.held).toBe(0);
      b.send(msg.query(big('b')));
      expect(codes(await b.untilReady())).toEqual([]);
      expect(budget.held).toBe(0);
    } finally {
      a.close();
      b.close();
    }
  });

  it('a session that ends halfway through a statement gives its share back; small statements are never counted', async () => {
    const a = (await RawClient.startup(fx.sidecar.port)).client;
    const b = (await RawClient.startup(fx.sidecar.port)).client;
    try {
      a.send(msg.query(big('a')).subarray(0, 100 * 1024));
      await until(() => budget.held > 0);
      expect(budget.held).toBeGreaterThan(700 * 1024);
      // Under 64 KiB a statement costs no more than the session's read buffers: it runs whatever the budget holds.
      b.send(msg.query(`SELECT length('${'y'.repeat(60 * 1024)}') AS n`));
      expect(codes(await b.untilReady())).toEqual([]);
      a.close();
      await until(() => budget.held === 0);
      expect(budget.held).toBe(0);
    } finally {
      a.close();
      b.close();
    }
  });
});

describe('process-wide budget: a statement held for its verdict', () => {
  let fx: Fixture;
  const budget = new StatementBudget(1024 * 1024, 0);
  let release: (() => void) | undefined;
  const hooks: ProxyHooks = {
    ...allowAllHooks(),
    openSession() {
      return {
        ...allowAllHooks().openSession({} as never),
        // Held (as a review or a rate limit holds) until the test lets it go.
        checkQuery: () =>
          new Promise<Verdict>((resolve) => {
            release = () => resolve({ action: 'allow' });
          }),
      } as ReturnType<ProxyHooks['openSession']>;
    },
  };
  beforeAll(async () => {
    fx = await startFixture({ hooks, statementBudget: budget });
  });
  afterAll(() => fx.sidecar.close(500));

  it('keeps its share while it waits and gives it back once answered', async () => {
    const a = (await RawClient.startup(fx.sidecar.port)).client;
    try {
      const q = msg.query(big('a'));
      a.send(q);
      await until(() => release !== undefined);
      expect(budget.held).toBe(q.length);
      release!();
      expect(codes(await a.untilReady())).toEqual([]);
      expect(budget.held).toBe(0);
    } finally {
      a.close();
    }
  });
});

describe('process-wide budget: a statement that stops arriving', () => {
  let fx: Fixture;
  // A statement that has not grown for a second loses its share when another one does not fit.
  const budget = new StatementBudget(1024 * 1024, 1000);
  beforeAll(async () => {
    fx = await startFixture({ statementBudget: budget });
  });
  afterAll(() => fx.sidecar.close(500));
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it('a slow client that keeps sending keeps its share; the next statement is refused (53200)', async () => {
    const slow = (await RawClient.startup(fx.sidecar.port)).client;
    const b = (await RawClient.startup(fx.sidecar.port)).client;
    try {
      const q = msg.query(big('slow'));
      // 5 KiB every 20 ms or more: at least 2.8 s for the whole statement, far past the stall timeout, but it grows
      // all the time (a slower machine makes it slower still, and so still arriving when b asks).
      let sent = 0;
      const drip = (async () => {
        for (; sent < q.length; sent += 5 * 1024) {
          slow.send(q.subarray(sent, Math.min(q.length, sent + 5 * 1024)));
          await sleep(20);
        }
      })();
      await until(() => budget.held > 0);
      const begun = performance.now();
      while (performance.now() - begun < 1500) await sleep(20);
      expect(sent).toBeLessThan(q.length);
      b.send(msg.query(big('b')));
      expect(codes(await b.untilReady())).toEqual(['53200']);
      await drip;
      const done = await slow.untilReady();
      expect(done.filter((x) => x.type === B.DataRow).map(rowOf)).toEqual([[String(700 * 1024)]]);
      expect(budget.stallsEnded).toBe(0);
    } finally {
      slow.close();
      b.close();
    }
  });

  it('a session stalled mid-statement is ended (FATAL 08P01) when another needs the memory, which then runs', async () => {
    const a = (await RawClient.startup(fx.sidecar.port)).client;
    const b = (await RawClient.startup(fx.sidecar.port)).client;
    try {
      const q = msg.query(big('a'));
      a.send(q.subarray(0, 300 * 1024));
      await until(() => budget.held > 0);
      // Nothing more from a for longer than the stall timeout (a slower machine only makes the stall longer).
      await sleep(1500);
      b.send(msg.query(big('b')));
      const ran = await b.untilReady();
      expect(codes(ran)).toEqual([]);
      expect(ran.filter((x) => x.type === B.DataRow).map(rowOf)).toEqual([[String(700 * 1024)]]);
      const [fatal] = await a.until(B.ErrorResponse);
      const f = errorOf(fatal);
      expect([f.get('S'), f.get('C')]).toEqual(['FATAL', '08P01']);
      expect(f.get('M')).toMatch(
        /^pgwarden: terminating connection because the client stopped sending a statement: \d+ of its \d+ bytes arrived/,
      );
      await a.closed();
      expect(budget.stallsEnded).toBe(1);
      expect(budget.held).toBe(0);
      // Other sessions go on.
      const c = await fx.client();
      expect((await c.query('SELECT 3 AS three')).rows).toEqual([{ three: 3 }]);
      await c.end();
    } finally {
      a.close();
      b.close();
    }
  });
});
