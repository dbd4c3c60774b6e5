/**
 * The governed sidecar when its catalog connection stops answering (a relay that black-holes it) or cannot read the
 * catalogs (its login loses SELECT on pg_proc): statements that wait for a catalog check are refused with 53000 and
 * audited, the others run, every session goes on, and decisions resume once the catalog answers again. The sidecar
 * logs in as a role of this file's own, on a database of its own, so that revoking what the catalog queries read
 * disturbs no other test.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type GovernedSidecar, startGovernedSidecar } from '../../sidecar/src/governance/index.js';
import type { SidecarLogger } from '../../sidecar/src/index.js';
import { errorOf, memoryAudit, writePolicy } from '../governance/governed-sidecar.js';
import { freePort, ROLES } from '../harness/index.js';
import { dropDatabase, freshDatabase, sharedClient } from '../harness/own-database.js';
import { StallingRelay } from '../harness/stalling-relay.js';

const DB = 'mask_catalog_outage';
const LOGIN = { user: 'pgw_catalog_outage', password: 'outage-pw-9' };
const SSN = '123-45-6789';
/** Through the sidecar with a working catalog: the relation does not exist, so PostgreSQL answers 42P01. */
const UNKNOWN_NAME = 'SELECT n.id FROM co.nosuch n';
/** The catalog connection gives up this long after a query was sent (the timeout plus its 1 s of grace). */
const QUERY_TIMEOUT_MS = 1000;

let relay: StallingRelay;
let gs: GovernedSidecar;
/** Writes the policy file: both policies, the masked one with `extraRules` (a reload changes its hash). */
let writePolicies: (extraRules?: object[]) => void;
const audit = memoryAudit();
const logs: Array<{ level: string; obj: Record<string, unknown>; msg?: string }> = [];
const clients: pg.Client[] = [];

async function superuser<T>(database: string, run: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = sharedClient(ROLES.superuser, database);
  await c.connect();
  try {
    return await run(c);
  } finally {
    await c.end();
  }
}

const policy = (name: string, port: number, spec: object = {}) => ({
  apiVersion: 'pgwarden.dev/v1alpha1',
  kind: 'DatabaseAccessPolicy',
  metadata: { name, namespace: 'agents' },
  spec: {
    database: { host: 'unused', name: DB, credentialsSecretRef: { name: 'c' } },
    authentication: { mode: 'workload' },
    role: LOGIN.user,
    listen: { port },
    defaultAction: 'deny',
    rules: [{ name: 'read', action: 'allow', statements: ['select'], tables: ['co.*'] }],
    ...spec,
  },
});

/**
 * A session of the listener of policy `masked` (column rules: every statement reading data needs a current catalog),
 * `functions` (a function list: statements resting on a name the snapshot does not know need one) or `detectors`
 * (content detectors only: nothing needs the catalog).
 */
