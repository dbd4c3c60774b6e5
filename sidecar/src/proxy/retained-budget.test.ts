import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dataRow } from '../protocol/backend-messages.js';
import { B } from '../protocol/codes.js';
import { errorOf, msg, RawClient, rowOf, types } from '../testing/raw-client.js';
import { type Fixture, startFixture } from '../testing/sidecar-fixture.js';
import { allowAllHooks } from './allow-all-hooks.js';
import type { ProxyHooks } from './hooks.js';
import { PREPARED_ENTRY_COST } from './retained-budget.js';

/**
 * Prepared statements' text is kept by the sidecar for as long as they exist, in one process every session shares:
 * the sum is bounded (--max-retained-statement-bytes), the session that would pass it gets 53200 for its Parse, and
 * every other session goes on. Closing, DEALLOCATE and the end of a session give the bytes back.
 */
const LIMIT = 4 * 1024 * 1024;
const STATEMENT = 600 * 1024;
const text = (i: number) => `SELECT ${i} AS n /* ${'x'.repeat(STATEMENT)} */`;

describe('process-wide budget for kept prepared statements', () => {
  let fx: Fixture;
  beforeAll(async () => {
    fx = await startFixture({ maxRetainedStatementBytes: LIMIT, http: { host: '127.0.0.1', port: 0 } });
  });
  afterAll(() => fx.sidecar.close(500));

  /** What /metrics says the sidecar keeps, and its bound. */
  const metric = async () => {
    const body = await (await fetch(`http://127.0.0.1:${fx.sidecar.httpPort}/metrics`)).text();
    const read = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(body)![1]);
    return { held: read('pgwarden_retained_statement_bytes'), limit: read('pgwarden_retained_statement_bytes_limit') };
  };
  const prepare = (c: pg.Client, name: string, i: number) => c.query({ name, text: text(i) });

  it('sessions filling the bound refuse the next Parse with 53200; the others go on; Close, DEALLOCATE and session end free it', async () => {
    const before = await metric();
    expect(before.limit).toBe(LIMIT);
    // Three sessions keep two large named statements each: ~3.6 MiB of the 4 MiB.
    const sessions: pg.Client[] = [];
    for (let s = 0; s < 3; s++) {
      const c = await fx.client();
      sessions.push(c);
      for (let k = 0; k < 2; k++)
        expect((await prepare(c, `s${s}_${k}`, s * 10 + k)).rows).toEqual([{ n: s * 10 + k }]);
    }
    const full = await metric();
    expect(full.held).toBeGreaterThan(before.held + 6 * STATEMENT);
    expect(full.held).toBeLessThanOrEqual(LIMIT);

    // A fourth session's Parse would pass the bound: refused as PostgreSQL refuses what it cannot allocate.
    const late = await fx.client();
    const err = (await prepare(late, 'late', 99).catch((e: unknown) => e)) as pg.DatabaseError;
    expect(err).toBeInstanceOf(Error);
    expect([err.severity, err.code, err.message]).toEqual(['ERROR', '53200', 'out of memory']);
    expect(err.detail).toMatch(/pgwarden keeps \d+ bytes of prepared statements/);
    // Nothing was kept for it, and that session goes on with what fits (small statements, simple queries).
    expect((await metric()).held).toBe(full.held);
    expect((await late.query({ name: 'small', text: 'SELECT 7 AS n' })).rows).toEqual([{ n: 7 }]);
    expect((await late.query('SELECT 8 AS n')).rows).toEqual([{ n: 8 }]);
    // The sessions that hold the budget run their statements as before.
    expect((await prepare(sessions[0], 's0_1', 1)).rows).toEqual([{ n: 1 }]);
    expect((await sessions[1].query('SELECT 2 AS n')).rows).toEqual([{ n: 2 }]);

    // DEALLOCATE gives one back: the refused statement now fits.
    const withSmall = (await metric()).held;
    await sessions[0].query('DEALLOCATE s0_0');
    const freed = await metric();
    expect(freed.held).toBeLessThanOrEqual(withSmall - STATEMENT);
    expect((await prepare(late, 'late', 99)).rows).toEqual([{ n: 99 }]);

    // A protocol Close does too.
    const raw = (await RawClient.startup(fx.sidecar.port)).client;
    try {
      raw.send(msg.parse('r', text(5)), msg.sync());
      const refused = await raw.untilReady();
      expect(refused.filter((m) => m.type === B.ErrorResponse).map((m) => errorOf(m).get('C'))).toEqual(['53200']);
      const held = (await metric()).held;
      await sessions[1].query('DEALLOCATE s1_0');
      raw.send(msg.parse('r', text(5)), msg.sync());
      const ok = await raw.untilReady();
      expect(ok.filter((m) => m.type === B.ErrorResponse).map((m) => errorOf(m).get('C'))).toEqual([]);
      const parsed = (await metric()).held;
      expect(parsed).toBeGreaterThan(held - STATEMENT + STATEMENT / 2);
      raw.send(msg.close('S', 'r'), msg.sync());
      await raw.untilReady();
      expect((await metric()).held).toBeLessThanOrEqual(parsed - STATEMENT);
    } finally {
      raw.close();
    }

    // DISCARD ALL drops a session's statements, and their bytes with them.
    const beforeDiscard = (await metric()).held;
    await sessions[1].query('DISCARD ALL');
    expect((await metric()).held).toBeLessThanOrEqual(beforeDiscard - STATEMENT);

    // The end of a session gives back everything it kept.
    const open = (await metric()).held;
    await sessions[2].end();
    for (let i = 0; i < 200 && (await metric()).held > open - 2 * STATEMENT; i++)
      await new Promise((r) => setTimeout(r, 10));
    expect((await metric()).held).toBeLessThanOrEqual(open - 2 * STATEMENT);
    await Promise.all([sessions[0].end(), sessions[1].end(), late.end()]);
    for (let i = 0; i < 200 && (await metric()).held !== before.held; i++) await new Promise((r) => setTimeout(r, 10));
    expect((await metric()).held).toBe(before.held);
  });
});

