import { describe, expect, inject, it } from 'vitest';
import { queryMessage } from '../protocol/frontend-messages.js';
import { ROLE } from '../testing/sidecar-fixture.js';
import { type Credentials, connectUpstream, type SslMode, type UpstreamTarget } from './connect.js';
import { UpstreamError } from './errors.js';
import { MessageReader } from './message-reader.js';
import { ScramClient } from './scram.js';

function target(sslmode: SslMode, extra: Partial<UpstreamTarget> = {}): UpstreamTarget {
  const pg = inject('pg');
  return { host: pg.host, port: pg.port, database: pg.database, sslmode, caFile: pg.caFile, ...extra };
}

/** Connects, asks the server who and how we are, and closes. */
async function whoAmI(t: UpstreamTarget, creds: Credentials): Promise<{ user: string; ssl: string }> {
  const up = await connectUpstream(t, creds, { application_name: 'connect-test' });
  const reader = new MessageReader(up.socket, 'upstream');
  up.socket.write(
    queryMessage('SELECT current_user, (SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid())'),
  );
  for (;;) {
    const m = await reader.next();
    if (m.type === 0x44) {
      const n1 = m.buf.readInt32BE(7);
      const user = m.buf.toString('utf8', 11, 11 + n1);
      const n2 = m.buf.readInt32BE(11 + n1);
      const ssl = m.buf.toString('utf8', 15 + n1, 15 + n1 + n2);
      up.socket.destroy();
      return { user, ssl };
    }
    if (m.type === 0x45) throw new Error('query failed');
  }
}

describe('upstream authentication', () => {
  for (const role of ['scram', 'md5', 'clear'] as const) {
    it(`authenticates ${ROLE[role].username}`, async () => {
      expect(await whoAmI(target('disable'), ROLE[role])).toEqual({ user: ROLE[role].username, ssl: 'false' });
    });
  }

  it('reports a wrong password without revealing it', async () => {
    const err = await whoAmI(target('disable'), { username: 'app_scram', password: 'not-the-password-xyz' }).catch(
      (e) => e,
    );
    expect(err).toBeInstanceOf(UpstreamError);
    expect(err.upstreamCode).toBe('28P01');
    expect(err.message).toContain('password authentication failed');
    expect(err.message).not.toContain('not-the-password-xyz');
  });

  it('reports an unreachable upstream as a connection failure', async () => {
    const err = await whoAmI(target('disable', { port: 1 }), ROLE.scram).catch((e) => e);
    expect(err).toBeInstanceOf(UpstreamError);
    expect(err.sqlstate).toBe('08006');
    expect(err.message).toMatch(/could not connect to upstream 127\.0\.0\.1:1/);
  });
});

describe('upstream sslmodes', () => {
  for (const mode of ['require', 'verify-ca', 'verify-full'] as const) {
    it(`${mode} negotiates TLS (the hostssl-only role gets in)`, async () => {
      expect(await whoAmI(target(mode), ROLE.tls)).toEqual({ user: 'app_tls', ssl: 'true' });
    });
  }

  it('require encrypts without verifying (a foreign CA is accepted)', async () => {
    expect(await whoAmI(target('require', { caFile: inject('pg').otherCaFile }), ROLE.tls)).toEqual({
      user: 'app_tls',
      ssl: 'true',
    });
  });

  it('disable cannot reach the hostssl-only role', async () => {
    const err = await whoAmI(target('disable'), ROLE.tls).catch((e) => e);
    expect(err).toBeInstanceOf(UpstreamError);
    expect(err.upstreamCode).toBe('28000');
  });

  it('verify-ca refuses a server signed by another CA', async () => {
    const err = await whoAmI(target('verify-ca', { caFile: inject('pg').otherCaFile }), ROLE.tls).catch((e) => e);
    expect(err).toBeInstanceOf(UpstreamError);
    expect(err.code).toBe('PGW_UPSTREAM_TLS');
  });

  it('verify-ca accepts a host name the certificate does not name', async () => {
    // The certificate names 127.0.0.1 and localhost; "127.1" resolves to the same loopback address under a name
    // the certificate does not carry.
    expect(await whoAmI(target('verify-ca', { host: '127.1' }), ROLE.scram)).toEqual({
      user: 'app_scram',
      ssl: 'true',
    });
  });

  it('verify-full refuses a host name the certificate does not name', async () => {
    const err = await whoAmI(target('verify-full', { host: '127.1' }), ROLE.scram).catch((e) => e);
    expect(err).toBeInstanceOf(UpstreamError);
    expect(err.code).toBe('PGW_UPSTREAM_TLS');
    expect(err.message).toMatch(/127\.1/);
  });

  it('verify-full accepts the host name the certificate names', async () => {
    expect(await whoAmI(target('verify-full', { host: 'localhost' }), ROLE.scram)).toEqual({
      user: 'app_scram',
      ssl: 'true',
    });
  });
});

describe('SCRAM client', () => {
  it('matches the RFC 7677 test vector', async () => {
    // RFC 7677 §3: user "user", password "pencil"; PostgreSQL sends an empty n= but the proof does not depend on it
    // except through the client-first-bare message, so the vector is replayed with the RFC's own bare message.
    const c = new ScramClient('rOprNGfwEbeRWgbNEkqO');
    (c as unknown as { clientFirstBare: string }).clientFirstBare = 'n=user,r=rOprNGfwEbeRWgbNEkqO';
    const final = await c.final(
      'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096',
      'pencil',
    );
    expect(final.toString()).toBe(
      'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=',
    );
    expect(() => c.verify('v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=')).not.toThrow();
    expect(() => c.verify('v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=')).toThrow(/signature/);
  });
});
