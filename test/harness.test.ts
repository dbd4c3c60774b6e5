import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';
import { ROLES } from './harness/postgres.js';

describe('test harness', () => {
  it('serves every auth method the sidecar must speak, and TLS', async () => {
    const shared = inject('pg');
    for (const role of ['scram', 'md5', 'cleartext'] as const) {
      const c = new pg.Client({
        host: shared.host,
        port: shared.port,
        database: 'app',
        user: ROLES[role].user,
        password: ROLES[role].password,
      });
      await c.connect();
      const r = await c.query('select current_user as u');
      expect(r.rows[0].u).toBe(ROLES[role].user);
      await c.end();
    }
    const tls = new pg.Client({
      host: shared.host,
      port: shared.port,
      database: 'app',
      user: ROLES.tlsOnly.user,
      password: ROLES.tlsOnly.password,
      ssl: { ca: (await import('node:fs')).readFileSync(shared.caFile, 'utf8'), servername: 'localhost' },
    });
    await tls.connect();
    const r = await tls.query('select ssl from pg_stat_ssl where pid = pg_backend_pid()');
    expect(r.rows[0].ssl).toBe(true);
    await tls.end();
  });
});
