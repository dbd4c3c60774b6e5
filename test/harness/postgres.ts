import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { postgresBinDir } from './binaries.js';
import { freePort } from './ports.js';
import { makeCertificates, type TestCertificates } from './tls.js';

/** Roles the throwaway cluster has, one per upstream authentication method the sidecar must speak. */
export const ROLES = {
  superuser: { user: 'postgres', password: 'super-secret-pw' },
  scram: { user: 'app_scram', password: 'scram-pw-1' },
  md5: { user: 'app_md5', password: 'md5-pw-2' },
  cleartext: { user: 'app_clear', password: 'clear-pw-3' },
  /** Only reachable over TLS (hostssl line), to prove the sidecar really negotiated TLS. */
  tlsOnly: { user: 'app_tls', password: 'tls-pw-4' },
} as const;

export interface TestPostgres {
  host: string;
  port: number;
  database: string;
  dataDir: string;
  socketDir: string;
  certs: TestCertificates;
  /** postgres:// URL for a role, no TLS. */
  url(role?: keyof typeof ROLES, database?: string): string;
  /** Runs SQL as the superuser through psql and returns stdout (unaligned, tuples only). */
  psql(sql: string, database?: string): string;
  stop(): void;
}

const isRoot = process.getuid?.() === 0;

function asPostgres(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv } = {}): string {
  const [file, argv] = isRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
  const r = spawnSync(file, argv, { encoding: 'utf8', env: { ...process.env, ...opts.env } });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/**
 * Starts a private PostgreSQL cluster: initdb into a temp dir, a free port on 127.0.0.1, scram-sha-256 by default,
 * md5 and cleartext roles for the other auth methods, TLS with a generated CA. Stop it with `stop()`.
 */
export async function startPostgres(opts: { settings?: Record<string, string> } = {}): Promise<TestPostgres> {
  const bin = postgresBinDir();
  const root = mkdtempSync(join(tmpdir(), 'pgwarden-pg-'));
  chmodSync(root, 0o755);
  const dataDir = join(root, 'data');
  const socketDir = join(root, 'sock');
  const certs = makeCertificates(join(root, 'tls'));
  const pwfile = join(root, 'pwfile');
  writeFileSync(pwfile, ROLES.superuser.password);
  if (isRoot) {
    execFileSync('mkdir', ['-p', socketDir]);
    execFileSync('chown', ['-R', 'postgres:postgres', root]);
  }
  asPostgres(join(bin, 'initdb'), [
    '-D',
    dataDir,
    '-U',
    'postgres',
    '--auth=scram-sha-256',
    `--pwfile=${pwfile}`,
    '-E',
    'UTF8',
    '--locale=C',
    '--no-sync',
  ]);
  for (const f of ['server.crt', 'server.key']) {
    copyFileSync(join(certs.dir, f), join(dataDir, f));
    if (isRoot) chownSync(join(dataDir, f), uidOf('postgres'), gidOf('postgres'));
    chmodSync(join(dataDir, f), 0o600);
  }
  const settings: Record<string, string> = {
    listen_addresses: "'127.0.0.1'",
    unix_socket_directories: `'${socketDir}'`,
    ssl: 'on',
    ssl_cert_file: "'server.crt'",
    ssl_key_file: "'server.key'",
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    max_connections: '200',
    shared_buffers: '64MB',
    ...opts.settings,
  };
  writeFileSync(
    join(dataDir, 'postgresql.auto.conf'),
    Object.entries(settings)
      .map(([k, v]) => `${k} = ${v}\n`)
      .join(''),
  );
  writeFileSync(
    join(dataDir, 'pg_hba.conf'),
    [
      'local all postgres trust',
      `hostssl all ${ROLES.tlsOnly.user} 127.0.0.1/32 scram-sha-256`,
      `host all ${ROLES.tlsOnly.user} 127.0.0.1/32 reject`,
      `host all ${ROLES.md5.user} 127.0.0.1/32 md5`,
      `host all ${ROLES.cleartext.user} 127.0.0.1/32 password`,
      'host all all 127.0.0.1/32 scram-sha-256',
      '',
    ].join('\n'),
  );
  let port = 0;
  for (let attempt = 0; ; attempt++) {
    port = await freePort();
    try {
      asPostgres(join(bin, 'pg_ctl'), [
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
      break;
    } catch (err) {
      if (attempt >= 3) throw err;
    }
  }
  const psql = (sql: string, database = 'postgres') =>
    asPostgres('psql', [
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
  psql(`SET password_encryption = 'scram-sha-256';
        CREATE ROLE ${ROLES.scram.user} LOGIN PASSWORD '${ROLES.scram.password}';
        CREATE ROLE ${ROLES.tlsOnly.user} LOGIN PASSWORD '${ROLES.tlsOnly.password}';
        CREATE ROLE ${ROLES.cleartext.user} LOGIN PASSWORD '${ROLES.cleartext.password}';
        SET password_encryption = 'md5';
        CREATE ROLE ${ROLES.md5.user} LOGIN PASSWORD '${ROLES.md5.password}';`);
  psql(`CREATE DATABASE app OWNER ${ROLES.scram.user}`);
  psql(`GRANT ALL ON SCHEMA public TO PUBLIC; GRANT CREATE ON DATABASE app TO PUBLIC;`, 'app');
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    try {
      asPostgres(join(bin, 'pg_ctl'), ['-D', dataDir, '-m', 'immediate', '-w', 'stop']);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  };
  return {
    host: '127.0.0.1',
    port,
    database: 'app',
    dataDir,
    socketDir,
    certs,
    url: (role = 'scram', database = 'app') =>
      `postgres://${ROLES[role].user}:${encodeURIComponent(ROLES[role].password)}@127.0.0.1:${port}/${database}`,
    psql,
    stop,
  };
}

function uidOf(user: string): number {
  return Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim());
}
function gidOf(user: string): number {
  return Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim());
}
