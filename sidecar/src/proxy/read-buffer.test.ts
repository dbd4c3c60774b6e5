import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { B } from '../protocol/codes.js';
import { msg, RawClient, rowOf, tagOf } from '../testing/raw-client.js';
import { type Fixture, startFixture } from '../testing/sidecar-fixture.js';
import { allowAllHooks } from './allow-all-hooks.js';
import type { ProxyHooks, Verdict } from './hooks.js';

/**
 * The relay reads both sockets into buffers it uses again (socket-reader.ts): a read overwrites the last one unless
 * something still points into it. These tests make the sidecar keep bytes past their read (a client that does not
 * read, verdicts that arrive later) and check that every byte still arrives as sent, on the real sidecar and
 * PostgreSQL. A reuse while bytes were still queued would show up as a wrong row or a protocol error.
 */

const ALLOW: Verdict = { action: 'allow', rule: 'test', reason: 'test' };

/** Allow-all, except that a Query whose text contains `/*hold*\/` gets its verdict 20 ms later. */
function slowVerdictHooks(): ProxyHooks {
  const inner = allowAllHooks();
  return {
    ...inner,
    openSession(info) {
      const s = inner.openSession(info);
      return {
        ...s,
        checkQuery: (req) =>
          req.sql.includes('/*hold*/') ? new Promise<Verdict>((r) => setTimeout(() => r(ALLOW), 20)) : ALLOW,
      };
    },
  };
}

/** The text every row i of the tests' results carries: distinct per row, so a stale or shifted byte shows. */
const rowText = (i: number) => `row-${i}-${'abcdefghij'.repeat(1 + (i % 40))}`;
const ROWS_SQL = (n: number) =>
  `SELECT i, 'row-' || i || '-' || repeat('abcdefghij', 1 + i % 40) FROM generate_series(1, ${n}) AS i`;

// An upstream over TLS (sslmode=require) reads its decrypted records into the reused buffer the same way.
describe.each(['disable', 'require'] as const)('reused read buffers, upstream sslmode=%s', (sslmode) => {
  let fx: Fixture;
  beforeAll(async () => {
    fx = await startFixture({ hooks: slowVerdictHooks(), sslmode });
  });
  afterAll(() => fx.sidecar.close(500));

  it('reads the sockets of a session through reused buffers (the client side only with a plain upstream)', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    client.send(msg.query('SELECT 1'));
    await client.untilReady();
    const stats = fx.sidecar.readStats();
    // A write to a TLS upstream stays queued until a later tick, so the client side keeps 'data' events there.
    expect(stats).toMatchObject(
      sslmode === 'disable' ? { reusedBuffer: 2, dataEvent: 0 } : { reusedBuffer: 1, dataEvent: 1 },
    );
    expect(stats.reads).toBeGreaterThanOrEqual(sslmode === 'disable' ? 2 : 1);
    client.close();
  });

  it('a result the client reads late arrives intact, row by row', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    const before = fx.sidecar.readStats();
    const n = 20_000; // ~5 MB: more than the loopback buffers hold, so the client socket backs up
    client.socket.pause();
    client.send(msg.query(ROWS_SQL(n)));
    await new Promise((r) => setTimeout(r, 300));
    client.socket.resume();
    const messages = await client.untilReady();
    const rows = messages.filter((m) => m.type === B.DataRow).map(rowOf);
    expect(rows).toHaveLength(n);
    for (let i = 0; i < n; i++) {
      if (rows[i][0] !== String(i + 1) || rows[i][1] !== rowText(i + 1))
        expect.fail(`row ${i + 1}: ${JSON.stringify(rows[i])}`);
    }
    expect(tagOf(messages.find((m) => m.type === B.CommandComplete)!)).toBe(`SELECT ${n}`);
    // The sidecar had to give read buffers up while the client was not reading: the case under test happened.
    expect(fx.sidecar.readStats().handedOver).toBeGreaterThan(before.handedOver);
    client.close();
  });

  it('queries sent in one write, some waiting for their verdict, each reach PostgreSQL as sent', async () => {
    const { client } = await RawClient.startup(fx.sidecar.port);
    const before = fx.sidecar.readStats();
    const n = 60;
    // One write of many Query messages: a held one suspends the framer with the rest of the chunk still in the read
    // buffer, and the next reads queue behind it.
    const queries = Array.from({ length: n }, (_, i) =>
      msg.query(`SELECT ${i} AS n, '${rowText(i)}' AS t ${i % 3 === 0 ? '/*hold*/' : ''}`),
    );
    client.send(Buffer.concat(queries));
    const messages = await client.untilReady(n);
    const rows = messages.filter((m) => m.type === B.DataRow).map(rowOf);
    expect(rows).toEqual(Array.from({ length: n }, (_, i) => [String(i), rowText(i)]));
    expect(messages.filter((m) => m.type === B.ErrorResponse)).toHaveLength(0);
    // The client side reads through a reused buffer only in front of a plain upstream.
    if (sslmode === 'disable') expect(fx.sidecar.readStats().handedOver).toBeGreaterThan(before.handedOver);
    client.close();
  });

  it('many sessions at once, each with its own buffers, get their own rows', async () => {
    const clients = await Promise.all(Array.from({ length: 8 }, () => RawClient.startup(fx.sidecar.port)));
    const results = await Promise.all(
      clients.map(async ({ client }, k) => {
        const out: string[] = [];
        for (let round = 0; round < 20; round++) {
          client.send(msg.query(`SELECT '${k}-${round}-${rowText(k * 100 + round)}'`));
          const m = await client.untilReady();
          out.push(rowOf(m.find((x) => x.type === B.DataRow)!)[0]!);
        }
        return out;
      }),
    );
    results.forEach((out, k) => {
      expect(out).toEqual(Array.from({ length: 20 }, (_, round) => `${k}-${round}-${rowText(k * 100 + round)}`));
    });
    for (const { client } of clients) client.close();
  });
});
