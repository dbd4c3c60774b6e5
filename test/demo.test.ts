import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';

// `make demo` end to end: the built CLI (`make test` builds first) starts PGlite and the sidecar, prints how to
// connect, prints one audit line per statement, and exits 0 on Ctrl-C.
const repo = fileURLToPath(new URL('..', import.meta.url));
const cli = fileURLToPath(new URL('../bin/pgwarden', import.meta.url));
let child: ChildProcess | undefined;
let output = '';

afterAll(() => {
  if (child && child.exitCode === null) child.kill('SIGKILL');
});

function waitForOutput(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    const check = () => {
      const m = pattern.exec(output);
      if (m) {
        clearInterval(timer);
        resolve(m);
      } else if (child?.exitCode !== null || Date.now() > deadline) {
        clearInterval(timer);
        reject(new Error(`no ${pattern} in demo output (exit ${child?.exitCode}):\n${output}`));
      }
    };
    const deadline = Date.now() + timeoutMs;
    const timer = setInterval(check, 50);
  });
}

describe('pgwarden demo', () => {
  it('serves PII-seeded PGlite through the sidecar, audits, and stops cleanly on SIGINT', {
    timeout: 150_000,
  }, async () => {
    expect(existsSync(`${repo}/cli/dist/main.js`), 'build first: npx tsc -b').toBe(true);
    child = spawn(process.execPath, [cli, 'demo'], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.setEncoding('utf8').on('data', (d) => {
      output += d;
    });
    child.stderr?.setEncoding('utf8').on('data', (d) => {
      output += d;
    });
    const exited = new Promise<number | null>((resolve) => child?.on('exit', (code) => resolve(code)));

    const m = await waitForOutput(/psql "postgres:\/\/(\w+)@127\.0\.0\.1:(\d+)\/(\w+)\?sslmode=disable"/, 110_000);
    const [, user, port, database] = m;
    const client = new pg.Client({ host: '127.0.0.1', port: Number(port), user, database });
    await client.connect();
    const r = await client.query('SELECT id, email, ssn, card_number FROM customers ORDER BY id LIMIT 3');
    expect(r.rows).toHaveLength(3);
    expect(r.rows[0].email).toMatch(/@example\.com$/);
    const orders = await client.query(
      'SELECT count(*)::int AS n FROM orders o JOIN customers c ON c.id = o.customer_id',
    );
    expect(orders.rows[0].n).toBe(120);
    // The default demo runs examples/analyst-readonly.yaml: SET ROLE to its role, writes denied with 42501.
    expect((await client.query('SELECT current_user AS u')).rows[0].u).toBe('analytics_ro');
    const denied = await client.query('DELETE FROM orders').catch((e) => e);
    expect(denied.code).toBe('42501');
    await client.end();

    await waitForOutput(
      /ok\s+SELECT 3 .*SELECT id, email, ssn, card_number FROM customers ORDER BY id LIMIT 3/,
      10_000,
    );
    await waitForOutput(/DENIED.*DELETE FROM orders/, 10_000);
    child.kill('SIGINT');
    expect(await exited).toBe(0);
    expect(output).toContain('pgwarden demo: stopped');
  });
});
