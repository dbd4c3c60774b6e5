import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';

// `make demo` end to end: the built CLI (`make test` builds first) starts PGlite, the collector and the sidecar,
// prints how to connect and where the collector is, prints one audit line per statement, and exits 0 on Ctrl-C.
// The sessions are then read back from the collector's HTTP API: with the private nats-server (the default here,
// the machine has one) and with PGWARDEN_NATS_SERVER=off (the documented in-process fallback).
const repo = fileURLToPath(new URL('..', import.meta.url));
const cli = fileURLToPath(new URL('../bin/pgwarden', import.meta.url));
const children: ChildProcess[] = [];

afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
});

interface Demo {
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
  waitFor(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray>;
}

function startDemo(env: NodeJS.ProcessEnv = {}): Demo {
  const child = spawn(process.execPath, [cli, 'demo'], {
    cwd: repo,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  children.push(child);
  let output = '';
  child.stdout?.setEncoding('utf8').on('data', (d) => {
    output += d;
  });
  child.stderr?.setEncoding('utf8').on('data', (d) => {
    output += d;
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const waitFor = (pattern: RegExp, timeoutMs: number) =>
    new Promise<RegExpExecArray>((resolve, reject) => {
      const deadline = Date.now() + timeoutMs;
      const timer = setInterval(() => {
        const m = pattern.exec(output);
        if (m) {
          clearInterval(timer);
          resolve(m);
        } else if (child.exitCode !== null || Date.now() > deadline) {
          clearInterval(timer);
          reject(new Error(`no ${pattern} in demo output (exit ${child.exitCode}):\n${output}`));
        }
      }, 50);
    });
  return { child, output: () => output, exited, waitFor };
}

interface SessionSummary {
  id: string;
  statements: number;
  denied: number;
}

/** Polls the collector's real HTTP API until a session with at least `statements` statements is stored. */
async function storedSession(collectorUrl: string, statements: number, timeoutMs: number): Promise<SessionSummary> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    const res = await fetch(`${collectorUrl}/api/v1/sessions`);
    expect(res.status).toBe(200);
    const page = (await res.json()) as { items: SessionSummary[] };
    const s = page.items.find((i) => i.statements >= statements);
    if (s) return s;
    last = JSON.stringify(page.items);
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`no session with ${statements} statements in the collector; last page: ${last}`);
}

const COLLECTOR = /collector \(web UI\) on (http:\/\/127\.0\.0\.1:\d+)\/ {2}sessions: \1\/api\/v1\/sessions/;
const PSQL = /psql "postgres:\/\/(\w+)@127\.0\.0\.1:(\d+)\/(\w+)\?sslmode=disable"/;

describe('pgwarden demo', () => {
  it('serves PII-seeded PGlite through the sidecar, audits to the terminal and the collector (NATS), stops on SIGINT', {
    timeout: 150_000,
  }, async () => {
    expect(existsSync(`${repo}/cli/dist/main.js`), 'build first: npx tsc -b').toBe(true);
    const demo = startDemo();
    const [, user, port, database] = await demo.waitFor(PSQL, 110_000);
    const collectorUrl = (await demo.waitFor(COLLECTOR, 1000))[1];
    expect(demo.output()).toMatch(/audit events via private nats-server nats:\/\/127\.0\.0\.1:\d+ \(JetStream\)/);
    const client = new pg.Client({ host: '127.0.0.1', port: Number(port), user, database });
    await client.connect();
    const r = await client.query('SELECT id, email, ssn, card_number FROM customers ORDER BY id LIMIT 3');
    expect(r.rows).toHaveLength(3);
    expect(r.rows[0].email).toMatch(/@example\.com$/);
    // Column rules of examples/masking-pii.yaml: also what the card number's expressions and the birth date give.
    expect(r.rows[0].card_number).toMatch(/^\*+\d{4}$/);
    const exprs = await client.query(
      'SELECT substr(card_number, 1, 12) AS head, birth_date FROM customers ORDER BY id LIMIT 1',
    );
    expect(exprs.rows[0].head).not.toMatch(/\d{5}/);
    expect(exprs.rows[0].birth_date).toBeNull();
    const orders = await client.query(
      'SELECT count(*)::int AS n FROM orders o JOIN customers c ON c.id = o.customer_id',
    );
    expect(orders.rows[0].n).toBe(120);
    // The default demo runs examples/analyst-readonly.yaml: SET ROLE to its role, writes denied with 42501.
    expect((await client.query('SELECT current_user AS u')).rows[0].u).toBe('analytics_ro');
    const denied = await client.query('DELETE FROM orders').catch((e) => e);
    expect(denied.code).toBe('42501');
    await client.end();

    await demo.waitFor(/ok\s+SELECT 3 .*SELECT id, email, ssn, card_number FROM customers ORDER BY id LIMIT 3/, 10_000);
    await demo.waitFor(/DENIED.*DELETE FROM orders/, 10_000);

    // The same session, through JetStream, in the collector's store: its statements and the denied DELETE.
    const session = await storedSession(collectorUrl, 4, 20_000);
    expect(session.denied).toBeGreaterThanOrEqual(1);
    const detail = (await (
      await fetch(`${collectorUrl}/api/v1/sessions/${encodeURIComponent(session.id)}`)
    ).json()) as {
      events: { type: string; statement?: { text?: string }; decision?: { action?: string } }[];
    };
    const stmts = detail.events.filter((e) => e.type === 'statement');
    const del = stmts.find((e) => e.statement?.text === 'DELETE FROM orders');
    expect(del?.decision?.action).toBe('deny');
    const sel = stmts.find((e) => e.statement?.text?.startsWith('SELECT id, email, ssn, card_number FROM customers'));
    expect(sel?.decision?.action).not.toBe('deny');
    expect((await fetch(`${collectorUrl}/`)).headers.get('content-type')).toContain('text/html');
    // Those reads were audited too: the collector's own chain holds an audit.read of this session's detail.
    const all = (await (await fetch(`${collectorUrl}/api/v1/sessions`)).json()) as { items: SessionSummary[] };
    const own = all.items.find((i) => i.id.startsWith('collector-'));
    expect(own, JSON.stringify(all.items)).toBeDefined();
    const reads = (
      (await (await fetch(`${collectorUrl}/api/v1/sessions/${own!.id}`)).json()) as {
        events: { type: string; read?: { route: string; status: number } }[];
      }
    ).events.filter((e) => e.type === 'audit.read');
    expect(reads.map((e) => e.read)).toContainEqual(
      expect.objectContaining({ route: `/api/v1/sessions/${session.id}`, status: 200 }),
    );

    // The approval queue as the demo prints it: an UPDATE of an order's status is held until the printed approver
    // approves it with `pgwarden approvals`, then runs.
    const token = (await demo.waitFor(/PGWARDEN_APPROVER_TOKEN=(\w+) bin\/pgwarden approvals list/, 1000))[1];
    const env = { ...process.env, PGWARDEN_COLLECTOR_URL: collectorUrl, PGWARDEN_APPROVER_TOKEN: token };
    const writer = new pg.Client({ host: '127.0.0.1', port: Number(port), user, database });
    await writer.connect();
    const held = writer.query("UPDATE orders SET status = 'refunded' WHERE id = 1");
    let id = '';
    for (let i = 0; i < 100 && !id; i++) {
      const list = spawnSync(process.execPath, [cli, 'approvals', 'list', '--json'], { env, encoding: 'utf8' });
      id =
        (JSON.parse(list.stdout || '[]') as { id: string; request: { sql: string } }[]).find((a) =>
          a.request.sql.startsWith('UPDATE orders'),
        )?.id ?? '';
      if (!id) await new Promise((r) => setTimeout(r, 100));
    }
    expect(id, demo.output()).not.toBe('');
    // With a grant, as the demo suggests: the same UPDATE for another order then runs without a new request.
    const approve = spawnSync(process.execPath, [cli, 'approvals', 'approve', id, '--for', '15m'], {
      env,
      encoding: 'utf8',
    });
    expect(approve.status, approve.stderr).toBe(0);
    expect((await held).rowCount).toBe(1);
    expect((await writer.query('SELECT status FROM orders WHERE id = 1')).rows[0].status).toBe('refunded');
    expect(demo.output()).toContain("approve it --for 15m, and UPDATE orders SET status = 'refunded' WHERE id = 2");
    expect((await writer.query("UPDATE orders SET status = 'refunded' WHERE id = 2")).rowCount).toBe(1);
    await writer.end();

    demo.child.kill('SIGINT');
    expect(await demo.exited).toBe(0);
    expect(demo.output()).toContain('pgwarden demo: stopped');
  });

  it('without nats-server says how to install it and delivers sessions to the collector in-process', {
    timeout: 150_000,
  }, async () => {
    const demo = startDemo({ PGWARDEN_NATS_SERVER: 'off' });
    const [, user, port, database] = await demo.waitFor(PSQL, 110_000);
    expect(demo.output()).toContain(
      'nats-server not found: install it with `apt-get install nats-server` (or brew install nats-server); using direct in-process delivery',
    );
    const collectorUrl = (await demo.waitFor(COLLECTOR, 1000))[1];
    const client = new pg.Client({ host: '127.0.0.1', port: Number(port), user, database });
    await client.connect();
    expect((await client.query('SELECT count(*)::int AS n FROM customers')).rows[0].n).toBe(40);
    expect((await client.query('DELETE FROM orders').catch((e) => e)).code).toBe('42501');
    await client.end();
    const session = await storedSession(collectorUrl, 2, 20_000);
    expect(session.denied).toBe(1);
    demo.child.kill('SIGINT');
    expect(await demo.exited).toBe(0);
    expect(demo.output()).toContain('pgwarden demo: stopped');
  });
});
