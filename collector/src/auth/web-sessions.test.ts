import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../store/migrations.js';
import { openPglite, type SqlClient } from '../store/sql-client.js';
import { useTestStore } from '../testing/test-store.js';
import { RefreshTokenSeal } from './refresh-token-seal.js';
import { DEFAULT_LIMITS, SESSION_COOKIE, WebSessions } from './web-sessions.js';

const dora = { issuer: 'https://idp.example', subject: 'u-dora', user: 'dora@example.com', groups: ['dba', 'ops'] };
const cookie = (id: string) => `theme=dark; ${SESSION_COOKIE}=${id}`;
const now = () => Math.floor(Date.now() / 1000);

/** The same checks on the production store and the embedded one (the demo's). */
function sessionsOn(db: () => SqlClient) {
  it('keeps a refresh token sealed, lets one request at a time renew with it, and ends a session saying why', async () => {
    const s = new WebSessions(db(), undefined, { ...DEFAULT_LIMITS, seal: new RefreshTokenSeal(randomBytes(32)) });
    const token = `rt-${randomBytes(24).toString('hex')}`;
    // Due at once: its ID token expired a moment ago, which a refresh token outlives.
    const id = await s.open(dora, 'dora', now() - 1, { refreshToken: token, nonce: 'n-1', authTime: 1_700_000_000 });
    const dump = async () =>
      (await db().query<{ t: string }>('SELECT row_to_json(w)::text AS t FROM collector_web_sessions w'))
        .map((r) => r.t)
        .join('\n');
    expect(await dump()).not.toContain(token);
    expect(await dump()).not.toContain(Buffer.from(token).toString('hex'));
    expect(await s.lookup(cookie(id))).toMatchObject({ state: 'live', renewDue: true, expired: true, renewing: false });
    // Expired and not renewed: no caller without renewal.
    expect(await s.callerOf(cookie(id))).toBeUndefined();
    const [first, second] = await Promise.all([s.claimRenewal(cookie(id)), s.claimRenewal(cookie(id))]);
    const claim = first ?? second;
    expect([first, second].filter(Boolean)).toHaveLength(1);
    expect(claim).toMatchObject({ refreshToken: token, subject: 'u-dora', authTime: 1_700_000_000, expired: true });
    expect(await s.lookup(cookie(id))).toMatchObject({ state: 'live', renewing: true });
    const next = `rt-${randomBytes(24).toString('hex')}`;
    const renewed = { ...dora, groups: ['dba'] };
    expect(await s.renewed(claim!, renewed, 'dora', now() + 600, next)).toBe(true);
    // A claim used once is spent.
    expect(await s.renewed(claim!, renewed, 'dora', now() + 600, next)).toBe(false);
    expect(await s.callerOf(cookie(id))).toEqual(renewed);
    expect(await s.lookup(cookie(id))).toMatchObject({ state: 'live', renewDue: false, expired: false });
    expect(await dump()).not.toContain(next);

    await s.end(cookie(id), 'the identity provider refused to renew the sign-in (invalid_grant)');
    expect(await s.lookup(cookie(id))).toEqual({
      state: 'ended',
      why: 'the identity provider refused to renew the sign-in (invalid_grant)',
    });
    expect(await s.claimRenewal(cookie(id))).toBeUndefined();
    // Kept a while for its browser to learn why, then swept.
    await s.sweep();
    expect(await s.lookup(cookie(id))).toMatchObject({ state: 'ended' });
    await db().query(
      "UPDATE collector_web_sessions SET ends_at = now() - interval '11 minutes' WHERE ended IS NOT NULL",
    );
    await s.sweep();
    expect(await s.lookup(cookie(id))).toBeUndefined();
  });

  it('a session is who signed in until exp, judged by the store’s clock; expired rows are swept', async () => {
    const s = new WebSessions(db());
    const live = await s.open(dora, 'dora', now() + 600);
    const gone = await s.open(dora, 'dora', now() - 1);
    expect(await s.callerOf(cookie(live))).toEqual(dora);
    expect(await s.callerOf(cookie(gone))).toBeUndefined();
    expect(await s.callerOf(cookie(`${live}x`))).toBeUndefined();
    expect(await s.callerOf(undefined)).toBeUndefined();
    const count = async () =>
      Number((await db().query<{ n: number }>('SELECT count(*)::int AS n FROM collector_web_sessions'))[0].n);
    const before = await count();
    expect(await s.sweep()).toBeGreaterThanOrEqual(1);
    expect(await count()).toBe(before - 1);
    expect(await s.callerOf(cookie(live))).toEqual(dora);
    await s.close(cookie(live));
    expect(await s.callerOf(cookie(live))).toBeUndefined();
  });

  it('a sign-in in flight is taken once, and not after its time', async () => {
    const s = new WebSessions(db());
    const login = { verifier: 'v'.repeat(43), nonce: 'n'.repeat(43), returnTo: '/#approvals' };
    const state = await s.begin(login, 60_000, '192.0.2.1');
    expect(await s.consume(state)).toEqual(login);
    expect(await s.consume(state)).toBeUndefined();
    const stale = await s.begin(login, -1000, '192.0.2.1');
    expect(await s.consume(stale)).toBeUndefined();
    await s.begin(login, -1000, '192.0.2.1');
    expect(await s.sweep()).toBe(1);
  });

  it('past the cap a flood from one source evicts its own sign-ins, not those of others', async () => {
    await db().query('DELETE FROM collector_web_logins');
    const s = new WebSessions(db(), 5);
    const login = (who: string) => ({ verifier: `v-${who}`, nonce: `n-${who}`, returnTo: `/#${who}` });
    const early = await s.begin(login('early'), 60_000, '198.51.100.7');
    const mine = await s.begin(login('flood-0'), 60_000, '203.0.113.9');
    const other = await s.begin(login('other'), 60_000, '2001:db8:1:2::/64');
    for (let i = 1; i <= 12; i++) await s.begin(login(`flood-${i}`), 60_000, '203.0.113.9');
    const rows = await db().query<{ source: string; n: number }>(
      'SELECT source, count(*)::int AS n FROM collector_web_logins GROUP BY source ORDER BY source',
    );
    expect(rows.map((r) => [r.source, Number(r.n)])).toEqual([
      ['198.51.100.7', 1],
      ['2001:db8:1:2::/64', 1],
      ['203.0.113.9', 3],
    ]);
    expect(await s.consume(early)).toEqual(login('early'));
    expect(await s.consume(other)).toEqual(login('other'));
    expect(await s.consume(mine)).toBeUndefined();
  });
}

describe('web sessions in the PostgreSQL store', () => {
  const t = useTestStore();
  sessionsOn(() => t.store.db);
});

describe('web sessions in the embedded store (PGlite)', () => {
  let db: SqlClient | undefined;
  beforeAll(async () => {
    db = await openPglite();
    await migrate(db);
  }, 60_000);
  afterAll(async () => {
    await db?.close();
  });
  sessionsOn(() => {
    if (!db) throw new Error('opened in beforeAll');
    return db;
  });
});
