import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { B } from '../protocol/codes.js';
import { closeMessage, parseMessage } from '../protocol/frontend-messages.js';
import { errorOf, RawClient } from '../testing/raw-client.js';
import { type Fixture, startFixture } from '../testing/sidecar-fixture.js';
import { MAX_PREPARED_BYTES } from './client-relay.js';

const SYNC = Buffer.from([0x53, 0, 0, 0, 4]);

describe('named prepared statements a session may hold', () => {
  let fx: Fixture;
  beforeAll(async () => {
    // The process-wide bound (retained-budget.test.ts) well above one session's, which is what this tests.
    fx = await startFixture({ maxRetainedStatementBytes: 4 * MAX_PREPARED_BYTES });
  });
  afterAll(() => fx.sidecar.close(500));

  it('refuses a Parse past the budget with 54000; Close frees it; the unnamed statement and other sessions go on', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    // Each statement's text is kept by the sidecar while it exists: 1 MiB each, well past the budget.
    const mib = 1024 * 1024;
    const n = MAX_PREPARED_BYTES / mib + 4;
    const codes: (string | undefined)[] = [];
    for (let i = 0; i < n; i++) {
      client.send(parseMessage(`s${i}`, `SELECT 1 /* ${String(i).padEnd(mib, 'x')} */`), SYNC);
      const m = await client.untilReady();
      const e = m.find((x) => x.type === B.ErrorResponse);
      codes.push(e === undefined ? undefined : errorOf(e).get('C'));
    }
    expect(codes.slice(0, MAX_PREPARED_BYTES / mib - 1)).toEqual(
      new Array(MAX_PREPARED_BYTES / mib - 1).fill(undefined),
    );
    expect(codes.at(-1)).toBe('54000');
    // The unnamed statement replaces itself: never refused by the session's limit.
    client.send(parseMessage('', `SELECT 2 /* ${''.padEnd(mib, 'y')} */`), SYNC);
    expect((await client.untilReady()).some((x) => x.type === B.ErrorResponse)).toBe(false);
    // Closing one makes room again.
    client.send(closeMessage('S', 's0'), SYNC);
    await client.untilReady();
    client.send(parseMessage('again', 'SELECT 3'), SYNC);
    expect((await client.untilReady()).some((x) => x.type === B.ErrorResponse)).toBe(false);
    const other = await fx.client();
    expect((await other.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    client.close();
  });
});
