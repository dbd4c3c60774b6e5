import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parseChecks, runClient, SIDECAR_KINDS, type SidecarTarget, startSidecarTarget } from './through-sidecar.js';

// A client that is not JavaScript: psycopg2 over libpq, from Debian's python3-psycopg2 (scripts/system-deps.sh).
// Debian's interpreter on purpose: /usr/bin/python3 sees the Debian package whatever pyenv puts first on PATH.
const harness = inject('pg');
const script = fileURLToPath(new URL('./psycopg2_client.py', import.meta.url));

// Through the allow-all sidecar and through one started from a policy (through-sidecar.ts SIDECAR_KINDS).
describe.each(SIDECAR_KINDS)('psycopg2 through %s', (_label, policySpec) => {
  let target: SidecarTarget;
  let checks: Record<string, any>;
  beforeAll(async () => {
    target = await startSidecarTarget(harness, { policySpec });
    const r = await runClient('/usr/bin/python3', [script], { env: target.env, timeoutMs: 30_000 });
    if (r.status !== 0) throw new Error(`psycopg2 client failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
    checks = parseChecks(r.stdout);
  });
  afterAll(async () => {
    await target?.close();
  });

  it('connects and runs a parameterised query', () => {
    expect(checks.connect).toMatchObject({ user: 'app_scram', is_pg: true, answer: 42 });
    expect(checks.connect.server_version).toBeGreaterThanOrEqual(150000);
  });

  it('inserts with executemany and execute_values', () => {
    expect(checks.executemany.counts).toEqual([1000, 500, '62625.0']);
  });

  it('iterates a server-side (named) cursor', () => {
    expect(checks.server_side_cursor).toMatchObject({ rows: 1000, first: 1, last: 1000, total: 500500 });
  });

  it('copies out and in with copy_expert', () => {
    expect(checks.copy_expert.out).toBe('1,row 1\n2,row 2\n3,row 3\n');
    expect(checks.copy_expert.copied_in).toBe(1000);
  });

  it('maps SQLSTATEs to e.pgcode and error classes', () => {
    expect(checks.errors.errors).toEqual({
      undefined_table: { pgcode: '42P01', class: 'UndefinedTable', position: '15' },
      division_by_zero: { pgcode: '22012', class: 'DivisionByZero', position: null },
      unique_violation: { pgcode: '23505', class: 'UniqueViolation', position: null },
    });
  });

  it('cancels pg_sleep with conn.cancel() (57014)', () => {
    expect(checks.cancel.pgcode).toBe('57014');
    expect(checks.cancel.name).toBe('QUERY_CANCELED');
    expect(checks.cancel.seconds).toBeLessThan(10);
    expect(checks.after.value).toBe('still usable');
  });
});