describe('what portals keep', () => {
  let fx: Fixture;
  const params: unknown[][] = [];
  // Bound values recorded for the audit trail (audit.captureParams): kept with the portal until it is gone.
  const hooks: ProxyHooks = {
    ...allowAllHooks(),
    openSession: (info) => ({
      ...allowAllHooks().openSession(info),
      captureParams: () => true,
      statementDone: (r) => void params.push(r.request.params ?? []),
    }),
  };
  beforeAll(async () => {
    fx = await startFixture({ hooks, statementEvents: false, maxRetainedStatementBytes: LIMIT });
  });
  afterAll(() => fx.sidecar.close(500));
  const budget = () => fx.sidecar.metrics.registry.getSingleMetric('pgwarden_retained_statement_bytes')!.get();
  const held = async () => (await budget()).values[0].value;

  it('a portal keeps its statement after Close, and its Bind values, until the transaction ends', async () => {
    const raw = (await RawClient.startup(fx.sidecar.port)).client;
    try {
      const start = await held();
      raw.send(msg.query('BEGIN'));
      await raw.untilReady();
      raw.send(msg.parse('s', text(1)), msg.bind('p', 's'), msg.close('S', 's'), msg.sync());
      expect((await raw.untilReady()).some((m) => m.type === B.ErrorResponse)).toBe(false);
      // Closed, but portal p still runs it upstream (PostgreSQL keeps a portal's query text): still counted.
      expect(await held()).toBeGreaterThan(start + STATEMENT);
      const value = 'v'.repeat(STATEMENT);
      raw.send(msg.parse('t', 'SELECT length($1) AS n'), msg.bind('q', 't', [value]), msg.sync());
      await raw.untilReady();
      expect(await held()).toBeGreaterThan(start + 2 * STATEMENT);
      // Past the budget the values are not kept (the Bind still runs): recorded without them.
      const many = Array.from({ length: 6 }, (_, i) => msg.bind(`q${i}`, 't', [value]));
      raw.send(...many, msg.execute('q5'), msg.sync());
      const ran = await raw.untilReady();
      expect(ran.some((m) => m.type === B.ErrorResponse)).toBe(false);
      expect(await held()).toBeLessThanOrEqual(LIMIT);
      expect(params.at(-1)).toEqual([expect.stringMatching(/budget for kept statements is full/)]);
      raw.send(msg.query('COMMIT'));
      await raw.untilReady();
      // The portals went with the transaction, and statement s with its last portal; t is still prepared.
      expect(await held()).toBeLessThan(start + STATEMENT / 2);
      raw.send(msg.close('S', 't'), msg.sync());
      await raw.untilReady();
      expect(await held()).toBe(start);
    } finally {
      raw.close();
    }
  });
});