async function client(which: 'masked' | 'functions' | 'detectors'): Promise<pg.Client> {
  const l = gs.listeners.find((x) => x.policy === which)!;
  const c = new pg.Client({ host: '127.0.0.1', port: l.sidecar.port, user: 'agent', database: DB, password: 'x' });
  c.on('error', () => undefined);
  await c.connect();
  clients.push(c);
  return c;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The first refusal by the catalog (53000) `sql` gets on `c`: statements run until a catalog check is due. */
const refused = (c: pg.Client, q: string | pg.QueryConfig) =>
  until(`53000 for ${typeof q === 'string' ? q : q.text}`, async () => {
    const e = await c.query(q).then(
      () => undefined,
      (err: Error & { code?: string; hint?: string }) => err,
    );
    return e?.code === '53000' ? e : undefined;
  });

/** The catalog connections' ports as PostgreSQL sees them (their legs through the relay). */
async function catalogPorts(): Promise<number[]> {
  return superuser(DB, async (c) => {
    const r = await c.query<{ port: number }>(
      "SELECT client_port AS port FROM pg_stat_activity WHERE application_name = 'pgwarden-catalog' AND datname = $1",
      [DB],
    );
    return r.rows.map((x) => x.port);
  });
}

async function metric(name: string): Promise<string> {
  return (await gs.listeners[0].sidecar.metrics.registry.getSingleMetricAsString(name)) ?? '';
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const http = (path: string) =>
  fetch(`http://127.0.0.1:${gs.listeners[0].sidecar.httpPort}${path}`).then(async (r) => ({
    status: r.status,
    body: await r.text(),
  }));

/** Statement events the catalog refused, with their decision. */
const catalogRefusals = () =>
  audit.events.filter((e) => e.type === 'statement' && e.decision?.rule === 'catalog') as Array<{
    decision: { action: string; code: string; reason: string };
    statement?: unknown;
  }>;

beforeAll(async () => {
  await dropDatabase(DB);
  await superuser('postgres', async (c) => {
    await c.query(`DROP ROLE IF EXISTS ${LOGIN.user}`);
    await c.query(`CREATE ROLE ${LOGIN.user} LOGIN PASSWORD '${LOGIN.password}'`);
  });
  await freshDatabase(DB, LOGIN);
  const owner = sharedClient(LOGIN, DB);
  await owner.connect();
  await owner.query(`CREATE SCHEMA co; CREATE TABLE co.customers (id int, ssn text);
    INSERT INTO co.customers VALUES (1, '${SSN}'), (2, '987-65-4321')`);
  await owner.end();
  const shared = inject('pg');
  relay = new StallingRelay({ host: shared.host, port: shared.port });
  await relay.start();
  const file = join(mkdtempSync(join(tmpdir(), 'pgwarden-catalog-outage-')), 'policy.yaml');
  const [maskedPort, functionsPort, detectorsPort] = [await freePort(), await freePort(), await freePort()];
  writePolicies = (extraRules = []) =>
    writePolicy(
      file,
      policy('masked', maskedPort, {
        rules: [
          { name: 'read', action: 'allow', statements: ['select'], tables: ['co.*'] },
          { name: 'session', action: 'allow', statements: ['transaction', 'set', 'show'] },
          ...extraRules,
        ],
      }),
      {
        apiVersion: 'pgwarden.dev/v1alpha1',
        kind: 'MaskingRule',
        metadata: { name: 'pii', namespace: 'agents' },
        spec: {
          policies: ['masked'],
          columns: [{ table: 'co.customers', column: 'ssn', strategy: { type: 'partial', keepLast: 4 } }],
        },
      },
      // A function list makes decisions read the catalog: a statement resting on a name it does not know waits for a check.
      policy('functions', functionsPort, { guardrails: { blockedFunctions: ['co.secret_fn'] } }),
      policy('detectors', detectorsPort),
      {
        apiVersion: 'pgwarden.dev/v1alpha1',
        kind: 'MaskingRule',
        metadata: { name: 'content', namespace: 'agents' },
        spec: { policies: ['detectors'], detectors: ['us-ssn'] },
      },
    );
  writePolicies();
  const log = (level: string) => (obj: object, msg?: string) =>
    void logs.push({ level, obj: obj as Record<string, unknown>, msg });
  const logger: SidecarLogger = { info: log('info'), warn: log('warn'), error: log('error'), debug: log('debug') };
  gs = await startGovernedSidecar({
    policyPath: file,
    upstream: { host: '127.0.0.1', port: relay.port, database: DB, sslmode: 'disable' },
    credentials: { username: LOGIN.user, password: LOGIN.password },
    audit,
    http: { host: '127.0.0.1', port: 0 },
    pollMs: 0,
    logger,
    catalogQueryTimeoutMs: QUERY_TIMEOUT_MS,
  });
});

afterAll(async () => {
  relay?.thaw();
  await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  await gs?.close(100);
  await relay?.stop();
  await superuser(DB, (c) => c.query('GRANT SELECT ON pg_catalog.pg_proc TO PUBLIC')).catch(() => undefined);
  await dropDatabase(DB);
  await superuser('postgres', (c) => c.query(`DROP ROLE IF EXISTS ${LOGIN.user}`)).catch(() => undefined);
});

/** Both listeners decide with a catalog that answers: the masked read is masked, the unknown name reaches PostgreSQL. */
async function expectWorking(masked: pg.Client, functions: pg.Client): Promise<void> {
  await until('the masked read to run again', async () => {
    const r = await masked.query('SELECT id, ssn FROM co.customers ORDER BY id').catch(() => undefined);
    return r?.rows[0]?.ssn;
  }).then((ssn) => expect(ssn).toBe(`*******${SSN.slice(-4)}`));
  await until('the unknown name to be decided again', async () => {
    const e = await errorOf(functions, UNKNOWN_NAME);
    return e?.code === '42P01' ? e : undefined;
  });
}

describe('a catalog that does not answer or cannot be read', () => {
  it('refuses, with 53000, the statements that wait for a check of a catalog that does not answer, and recovers', async () => {
    const masked = await client('masked');
    const other = await client('masked');
    const functions = await client('functions');
    await expectWorking(masked, functions);
    const before = await catalogPorts();
    expect(before).toHaveLength(2);
    const logsBefore = logs.length;
    relay.freeze(before);
    const frozenAt = Date.now();
    const heldBefore = relay.held;

    const e = await refused(masked, 'SELECT id, ssn FROM co.customers');
    expect(e.message).toBe(
      'pgwarden: statement refused: the database catalog did not answer in time, so masking and the policy cannot check this statement',
    );
    expect(e.hint).toMatch(/^Retry when the database answers again/);
    expect(e.message).not.toContain(LOGIN.password);
    // Another session of the listener is refused too, and at once while the failure is retried (no second wait).
    expect((await errorOf(other, 'SELECT id FROM co.customers'))?.code).toBe('53000');
    // A decision that needs no check runs; one resting on a name the snapshot does not know waits for one, in vain.
    expect((await functions.query('SELECT id FROM co.customers ORDER BY id')).rows).toEqual([{ id: 1 }, { id: 2 }]);
    const unknown = await refused(functions, UNKNOWN_NAME);
    expect(unknown.message).toMatch(/did not answer in time/);
    expect(await metric('pgwarden_catalog_available')).toMatch(/pgwarden_catalog_available\{policy="masked"\} 0/);
    expect(await metric('pgwarden_catalog_failures_total')).toMatch(
      /pgwarden_catalog_failures_total\{policy="masked",cause="timeout"\} [1-9]/,
    );
    const warned = logs.slice(logsBefore).filter((l) => l.level === 'warn' && l.msg?.startsWith('catalog unavailable'));
    expect(warned.map((l) => l.obj.policy).sort()).toEqual(['functions', 'masked']);
    expect(warned[0].obj.cause).toBe('timeout');
    expect(JSON.stringify(logs)).not.toContain(LOGIN.password);
    const events = await until('the refusals in the audit trail', async () => {
      const r = catalogRefusals();
      return r.length >= 3 ? r : undefined;
    });
    for (const ev of events)
      expect(ev.decision).toMatchObject({ action: 'deny', code: '53000', reason: 'catalog-unavailable: timeout' });

    // Retries are paced (at most one connection attempt per listener every 2 s), not one per waiting statement.
    for (let i = 0; i < 10; i++) await errorOf(other, 'SELECT id FROM co.customers');
    const attempts = relay.held - heldBefore;
    expect(attempts).toBeLessThanOrEqual(2 * (Math.ceil((Date.now() - frozenAt) / 2000) + 1));
    // A statement stops waiting at the timeout; the query it waited for is given 1 s more before its connection is
    // taken for dead and closed.
    await until('both silent connections to be closed', async () => {
      const closed = logs
        .slice(logsBefore)
        .filter((l) => /did not answer within \d+ ms; closed it/.test(String(l.obj.err)));
      return new Set(closed.map((l) => l.obj.policy)).size === 2 ? true : undefined;
    });

    relay.thaw();
    await expectWorking(masked, functions);
    // The connection that did not answer was closed, and a new one opened.
    await until('the silent connections to be gone', async () => {
      const after = await catalogPorts();
      return after.length > 0 && after.every((p) => !before.includes(p)) ? after : undefined;
    });
    expect(await metric('pgwarden_catalog_available')).toMatch(/pgwarden_catalog_available\{policy="masked"\} 1/);
    expect(logs.some((l) => l.level === 'info' && l.msg?.startsWith('catalog connection answers again'))).toBe(true);
    expect((await other.query('SELECT id FROM co.customers ORDER BY id')).rows).toHaveLength(2);
  }, 120_000);

  it('does not keep the refusal of a prepared statement re-decided after a policy reload', async () => {
    const masked = await client('masked');
    const byId = (id: number) => ({
      name: 'by_id',
      text: 'SELECT id, ssn FROM co.customers WHERE id = $1',
      values: [id],
    });
    const functions = await client('functions');
    await expectWorking(masked, functions);
    expect((await masked.query(byId(1))).rows).toEqual([{ id: 1, ssn: `*******${SSN.slice(-4)}` }]);
    const hooks = gs.listeners.find((l) => l.policy === 'masked')!.hooks;
    const hash = hooks.policy()?.hash;
    await superuser(DB, (c) => c.query('REVOKE SELECT ON pg_catalog.pg_proc FROM PUBLIC'));
    try {
      await refused(masked, 'SELECT id FROM co.customers');
      // Decided again under the reloaded policy at its next Execute, and checked by masking then: refused.
      writePolicies([{ name: 'more', action: 'allow', statements: ['select'], tables: ['co.more'] }]);
      await until('the reload', async () => (hooks.policy()?.hash !== hash ? true : undefined));
      await refused(masked, byId(2));
    } finally {
      await superuser(DB, (c) => c.query('GRANT SELECT ON pg_catalog.pg_proc TO PUBLIC'));
    }
    const rows = await until('the prepared statement to run again', async () => {
      const r = await masked.query(byId(2)).catch(() => undefined);
      return r?.rows;
    });
    expect(rows).toEqual([{ id: 2, ssn: '*******4321' }]);
  }, 120_000);

  it('refuses them while the login cannot read the catalog (an error, not a hang), and recovers', async () => {
    const masked = await client('masked');
    const functions = await client('functions');
    await expectWorking(masked, functions);
    const seen = catalogRefusals().length;
    await superuser(DB, (c) => c.query('REVOKE SELECT ON pg_catalog.pg_proc FROM PUBLIC'));
    try {
      const e = await refused(masked, 'SELECT id, ssn FROM co.customers');
      expect(e.message).toBe(
        'pgwarden: statement refused: the database catalog cannot be read, so masking and the policy cannot check this statement',
      );
      expect((await functions.query('SELECT id FROM co.customers ORDER BY id')).rows).toHaveLength(2);
      await refused(functions, UNKNOWN_NAME);
      const events = await until('the refusals in the audit trail', async () => {
        const r = catalogRefusals().slice(seen);
        return r.length >= 2 ? r : undefined;
      });
      for (const ev of events) expect(ev.decision.reason).toBe('catalog-unavailable: error');
      const warned = logs.filter((l) => l.level === 'warn' && l.obj.cause === 'error');
      expect(String(warned[0]?.obj.err)).toMatch(/permission denied for table pg_proc/);
      expect(await metric('pgwarden_catalog_failures_total')).toMatch(/cause="error"\} [1-9]/);
    } finally {
      await superuser(DB, (c) => c.query('GRANT SELECT ON pg_catalog.pg_proc TO PUBLIC'));
    }
    await expectWorking(masked, functions);
  }, 120_000);

  it("bounds the whole of a statement's catalog work by --catalog-query-timeout, however many queries its check needs", async () => {
    const masked = await client('masked');
    const functions = await client('functions');
    await expectWorking(masked, functions);
    const ports = await catalogPorts();
    // Each catalog query's round trip now takes 700 ms: within the timeout one by one, but a check that finds the
    // catalog moved needs its fingerprint query and a reload's ten more.
    relay.slow(ports, 350);
    try {
      await superuser(DB, (c) => c.query('CREATE FUNCTION co.moved() RETURNS int LANGUAGE sql AS $$SELECT 1$$'));
      // The last check is over verifyMs (1 s) old: the next statement waits for one, which finds the function.
      await sleep(1200);
      const t0 = Date.now();
      const e = await errorOf(masked, 'SELECT id, ssn FROM co.customers');
      const took = Date.now() - t0;
      expect(e?.code).toBe('53000');
      expect(e?.message).toMatch(/did not answer in time/);
      // About one timeout (the slow reload would have taken over eight); generous for a machine twice as slow.
      expect(took).toBeLessThan(2.5 * QUERY_TIMEOUT_MS);
      expect(await metric('pgwarden_catalog_available')).toMatch(/pgwarden_catalog_available\{policy="masked"\} 0/);
      // The reload goes on meanwhile (the relay fast again, so as not to wait out ten slowed queries); once it has
      // ended, reads run again.
      relay.slow(ports, 0);
      const ssn = await until(
        'the reload to end',
        async () =>
          (await masked.query('SELECT ssn FROM co.customers WHERE id = 1').catch(() => undefined))?.rows[0]?.ssn,
        60_000,
      );
      expect(ssn).toBe(`*******${SSN.slice(-4)}`);
    } finally {
      relay.slow(ports, 0);
      await superuser(DB, (c) => c.query('DROP FUNCTION IF EXISTS co.moved()'));
    }
    await expectWorking(masked, functions);
  }, 120_000);

  it('runs what does not need the catalog while it does not answer: detector-only masking, transaction control, settings', async () => {
    const masked = await client('masked');
    const functions = await client('functions');
    const detectors = await client('detectors');
    await expectWorking(masked, functions);
    const ports = await catalogPorts();
    relay.freeze(ports);
    try {
      await refused(masked, 'SELECT id, ssn FROM co.customers');
      // Content detectors scan every text value whatever the catalog holds: nothing to refuse.
      const rows = (await detectors.query('SELECT id, ssn FROM co.customers ORDER BY id')).rows;
      expect(rows.map((r) => r.id)).toEqual([1, 2]);
      expect(JSON.stringify(rows)).not.toContain(SSN);
      // A session under column rules can still end a transaction and change its settings; reads wait for the catalog.
      await masked.query('BEGIN');
      await masked.query("SET LOCAL lock_timeout = '3s'");
      expect((await errorOf(masked, 'SELECT id FROM co.customers'))?.code).toBe('53000');
      await masked.query('ROLLBACK');
      await masked.query('SET application_name = outage');
      await masked.query('RESET application_name');
    } finally {
      relay.thaw();
    }
    await expectWorking(masked, functions);
    // The detector-only listener never opened a catalog connection.
    expect((await catalogPorts()).length).toBe(2);
  }, 120_000);

  it('checks a statement prepared before the outage again at each execution: refused when its decision needs the catalog', async () => {
    const masked = await client('masked');
    const functions = await client('functions');
    const detectors = await client('detectors');
    await expectWorking(masked, functions);
    const byId = { name: 'by_id', text: 'SELECT id, ssn FROM co.customers WHERE id = $1', values: [1] };
    // t.id on a join's alias: a name the snapshot does not know decides whether it is a call.
    const joined = {
      name: 'joined',
      text: 'SELECT j.id FROM (co.customers a JOIN co.customers b USING (id)) AS j WHERE j.id = $1',
      values: [1],
    };
    const plain = { name: 'plain', text: 'SELECT id FROM co.customers WHERE id = $1', values: [1] };
    const scanned = { name: 'scanned', text: 'SELECT id, ssn FROM co.customers WHERE id = $1', values: [1] };
    expect((await masked.query(byId)).rows).toEqual([{ id: 1, ssn: `*******${SSN.slice(-4)}` }]);
    expect((await functions.query(joined)).rows).toEqual([{ id: 1 }]);
    expect((await functions.query(plain)).rows).toEqual([{ id: 1 }]);
    expect(JSON.stringify((await detectors.query(scanned)).rows)).not.toContain(SSN);
    const ports = await catalogPorts();
    relay.freeze(ports);
    try {
      // Its masking rested on the catalog snapshot, which can no longer be checked: refused, as its text would be.
      const e = await refused(masked, byId);
      expect(e.message).toMatch(/^pgwarden: statement refused: the database catalog did not answer in time/);
      await refused(functions, joined);
      // Decisions that did not rest on what the catalog may have changed keep running.
      expect((await functions.query(plain)).rows).toEqual([{ id: 1 }]);
      const rows = (await detectors.query(scanned)).rows;
      expect(rows.map((r) => r.id)).toEqual([1]);
      expect(JSON.stringify(rows)).not.toContain(SSN);
    } finally {
      relay.thaw();
    }
    await expectWorking(masked, functions);
    const again = await until(
      'the prepared statement to run again',
      async () => (await masked.query(byId).catch(() => undefined))?.rows,
    );
    expect(again).toEqual([{ id: 1, ssn: `*******${SSN.slice(-4)}` }]);
    expect((await functions.query(joined)).rows).toEqual([{ id: 1 }]);
  }, 120_000);

  it('sees a view redefined under a prepared statement: its next execution masks what the view now exposes', async () => {
    const owner = sharedClient(LOGIN, DB);
    await owner.connect();
    try {
      await owner.query("CREATE VIEW co.v AS SELECT id, 'nothing'::text AS info FROM co.customers");
      const masked = await client('masked');
      // Past verifyMs: the Parse's check sees the new view.
      await sleep(1200);
      const info = { name: 'view_info', text: 'SELECT id, info FROM co.v WHERE id = $1', values: [1] };
      expect((await masked.query(info)).rows).toEqual([{ id: 1, info: 'nothing' }]);
      // PostgreSQL re-plans the prepared statement: it now returns the SSN under the same name.
      await owner.query('CREATE OR REPLACE VIEW co.v AS SELECT id, ssn AS info FROM co.customers');
      await sleep(1200);
      const rows = (await masked.query(info)).rows;
      expect(rows).toHaveLength(1);
      expect(rows[0].info).not.toContain(SSN.slice(-4));
    } finally {
      await owner.query('DROP VIEW IF EXISTS co.v');
      await owner.end();
    }
  }, 60_000);

  it('/readyz is not ready while a catalog the listeners need cannot be read, and ready again once it answers', async () => {
    const masked = await client('masked');
    const functions = await client('functions');
    await expectWorking(masked, functions);
    await until('ready', async () => ((await http('/readyz')).status === 200 ? true : undefined));
    const ports = await catalogPorts();
    relay.freeze(ports);
    try {
      // No statement needed: the probe itself starts the checks that find the outage.
      const r = await until('not ready', async () => {
        const res = await http('/readyz');
        return res.status === 503 && /policy functions/.test(res.body) ? res : undefined;
      });
      expect(r.body).toMatch(/catalog unavailable \(policy masked, timeout\)/);
      expect(r.body).toMatch(/catalog unavailable \(policy functions, timeout\)/);
      // Detector-only masking does not read the catalog: that listener is not named.
      expect(r.body).not.toContain('detectors');
      expect(r.body).not.toContain(LOGIN.password);
    } finally {
      relay.thaw();
    }
    await until('ready again', async () => ((await http('/readyz')).status === 200 ? true : undefined));
    expect(logs.some((l) => l.level === 'info' && l.msg === 'ready')).toBe(true);
  }, 120_000);
});
