import { describe, expect, it } from 'vitest';
import { B } from '../protocol/codes.js';
import { errorOf, msg, RawClient, types } from '../testing/raw-client.js';
import { startFixture } from '../testing/sidecar-fixture.js';
import { allowAllHooks } from './allow-all-hooks.js';

describe('failing hooks', () => {
  it('ends the session when a row plan throws (rows never pass unmasked) and survives a failing recorder', async () => {
    const base = allowAllHooks();
    const fx = await startFixture({
      hooks: {
        ...base,
        openSession: (info) => ({
          ...base.openSession(info),
          planRows: (fields) => {
            if (fields.some((f) => f.name === 'boom')) throw new Error('plan failed');
            return undefined;
          },
          statementDone: () => {
            throw new Error('recorder down');
          },
        }),
      },
    });
    const { client } = await RawClient.startup(fx.sidecar.port);
    client.send(msg.query('SELECT 1 AS fine'));
    expect(types(await client.untilReady())).toBe('T D C Z');
    client.send(msg.query("SELECT 'secret' AS boom"));
    const m = await client.until(B.ErrorResponse);
    expect(types(m)).toBe('E');
    expect([errorOf(m[0]).get('S'), errorOf(m[0]).get('C')]).toEqual(['FATAL', 'XX000']);
    await client.closed();
    await fx.sidecar.close(500);
  });
});
