import { randomBytes } from 'node:crypto';
import { expect, it } from 'vitest';
import type { SqlClient } from '../store/sql-client.js';
import { onBothStores } from '../testing/test-store.js';
import { RefreshTokenSeal } from './refresh-token-seal.js';
import { DEFAULT_LIMITS, SESSION_COOKIE, type SessionEnd, WebSessions } from './web-sessions.js';

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

    await s.end(cookie(id), 'refresh_refused', 'the identity provider refused to renew the sign-in (invalid_grant)');
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
    const unseen = await s.open(dora, 'dora', now() - 1);
    expect(await s.callerOf(cookie(live))).toEqual(dora);
    expect(await s.callerOf(cookie(gone))).toBeUndefined();
    expect(await s.callerOf(cookie(`${live}x`))).toBeUndefined();
    expect(await s.callerOf(undefined)).toBeUndefined();
    const count = async () =>
      Number((await db().query<{ n: number }>('SELECT count(*)::int AS n FROM collector_web_sessions'))[0].n);
    const before = await count();
    expect(await s.sweep()).toBeGreaterThanOrEqual(1);
    // The one nobody asked for goes at once; the one whose browser was told it ended stays to tell it again.
    expect(await count()).toBe(before - 1);
    expect(await s.lookup(cookie(unseen))).toBeUndefined();
    expect(await s.lookup(cookie(gone))).toEqual({ state: 'ended', why: 'the sign-in expired with its ID token' });
    expect(await s.callerOf(cookie(live))).toEqual(dora);
    await s.close(cookie(live));
    expect(await s.callerOf(cookie(live))).toBeUndefined();
  });

  it('every end of a session is told once, whichever of two instances sees it end, saying why', async () => {
    const limits = { ...DEFAULT_LIMITS, seal: new RefreshTokenSeal(randomBytes(32)) };
    const [a, b] = [new WebSessions(db(), undefined, limits), new WebSessions(db(), undefined, limits)];
    const told: SessionEnd[] = [];
    for (const s of [a, b]) s.on('ended', (e) => told.push(e));
    const as = (subject: string, expiresAt: number, renew = false) =>
      a.open(
        { ...dora, subject },
        `entry-${subject}`,
        expiresAt,
        renew ? { refreshToken: `rt-${subject}`, nonce: 'n' } : undefined,
      );
    const age = async (id: string, column: string, by: string) =>
      db().query(
        `UPDATE collector_web_sessions SET ${column} = now() - interval '${by}' WHERE id_sha256 = (
           SELECT id_sha256 FROM collector_web_sessions WHERE subject = $1)`,
        [id],
      );
    const seen = [await as('u-expired', now() - 1), await as('u-aged', now() + 600), await as('u-idle', now() + 600)];
    await age('u-aged', 'ends_at', '1 second');
    await age('u-idle', 'last_seen_at', '2 hours');
    // Each seen by both at once, twice.
    await Promise.all(seen.flatMap((id) => [a, b, a, b].map((s) => s.lookup(cookie(id)))));
    const unseen = [await as('u-unseen-expired', now() - 1), await as('u-unseen-aged', now() + 600, true)];
    await age('u-unseen-aged', 'ends_at', '1 second');
    await Promise.all([a.sweep(), b.sweep()]);
    for (const id of unseen) expect(await a.lookup(cookie(id))).toBeUndefined();
    const out = await as('u-out', now() + 600);
    await Promise.all([a.close(cookie(out)), b.close(cookie(out))]);
    const refused = await as('u-refused', now() + 600, true);
    await Promise.all([
      a.end(cookie(refused), 'refresh_refused', 'the identity provider refused to renew the sign-in (invalid_grant)'),
      b.end(cookie(refused), 'refresh_refused', 'the identity provider refused to renew the sign-in (invalid_grant)'),
    ]);
    await b.close(cookie(refused));
    expect(told.filter((e) => e.subject !== dora.subject).sort((x, y) => x.subject.localeCompare(y.subject))).toEqual(
      [
        ['u-aged', 'max_age', 'the sign-in reached its maximum age (12h)'],
        ['u-expired', 'expired', 'the sign-in expired with its ID token'],
        ['u-idle', 'idle', 'the sign-in was unused for 1h'],
        ['u-out', 'signed_out', 'signed out'],
        ['u-refused', 'refresh_refused', 'the identity provider refused to renew the sign-in (invalid_grant)'],
        ['u-unseen-aged', 'max_age', 'the sign-in reached its maximum age (12h)'],
        ['u-unseen-expired', 'expired', 'the sign-in expired with its ID token'],
      ].map(([subject, reason, detail]) => ({
        reason,
        detail,
        entry: `entry-${subject}`,
        issuer: dora.issuer,
        subject,
      })),
    );
    // Each browser that comes back is told why (and the store is asked, not told again).
    for (const id of seen) expect(await b.lookup(cookie(id))).toMatchObject({ state: 'ended' });
    expect(told.filter((e) => e.subject !== dora.subject)).toHaveLength(7);
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

onBothStores('web sessions', sessionsOn);
