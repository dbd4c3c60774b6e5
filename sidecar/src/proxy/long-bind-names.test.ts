import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { B } from '../protocol/codes.js';
import { msg, RawClient, rowOf, types } from '../testing/raw-client.js';
import { type Fixture, startFixture } from '../testing/sidecar-fixture.js';
import { allowAllHooks } from './allow-all-hooks.js';
import type { ProxyHooks, StatementRequest, Verdict } from './hooks.js';

// PostgreSQL takes statement and portal names of any length in a Bind and keys them on their first 63 bytes
// (NAMEDATALEN - 1; the hash table's key size). A Bind whose names pass the 4 KiB the proxy waits for at its header
// is still a Bind like any other: one small enough to be shown whole (1 MiB) is collected whole, so that the reviewer
// of a statement held at each execution (and the audit trail under captureParams, by the same path) sees its values.
// Only a larger one passes as it streams, its values noted as not shown.

const reviewed: StatementRequest[] = [];

function decide(req: StatementRequest): Verdict {
  return req.sql.includes('reviewed') ? { action: 'review', rule: 'each-run' } : { action: 'allow' };
}

const hooks: ProxyHooks = {
  ...allowAllHooks(),
  openSession() {
    return {
      ...allowAllHooks().openSession({} as never),
      checkQuery: decide,
      checkParse: decide,
      // The reviewer approves at once, having seen the request (its values among it).
      checkExecute: (v: Verdict, req: StatementRequest) => {
        if (v.action !== 'review') return v;
        reviewed.push(req);
        return { action: 'allow', rule: 'approved' };
      },
    } as ReturnType<ProxyHooks['openSession']>;
  },
};

describe('a Bind whose names pass 4 KiB', () => {
  let fx: Fixture;
  let c: RawClient;
  beforeAll(async () => {
    fx = await startFixture({ hooks });
    c = (await RawClient.startup(fx.sidecar.port)).client;
  });
  afterAll(async () => {
    c?.close();
    await fx?.sidecar.close(1000);
  });

  it('is shown whole to the reviewer, split across reads or not', async () => {
    const portal = 'P'.repeat(5000);
    c.send(
      msg.parse('rv', 'SELECT $1::text AS v /* reviewed */'),
      msg.parse('pl', 'SELECT $1::text AS w /* reviewed */'),
      msg.sync(),
    );
    expect(types(await c.untilReady())).toBe('1 1 Z');
    // Split after the proxy's 4 KiB peek, inside the portal name: the header sees no names yet.
    const bind = msg.bind(portal, 'rv', ['secret value']);
    c.send(bind.subarray(0, 4200));
    await sleep(50);
    c.send(bind.subarray(4200), msg.execute(portal), msg.bind(`R${portal}`, 'pl', ['plain value']));
    c.send(msg.execute(`R${portal}`), msg.bind('short', 'pl', ['short value']), msg.execute('short'), msg.sync());
    const got = await c.untilReady();
    expect(types(got)).toBe('2 D C 2 D C 2 D C Z');
    expect(got.filter((m) => m.type === B.DataRow).map(rowOf)).toEqual([
      ['secret value'],
      ['plain value'],
      ['short value'],
    ]);
    expect(reviewed.map((r) => r.params)).toEqual([['secret value'], ['plain value'], ['short value']]);
  });

  it('over 1 MiB passes as it streams: its values are noted as not shown', async () => {
    const portal = 'Q'.repeat(5000);
    const big = 'x'.repeat(1024 * 1024);
    c.send(msg.bind(portal, 'rv', [big]), msg.execute(portal), msg.sync());
    const got = await c.untilReady();
    expect(types(got)).toBe('2 D C Z');
    expect(reviewed.at(-1)?.params).toEqual([
      `(the values are not shown: the Bind is ${5000 + 1 + 3 + 2 + 2 + 4 + big.length + 2} bytes)`,
    ]);
  });
});
