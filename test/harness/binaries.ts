import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

/** Thrown when a server binary the tests need is not installed; the message says what to install. */
export class MissingBinaryError extends Error {
  constructor(what: string, install: string) {
    super(`${what} not found. Install it with: ${install}`);
    this.name = 'MissingBinaryError';
  }
}

/** Finds PostgreSQL server binaries (not on PATH on Debian): PGWARDEN_PG_BINDIR, then the newest /usr/lib/postgresql/N/bin. */
export function postgresBinDir(): string {
  const fromEnv = process.env.PGWARDEN_PG_BINDIR;
  if (fromEnv && existsSync(join(fromEnv, 'initdb'))) return fromEnv;
  const root = '/usr/lib/postgresql';
  if (existsSync(root)) {
    const versions = readdirSync(root)
      .filter((v) => existsSync(join(root, v, 'bin', 'initdb')))
      .sort((a, b) => Number(b) - Number(a));
    if (versions.length > 0) return join(root, versions[0], 'bin');
  }
  throw new MissingBinaryError(
    'PostgreSQL server binaries (initdb, pg_ctl)',
    'apt-get install -y postgresql-15 postgresql-client-15   (or set PGWARDEN_PG_BINDIR)',
  );
}

export function natsServerBinary(): string {
  const candidates = [
    process.env.PGWARDEN_NATS_SERVER,
    '/usr/sbin/nats-server',
    '/usr/bin/nats-server',
    '/usr/local/bin/nats-server',
  ];
  for (const c of candidates) if (c && existsSync(c)) return c;
  throw new MissingBinaryError(
    'nats-server (2.9+, JetStream)',
    'apt-get install -y nats-server   (or set PGWARDEN_NATS_SERVER)',
  );
}
