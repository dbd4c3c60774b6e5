import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ROLES } from '../harness/index.js';
import {
  auditedStatements,
  runClient,
  type SidecarTarget,
  startSidecarTarget,
  superuserSql,
  throughSidecar,
  uniqueName,
} from './through-sidecar.js';

// pgbench through the sidecar in each query mode (https://www.postgresql.org/docs/15/pgbench.html, -M):
// simple = Query; extended = unnamed Parse/Bind/Execute per statement; prepared = named statements parsed once.
// The default TPC-B-like script runs BEGIN, three UPDATEs, a SELECT and an INSERT per transaction.
const pg = inject('pg');
const database = uniqueName('compat_pgbench');
let target: SidecarTarget;

function pgbench(args: string[]) {
  return runClient('pgbench', args, { env: target.env, timeoutMs: 45_000 });
}

beforeAll(async () => {
  // pgbench -i drops and recreates fixed table names: give it a database of its own.
  superuserSql(pg, `CREATE DATABASE ${database} OWNER ${ROLES.scram.user}`);
  target = await startSidecarTarget(pg, { database });
  const init = await pgbench(['-i', '-q', '-s', '1']);
  expect(init.status, init.stderr).toBe(0);
});
afterAll(async () => {
  await target?.close();
  superuserSql(pg, `DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
});

describe('pgbench through the sidecar', () => {
  it('initialised the tables through the sidecar (COPY FROM STDIN of 100000 rows)', async () => {
    const r = await runClient('psql', ['-XAtc', 'SELECT count(*) FROM pgbench_accounts'], { env: target.env });
    expect(r.stdout.trim()).toBe('100000');
  });

  for (const mode of ['simple', 'extended', 'prepared']) {
    it(`runs the TPC-B-like script with -M ${mode}`, async () => {
      const before = history();
      const auditedBefore = auditedStatements(target, 'INSERT INTO pgbench_history').length;
      const r = await pgbench(['-n', '-M', mode, '-c', '2', '-j', '2', '-t', '100']);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toContain(`query mode: ${mode}`);
      expect(r.stdout).toMatch(/number of transactions actually processed: 200\/200/);
      expect(r.stdout).toMatch(/number of failed transactions: 0 /);
      // Every transaction's INSERT landed: the writes really went through, not just the replies.
      expect(history() - before).toBe(200);
      // ...and the sidecar wrote one audit event per executed INSERT, whatever the protocol.
      if (throughSidecar)
        expect(auditedStatements(target, 'INSERT INTO pgbench_history').length - auditedBefore).toBe(200);
    });
  }

  it('runs select-only with -M prepared on 4 clients', async () => {
    const r = await pgbench(['-n', '-S', '-M', 'prepared', '-c', '4', '-j', '2', '-t', '250']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/number of transactions actually processed: 1000\/1000/);
  });
});

function history(): number {
  return Number(superuserSql(pg, 'SELECT count(*) FROM pgbench_history', database).trim());
}
