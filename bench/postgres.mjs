// A throwaway PostgreSQL cluster for the benchmark: initdb into a temp dir, scram-sha-256, a free port.
// initdb/pg_ctl refuse to run as root, so as root they run as the `postgres` user (see docs/benchmarks.md).
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './net.mjs';

const isRoot = process.getuid?.() === 0;

export const BENCH_ROLE = { user: 'bench', password: 'bench-pw-1' };

function binDir() {
  const fromEnv = process.env.PGWARDEN_PG_BINDIR;
  if (fromEnv && existsSync(join(fromEnv, 'initdb'))) return fromEnv;
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => existsSync(join(root, v, 'bin', 'initdb')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions.length === 0) {
    throw new Error(
      'PostgreSQL server binaries not found: apt-get install -y postgresql-15 (or set PGWARDEN_PG_BINDIR)',
    );
  }
  return join(root, versions[0], 'bin');
}

function run(cmd, args, env = {}) {
  const [file, argv] = isRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
  const r = spawnSync(file, argv, { encoding: 'utf8', env: { ...process.env, ...env } });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** Starts the cluster, creates the `bench` role and database. Returns {host, port, database, version, stop()}. */
export async function startBenchPostgres() {
  const bin = binDir();
  const root = mkdtempSync(join(tmpdir(), 'pgwarden-bench-'));
  chmodSync(root, 0o755);
  const dataDir = join(root, 'data');
  const socketDir = join(root, 'sock');
  const pwfile = join(root, 'pwfile');
  writeFileSync(pwfile, 'bench-super-pw');
  execFileSync('mkdir', ['-p', socketDir]);
  if (isRoot) execFileSync('chown', ['-R', 'postgres:postgres', root]);
  run(
    join(bin, 'initdb'),
    ['-D', dataDir, '-U', 'postgres', '--auth-host=scram-sha-256', '--auth-local=trust'].concat([
      `--pwfile=${pwfile}`,
      '-E',
      'UTF8',
      '--locale=C',
      '--no-sync',
    ]),
  );
  // TLS for the legs whose upstream asks for it (`sidecar-tls`): a self-signed certificate, made as the server's
  // owner so that PostgreSQL accepts the key's permissions. Plain TCP logins keep working alongside.
  run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    join(dataDir, 'server.key'),
    '-out',
    join(dataDir, 'server.crt'),
    '-days',
    '2',
    '-subj',
    '/CN=localhost',
  ]);
  run('chmod', ['600', join(dataDir, 'server.key')]);
  writeFileSync(
    join(dataDir, 'postgresql.auto.conf'),
    [
      'ssl = on',
      "listen_addresses = '127.0.0.1'",
      `unix_socket_directories = '${socketDir}'`,
      'fsync = off',
      'synchronous_commit = off',
      'full_page_writes = off',
      'max_connections = 100',
      'shared_buffers = 128MB',
      '',
    ].join('\n'),
  );
  const port = await freePort();
  run(join(bin, 'pg_ctl'), [
    '-D',
    dataDir,
    '-l',
    join(root, 'postgres.log'),
    '-w',
    '-t',
    '30',
    '-o',
    `-p ${port}`,
    'start',
  ]);
  const psql = (sql, database = 'postgres') =>
    run('psql', [
      '-h',
      socketDir,
      '-p',
      String(port),
      '-U',
      'postgres',
      '-d',
      database,
      '-XAtq',
      '-v',
      'ON_ERROR_STOP=1',
      '-c',
      sql,
    ]);
  psql(
    `SET password_encryption = 'scram-sha-256'; CREATE ROLE ${BENCH_ROLE.user} LOGIN PASSWORD '${BENCH_ROLE.password}'`,
  );
  psql(`CREATE DATABASE bench OWNER ${BENCH_ROLE.user}`);
  const version = psql('SHOW server_version').trim();
  let stopped = false;
  return {
    host: '127.0.0.1',
    port,
    database: 'bench',
    version,
    psql,
    stop() {
      if (stopped) return;
      stopped = true;
      try {
        run(join(bin, 'pg_ctl'), ['-D', dataDir, '-m', 'immediate', '-w', 'stop']);
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    },
  };
}