describe('described columns within the bound', () => {
  // Columns a Describe returns are kept with their statement or portal, counted in the same budget: whether they fit
  // is decided before they are kept, so a wide RowDescription cannot take the budget past its bound. Rows are masked
  // all the same: the Parse's verdict needs no plan, each Execute's does (checkExecute), so a portal's rows are
  // planned again at its first Execute, which needs its columns.
  const COLUMNS = 400;
  const WIDE = `SELECT ${Array.from({ length: COLUMNS }, (_, i) => `'v${i}'::text AS c${i}_${'x'.repeat(45)}`).join(', ')}`;
  let fx: Fixture;
  const hooks: ProxyHooks = {
    ...allowAllHooks(),
    openSession: (info) => ({
      ...allowAllHooks().openSession(info),
      checkParse: () => ({ action: 'allow', rule: 'plain' }),
      checkExecute: () => ({ action: 'allow', rule: 'mask' }),
      planRows: (fields, verdict) =>
        verdict.action === 'allow' && verdict.rule === 'mask'
          ? () => dataRow(fields.map(() => '****')).subarray(5)
          : undefined,
    }),
  };
  beforeAll(async () => {
    fx = await startFixture({ hooks, statementEvents: false, maxRetainedStatementBytes: LIMIT });
  });
  afterAll(() => fx.sidecar.close(500));
  const held = async () =>
    (await fx.sidecar.metrics.registry.getSingleMetric('pgwarden_retained_statement_bytes')!.get()).values[0].value;

  it('a RowDescription that does not fit is not kept; the rows of its portal are still planned', async () => {
    const raw = (await RawClient.startup(fx.sidecar.port)).client;
    try {
      raw.send(msg.parse('w', WIDE), msg.sync());
      expect(types(await raw.untilReady())).toBe('1 Z');
      // A statement that leaves 2000 bytes of the bound: less than the wide statement's columns cost (~57 KB).
      const filler = LIMIT - (await held()) - PREPARED_ENTRY_COST - 2000;
      raw.send(msg.parse('f', `SELECT 1 /* ${'f'.repeat(filler - 15)} */`), msg.sync());
      expect(types(await raw.untilReady())).toBe('1 Z');
      const full = await held();
      expect(full).toBe(LIMIT - 2000);

      // The client gets its RowDescription whole; the sidecar keeps nothing of it.
      raw.send(msg.describe('S', 'w'), msg.sync());
      const described = await raw.untilReady();
      expect(types(described)).toBe('t T Z');
      expect(described[1].buf.readInt16BE(5)).toBe(COLUMNS);
      expect(await held()).toBe(full);

      // A portal described by the client before it runs, then run under another verdict: masked.
      raw.send(msg.query('BEGIN'));
      await raw.untilReady();
      raw.send(msg.bind('p', 'w'), msg.describe('P', 'p'), msg.sync());
      expect(types(await raw.untilReady())).toBe('2 T Z');
      expect(await held()).toBeLessThanOrEqual(LIMIT);
      raw.send(msg.execute('p', 0), msg.sync());
      const ran = await raw.untilReady();
      expect(types(ran)).toBe('D C Z');
      expect(rowOf(ran[0])).toEqual(Array(COLUMNS).fill('****'));
      // Described and run in one batch: planned from the Describe's answer, under the Execute's verdict.
      raw.send(msg.bind('q', 'w'), msg.describe('P', 'q'), msg.execute('q', 0), msg.sync());
      const batch = await raw.untilReady();
      expect(types(batch)).toBe('2 T D C Z');
      expect(rowOf(batch[2])).toEqual(Array(COLUMNS).fill('****'));
      expect(await held()).toBeLessThanOrEqual(LIMIT);
      raw.send(msg.query('COMMIT'));
      await raw.untilReady();
    } finally {
      raw.close();
    }
  });
});
