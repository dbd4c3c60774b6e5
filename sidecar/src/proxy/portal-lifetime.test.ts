import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { B } from '../protocol/codes.js';
import { errorOf, msg, RawClient, rowOf, types } from '../testing/raw-client.js';
import { type Fixture, startFixture } from '../testing/sidecar-fixture.js';
import type { RawMessage } from '../upstream/message-reader.js';
import { MAX_PORTALS } from './relay-state.js';
import { RetainedBudget } from './retained-budget.js';

/**
 * PostgreSQL drops every portal a Bind made when its transaction ends (only SQL cursors WITH HOLD outlive it). The
 * proxy forgets them then too: its map of portals cannot grow without end, and a name PostgreSQL dropped cannot
 * keep a verdict. An Execute of such a portal gets PostgreSQL's own 34000 (the proxy's stand-in portal's, every field
 * the server's), so what tells is the process-wide count of what sessions keep (retained-budget.ts): a portal the
 * proxy still tracks is counted there.
 */
const errors = (m: RawMessage[]) => m.filter((x) => x.type === B.ErrorResponse).map((x) => errorOf(x));

describe('portals end with their transaction, in the proxy too', () => {
  let fx: Fixture;
  let c: RawClient;
  const budget = new RetainedBudget(64 * 1024 * 1024);
  const run = async (...m: Buffer[]) => {
    c.send(...m);
    return c.untilReady();
  };
  beforeAll(async () => {
    fx = await startFixture({ retainedBudget: budget });
    c = (await RawClient.startup(fx.sidecar.port)).client;
  });
  afterAll(async () => {
    c.close();
    await fx.sidecar.close(500);
  });

  it('an idle ReadyForQuery forgets the portals bound before it, not those pipelined behind its Sync', async () => {
    await run(msg.parse('s', 'SELECT 7 AS seven'), msg.sync());
    const statementOnly = budget.held;
    c.send(msg.bind('gone', 's'), msg.flush());
    expect((await c.next()).type).toBe(B.BindComplete);
    expect(budget.held).toBeGreaterThan(statementOnly); // tracked while its transaction lasts
    await run(msg.sync());
    expect(budget.held).toBe(statementOnly);
    const gone = errors(await run(msg.execute('gone'), msg.sync()));
    expect(gone.map((e) => [e.get('C'), e.get('M')])).toEqual([['34000', 'portal "gone" does not exist']]);
    // 'kept' is bound behind a Sync whose ReadyForQuery has not come yet (the sleep runs): it lives on.
    c.send(msg.query('SELECT pg_sleep(0.3)'), msg.bind('kept', 's'), msg.flush());
    await c.until(B.ReadyForQuery);
    expect((await c.next()).type).toBe(B.BindComplete);
    const m = await run(msg.execute('kept'), msg.sync());
    expect(m.filter((x) => x.type === B.DataRow).map(rowOf)).toEqual([['7']]);
  });

  it('a COMMIT inside a Query forgets the portals of the transaction it ended; ROLLBACK TO SAVEPOINT keeps them', async () => {
    const before = budget.held;
    await run(msg.query('BEGIN'));
    await run(msg.bind('tx', 's'), msg.sync());
    await run(msg.query('SAVEPOINT x; ROLLBACK TO x'));
    // (The RowDescription answers the proxy's own Describe, which it keeps.)
    expect(types(await run(msg.execute('tx'), msg.sync()))).toBe('D C Z');
    expect(budget.held).toBeGreaterThan(before);
    await run(msg.query('COMMIT; BEGIN'));
    expect(budget.held).toBe(before);
    const gone = errors(await run(msg.execute('tx'), msg.sync()));
    expect(gone.map((e) => [e.get('C'), e.get('M')])).toEqual([['34000', 'portal "tx" does not exist']]);
    await run(msg.query('ROLLBACK'));
  });

  it(`binds ever-new names across transactions without limit; in one transaction at most ${MAX_PORTALS}`, async () => {
    // More names than the cap, each in a transaction of its own: forgotten as they end.
    for (let i = 0; i < MAX_PORTALS + 100; i += 1000) {
      const batch: Buffer[] = [];
      for (let j = i; j < i + 1000; j++) batch.push(msg.bind(`a${j}`, 's'), msg.sync());
      c.send(...batch);
      expect(errors(await c.untilReady(1000))).toEqual([]);
    }
    const late = await run(msg.bind('late', 's'), msg.execute('late'), msg.sync());
    expect(errors(late).map((e) => e.get('M'))).toEqual([]);
    expect(types(late)).toBe('2 D C Z');
    // In one transaction PostgreSQL keeps them all, and so does the proxy, up to its cap.
    await run(msg.query('BEGIN'));
    for (let i = 0; i < MAX_PORTALS + 1; i += 1000) {
      const batch: Buffer[] = [];
      for (let j = i; j < Math.min(i + 1000, MAX_PORTALS + 1); j++) batch.push(msg.bind(`b${j}`, 's'));
      c.send(...batch, msg.sync());
      expect(errors(await c.untilReady())).toEqual([]);
    }
    const over = errors(await run(msg.execute(`b${MAX_PORTALS}`), msg.sync()));
    expect(over.map((e) => [e.get('C'), e.get('M')])).toEqual([
      [
        '54000',
        `portal "b${MAX_PORTALS}" is not known to pgwarden, which tracks at most ${MAX_PORTALS} portals per session`,
      ],
    ]);
    // The transaction failed with that error; a new one starts with room again.
    await run(msg.query('ROLLBACK'));
    expect(types(await run(msg.bind('again', 's'), msg.execute('again'), msg.sync()))).toBe('2 D C Z');
    // Other portals of a session at its cap still run; the unnamed portal always has room.
    await run(msg.query('BEGIN'));
    const batch: Buffer[] = [];
    for (let j = 0; j < MAX_PORTALS; j++) batch.push(msg.bind(`c${j}`, 's'));
    c.send(...batch, msg.sync());
    await c.untilReady();
    expect(types(await run(msg.execute('c0'), msg.bind('', 's'), msg.execute(''), msg.sync()))).toBe('D C 2 D C Z');
    await run(msg.query('ROLLBACK'));
  });
});
