import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  auditedStatements,
  runClient,
  type SidecarTarget,
  startSidecarTarget,
  throughSidecar,
  uniqueName,
} from './through-sidecar.js';

// Scripted psql through the sidecar: psql is libpq's own client, so these cover the simple-query protocol,
// COPY sub-protocol (\copy) and error reporting exactly as libpq sees them.
const pg = inject('pg');
let target: SidecarTarget;
let dir: string;

function psql(script: string, opts: { stopOnError?: boolean; env?: NodeJS.ProcessEnv } = {}) {
  const file = join(dir, `${uniqueName('script')}.sql`);
  writeFileSync(file, script);
  return runClient(
    'psql',
    ['-X', '-q', '-A', '-t', '-v', `ON_ERROR_STOP=${opts.stopOnError === false ? 0 : 1}`, '-f', file],
    {
      env: opts.env ?? target.env,
    },
  );
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pgwarden-compat-psql-'));
  target = await startSidecarTarget(pg);
});
afterAll(async () => {
  await target?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('psql through the sidecar', async () => {
  it('commits, rolls back and honours savepoints', async () => {
    const t = uniqueName('tx');
    const r = await psql(`
      CREATE TABLE ${t} (id int PRIMARY KEY, note text);
      BEGIN;
      INSERT INTO ${t} VALUES (1, 'kept');
      SAVEPOINT s1;
      INSERT INTO ${t} VALUES (2, 'undone by savepoint');
      ROLLBACK TO SAVEPOINT s1;
      INSERT INTO ${t} VALUES (3, 'kept too');
      RELEASE SAVEPOINT s1;
      COMMIT;
      BEGIN;
      INSERT INTO ${t} VALUES (4, 'rolled back');
      ROLLBACK;
      SELECT string_agg(id || ':' || note, ',' ORDER BY id) FROM ${t};
      DROP TABLE ${t};
    `);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe('1:kept,3:kept too');
  });

  it('shows errors with SQLSTATE and position, and the session keeps working', async () => {
    const r = await psql(
      `\\set VERBOSITY verbose
      SELECT 1 / 0;
      SELECT * FROM no_such_table_here;
      BEGIN;
      SELECT nonsense_column FROM pg_class;
      SELECT 'ignored while aborted';
      ROLLBACK;
      SELECT 'still alive';`,
      { stopOnError: false },
    );
    expect(r.status).toBe(0);
    expect(r.stderr).toContain('ERROR:  22012: division by zero');
    expect(r.stderr).toContain('ERROR:  42P01: relation "no_such_table_here" does not exist');
    // Position reaches psql intact: it draws the caret under the offending token.
    expect(r.stderr).toMatch(/LINE 1: SELECT \* FROM no_such_table_here;\n\s+\^/);
    expect(r.stderr).toContain('ERROR:  42703: column "nonsense_column" does not exist');
    expect(r.stderr).toContain('ERROR:  25P02: current transaction is aborted');
    expect(r.stdout.trim()).toBe('still alive');
    if (throughSidecar) {
      expect(auditedStatements(target, 'SELECT 1 / 0').map((e) => e.result.error?.code)).toContain('22012');
      expect(auditedStatements(target, 'no_such_table_here').map((e) => e.result.error?.code)).toEqual(['42P01']);
    }
  });

  it('stops on the first error with ON_ERROR_STOP=1 and exits 3', async () => {
    const r = await psql(`SELECT 'before';\nSELECT 1 / 0;\nSELECT 'never';`);
    expect(r.status).toBe(3);
    expect(r.stdout.trim()).toBe('before');
    expect(r.stderr).toContain('division by zero');
  });

  it('copies in and out with \\copy', async () => {
    const t = uniqueName('copy');
    const input = join(dir, `${t}-in.csv`);
    const output = join(dir, `${t}-out.csv`);
    const rows = Array.from({ length: 5000 }, (_, i) => `${i},"name ${i}, with comma",${i % 7 === 0 ? '' : i * 1.5}`);
    writeFileSync(input, `${rows.join('\n')}\n`);
    const r = await psql(`
      CREATE TABLE ${t} (id int, name text, amount numeric);
      \\copy ${t} FROM '${input}' WITH (FORMAT csv)
      SELECT count(*), count(amount), sum(id) FROM ${t};
      \\copy (SELECT * FROM ${t} ORDER BY id) TO '${output}' WITH (FORMAT csv)
      DROP TABLE ${t};
    `);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe(`5000|${5000 - Math.ceil(5000 / 7)}|${(4999 * 5000) / 2}`);
    expect(readFileSync(output, 'utf8')).toBe(readFileSync(input, 'utf8'));
  });

  it('reports a COPY data error from the server mid-stream', async () => {
    const t = uniqueName('copybad');
    const input = join(dir, `${t}.csv`);
    writeFileSync(input, '1,ok\n2,ok\nnot-a-number,bad\n');
    const r = await psql(
      `\\set VERBOSITY verbose\nCREATE TABLE ${t} (id int, v text);\n\\copy ${t} FROM '${input}' WITH (FORMAT csv)\nSELECT count(*) FROM ${t};\nDROP TABLE ${t};`,
      {
        stopOnError: false,
      },
    );
    expect(r.stderr).toContain('ERROR:  22P02: invalid input syntax for type integer: "not-a-number"');
    expect(r.stdout.trim()).toBe('0');
  });

  it('runs a multi-statement query string and shows every result', async () => {
    const r = await runClient(
      'psql',
      ['-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', "SELECT 'one'; SELECT 'two'; SELECT 2 + 1"],
      {
        env: target.env,
      },
    );
    expect(r.stderr).toBe('');
    expect(r.stdout.trim().split('\n')).toEqual(['one', 'two', '3']);
  });

  it('rolls back the whole multi-statement string when a later statement fails', async () => {
    const t = uniqueName('multi');
    await psql(`CREATE TABLE ${t} (id int);`);
    // A simple Query is one implicit transaction (protocol-flow.html#PROTOCOL-FLOW-MULTI-STATEMENT).
    const r = await runClient('psql', ['-X', '-A', '-t', '-c', `INSERT INTO ${t} VALUES (1); SELECT 1 / 0`], {
      env: target.env,
    });
    expect(r.stderr).toContain('division by zero');
    expect((await psql(`SELECT count(*) FROM ${t}; DROP TABLE ${t};`)).stdout.trim()).toBe('0');
  });
});

describe('psql through the sidecar with upstream TLS verify-full', () => {
  let tlsTarget: SidecarTarget;
  beforeAll(async () => {
    tlsTarget = await startSidecarTarget(pg, { sslmode: 'verify-full' });
  });
  afterAll(async () => {
    await tlsTarget?.close();
  });

  it('reaches PostgreSQL over TLS while the client speaks plain loopback', async () => {
    const r = await psql(`SELECT ssl, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid();`, {
      env: tlsTarget.env,
    });
    expect(r.stderr).toBe('');
    const expected = process.env.PGWARDEN_COMPAT_TARGET === 'direct' ? 'f|app_scram' : 't|app_scram';
    expect(r.stdout.trim()).toBe(expected);
  });
});
