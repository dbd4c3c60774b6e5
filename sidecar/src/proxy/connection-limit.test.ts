import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { B } from '../protocol/codes.js';
import { cancelRequest, queryMessage, startupMessage } from '../protocol/frontend-messages.js';
import { errorOf, RawClient } from '../testing/raw-client.js';
import { type Fixture, startFixture } from '../testing/sidecar-fixture.js';
import { allowAllHooks } from './allow-all-hooks.js';
import type { ProxyHooks } from './hooks.js';

/** Connects and returns the error the sidecar refused with, or undefined when it let the client in. */
async function refusal(port: number, application = 'over-cap'): Promise<(Error & { code?: string }) | undefined> {
  const c = new pg.Client({ host: '127.0.0.1', port, user: 'agent', database: 'app', application_name: application });
  c.on('error', () => {});
  try {
    await c.connect();
    await c.end();
    return undefined;
  } catch (err) {
    return err as Error & { code?: string };
  }
}

describe('connection limit (--max-connections, guardrails.maxConnections)', () => {
  let fx: Fixture;
  beforeAll(async () => {
    fx = await startFixture({ maxConnections: 2 });
  });
  afterAll(() => fx.sidecar.close(500));

  it('refuses the client beyond the cap with PostgreSQL’s 53300, still takes cancel requests, and admits again after a close', async () => {
    const { client: a, messages } = await RawClient.startup(fx.sidecar.port, { user: 'agent', database: 'app' });
    const b = await fx.client();
    const over = await refusal(fx.sidecar.port);
    expect(over).toMatchObject({ code: '53300', message: 'sorry, too many clients already' });
    // A cancel request is not a connection that counts (PostgreSQL takes them when full, too).
    const key = messages.find((m) => m.type === B.BackendKeyData)!;
    a.send(queryMessage('SELECT pg_sleep(30) /* cancel-at-cap */'));
    // A cancel that arrives before the statement runs is ignored by PostgreSQL: wait (on the other session) until
    // it is active.
    for (let i = 0; i < 200; i++) {
      const r = await b.query(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%cancel-at-cap%' AND pid <> pg_backend_pid()",
      );
      if (r.rows[0].n > 0) break;
      await new Promise((res) => setTimeout(res, 25));
    }
    const canceller = await RawClient.open(fx.sidecar.port);
    canceller.send(cancelRequest(key.buf.readInt32BE(5), key.buf.readInt32BE(9)));
    await canceller.closed();
    const m = await a.untilReady();
    expect(errorOf(m.find((x) => x.type === B.ErrorResponse)!).get('C')).toBe('57014');
    // The refused client and the cancel left both sessions working and the count unchanged.
    expect((await b.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    // Another application: an identical refusal within a minute would be folded into a later event (audit-recorder.ts).
    expect((await refusal(fx.sidecar.port, 'over-cap-again'))?.code).toBe('53300');
    await b.end();
    await new Promise((r) => setTimeout(r, 100));
    expect(await refusal(fx.sidecar.port)).toBeUndefined();
    a.close();
    const metrics = await fx.sidecar.metrics.registry.metrics();
    expect(metrics).toMatch(/^pgwarden_connections_refused_total\{reason="connection_limit"\} 2$/m);
    const refused = fx.audit.events.filter((e) => e.type === 'auth.refused');
    expect(refused).toHaveLength(2);
    expect(refused[0]).toMatchObject({
      client: { address: '127.0.0.1', application: 'over-cap' },
      refusal: { reason: 'connection_limit', code: '53300', user: 'agent', database: 'app' },
    });
  });

  it('the policy’s guardrails.maxConnections applies (the stricter of it and the flag), read when each client starts', async () => {
    let max = 1;
    const base = allowAllHooks();
    const hooks: ProxyHooks & { policy(): unknown } = {
      ...base,
      needsPassword: base.needsPassword,
      policy: () => ({ policy: { name: 'capped', spec: { guardrails: { maxConnections: max } } }, hash: 'h' }),
    };
    const capped = await startFixture({ hooks, maxConnections: 5 });
    try {
      const one = await capped.client();
      expect((await refusal(capped.sidecar.port))?.code).toBe('53300');
      max = 0; // a policy reload that lifts its cap leaves the flag's 5
      const more = [await capped.client(), await capped.client(), await capped.client(), await capped.client()];
      expect((await refusal(capped.sidecar.port))?.code).toBe('53300');
      for (const c of [one, ...more]) await c.end();
    } finally {
      await capped.sidecar.close(500);
    }
  });
});

describe('authentication timeout (--authentication-timeout)', () => {
  it('ends a client that never logs in, and frees its slot of the connection cap', async () => {
    // Hooks that ask for a password, so a client can stall in the middle of logging in.
    const base = allowAllHooks();
    const hooks: ProxyHooks = { ...base, needsPassword: true };
    const fx = await startFixture({ hooks, maxConnections: 1, authenticationTimeoutMs: 300 });
    try {
      // Silent: connects and sends nothing. Ended without an audit event (nothing was said to record).
      const silent = await RawClient.open(fx.sidecar.port);
      const t0 = Date.now();
      const m = await silent.next();
      expect(m.type).toBe(B.ErrorResponse);
      expect(Object.fromEntries(errorOf(m))).toMatchObject({
        S: 'FATAL',
        C: '57014',
        M: 'canceling authentication due to timeout',
      });
      expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
      await silent.closed();
      // Stalled at the password prompt: holds the one slot until the timeout ends it.
      const stalled = await RawClient.open(fx.sidecar.port);
      stalled.send(startupMessage({ user: 'agent', database: 'app', application_name: 'stalled' }));
      expect((await stalled.next()).type).toBe(B.Authentication);
      expect((await refusal(fx.sidecar.port))?.code).toBe('53300');
      expect(errorOf(await stalled.next()).get('C')).toBe('57014');
      await stalled.closed();
      const c = new pg.Client({
        host: '127.0.0.1',
        port: fx.sidecar.port,
        user: 'agent',
        database: 'app',
        password: 'x',
      });
      await c.connect();
      expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
      await c.end();
      const refused = fx.audit.events.filter((e) => e.type === 'auth.refused').map((e: any) => e.refusal);
      expect(refused).toEqual([
        expect.objectContaining({ reason: 'connection_limit', code: '53300' }),
        expect.objectContaining({ reason: 'authentication_timeout', code: '57014' }),
      ]);
    } finally {
      await fx.sidecar.close(200);
    }
  });
});
