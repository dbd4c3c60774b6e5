import { createPublicKey } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream } from '@nats-io/jetstream';
import { type ApprovalRequestMessage, approvalSubject } from '@pgwarden/policy';
import { base64url, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeSigningKey, startTestIdp, type TestIdp } from '../../test/governance/oidc-provider.js';
import { sha256Hex } from './auth/token-file.js';
import type { Collector, CollectorOptions } from './collector.js';
import { approvalRequest } from './testing/approval-messages.js';
import { type ApprovalsFixture, startApprovalsFixture, untilApproverRoutesServe } from './testing/approvals-fixture.js';
import { waitFor } from './testing/wait-for.js';

const ALICE = 'tok-alice-static-0123456789';
const RITA = 'tok-rita-static-0123456789';

/**
 * OIDC tokens as the collector API's bearer tokens, against a real HTTPS identity provider (discovery + JWKS), a
 * real collector, nats-server and PostgreSQL. alice has a static token only; dora and olga sign in through the
 * identity provider only (dora bound by `sub`, olga by `sub` and by e-mail); rhea reads through it.
 */
describe('OIDC bearer tokens on the collector API', () => {
  let idp: TestIdp;
  let fx: ApprovalsFixture;
  let dir: string;
  /** OIDC by `sub`, the default JWKS refetch cooldown (30 s), a readers file. */
  let bySub: Collector;
  /** OIDC by `email`, no cooldown or retry wait: rotation and an unreachable issuer. */
  let byEmail: Collector;

  const approversYaml = (issuer: string) =>
    [
      `- {name: alice, groups: [dba], tokenSha256: ${sha256Hex(ALICE)}}`,
      `- {name: dora, groups: [dba], oidc: [{issuer: "${issuer}", subject: u-dora}]}`,
      `- {name: olga, groups: [dba], oidc: [{issuer: "${issuer}", subject: u-olga}, {issuer: "${issuer}", subject: olga@example.com}]}`,
      '',
    ].join('\n');
  const readersYaml = (issuer: string) =>
    [
      `- {name: rita, tokenSha256: ${sha256Hex(RITA)}}`,
      `- {name: rhea, namespaces: [agents], oidc: [{issuer: "${issuer}", subject: u-rhea}]}`,
      '',
    ].join('\n');

  const api = async (c: Collector, path: string, token?: string, init: { method?: string; body?: unknown } = {}) => {
    const r = await fetch(`${c.url}${path}`, {
      method: init.method ?? 'GET',
      headers: token ? { authorization: `Bearer ${token}` } : {},
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
    });
    const text = await r.text();
    return { status: r.status, text, body: JSON.parse(text) as any };
  };
  const decide = (c: Collector, id: string, token: string) =>
    api(c, `/api/v1/approvals/${id}`, token, { method: 'POST', body: { decision: 'approve' } });
  const held = async (identity: ApprovalRequestMessage['identity'], over: Partial<ApprovalRequestMessage> = {}) => {
    const r = approvalRequest({ identity, ...over });
    await jetstream(fx.nc).publish(approvalSubject('request', r.id), JSON.stringify(r));
    for (const c of [bySub, byEmail])
      await waitFor(async () => (await api(c, `/api/v1/approvals/${r.id}`, ALICE)).status === 200);
    return r;
  };

  beforeAll(async () => {
    idp = await startTestIdp();
    fx = await startApprovalsFixture(approversYaml(idp.issuer), ALICE);
    writeFileSync(fx.approversFile, approversYaml(idp.issuer));
    dir = mkdtempSync(join(tmpdir(), 'pgwarden-oidc-login-'));
    const readersFile = join(dir, 'readers.yaml');
    writeFileSync(readersFile, readersYaml(idp.issuer));
    const oidc = { issuer: idp.issuer, audience: ['pgwarden'], caFile: idp.caFile };
    const start = async (over: Partial<CollectorOptions>) => {
      const c = await fx.start({ read: { readersFile }, ...over });
      await untilApproverRoutesServe(c, ALICE);
      return c;
    };
    bySub = await start({ oidc });
    byEmail = await start({ oidc: { ...oidc, usernameClaim: 'email', jwksCooldownMs: 0, retryMs: 0 } });
  });
  afterAll(async () => {
    await bySub?.stop();
    await byEmail?.stop();
    await fx?.stop();
    await idp?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('a valid token of a bound approver approves, as that approver; the same token reads and controls', async () => {
    const r = await held({ namespace: 'agents', serviceAccount: 'analytics', user: 'ana', groups: [] });
    const token = await idp.sign({ sub: 'u-dora' });
    const res = await decide(bySub, r.id, token);
    expect([res.status, res.body.state, res.body.decision?.by?.name]).toEqual([200, 'decided', 'dora']);
    expect((await api(bySub, '/api/v1/sessions', token)).status).toBe(200);
    expect((await api(bySub, '/api/v1/suspensions', token)).status).toBe(200);
    // The live stream: headers are enough, it never ends by itself.
    const ac = new AbortController();
    const live = await fetch(`${bySub.url}/api/v1/stream`, {
      headers: { authorization: `Bearer ${token}` },
      signal: ac.signal,
    });
    expect([live.status, live.headers.get('content-type')]).toEqual([200, expect.stringMatching(/event-stream/)]);
    ac.abort();
  });

  it('a bound reader reads through the identity provider but may not decide; an unbound subject gets 403', async () => {
    const rhea = await idp.sign({ sub: 'u-rhea' });
    expect((await api(bySub, '/api/v1/sessions', rhea)).status).toBe(200);
    const notApprover = await api(bySub, '/api/v1/approvals', rhea);
    expect([notApprover.status, notApprover.body.error.code]).toEqual([403, 'not_an_approver']);

    const nobody = await idp.sign({ sub: 'u-nobody', groups: ['dba'] });
    for (const [path, code] of [
      ['/api/v1/approvals', 'not_an_approver'],
      ['/api/v1/suspensions', 'not_an_approver'],
      ['/api/v1/sessions', 'not_a_reader'],
    ]) {
      const res = await api(bySub, path, nobody);
      expect([res.status, res.body.error.code], path).toEqual([403, code]);
      expect(res.body.error.message).toContain('u-nobody');
    }
    // A name the file gives is no binding: only `oidc` entries are.
    const res = await api(bySub, '/api/v1/approvals', await idp.sign({ sub: 'alice' }));
    expect(res.status).toBe(403);
    // Groups in the token stand in for nothing (no --oidc-groups-claim, and none would make an entry either).
    const r = await held({ namespace: 'agents', serviceAccount: 'analytics', user: 'ana', groups: [] });
    expect((await decide(bySub, r.id, nobody)).status).toBe(403);
  });

  it('refuses expired, wrong-audience, wrong-issuer, badly signed, alg none and HMAC tokens with 401, never echoing them', async () => {
    const now = Math.floor(Date.now() / 1000);
    const other = await makeSigningKey('k1');
    const valid = await idp.sign({ sub: 'u-dora' });
    const [h, p] = valid.split('.');
    const pem = createPublicKey({ key: idp.published[0].publicJwk as any, format: 'jwk' }).export({
      type: 'spki',
      format: 'pem',
    });
    const hmac = await new SignJWT({ iss: idp.issuer, aud: 'pgwarden', sub: 'u-dora', iat: now, exp: now + 300 })
      .setProtectedHeader({ alg: 'HS256', kid: 'k1' })
      .sign(new TextEncoder().encode(pem as string));
    const none = `${base64url.encode(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${p}.`;
    const cases: [string, string][] = [
      [await idp.sign({ sub: 'u-dora', iat: now - 600, exp: now - 300 }), 'token_expired'],
      [await idp.sign({ sub: 'u-dora', aud: 'someone-else' }), 'wrong_audience'],
      [await idp.sign({ sub: 'u-dora', iss: 'https://evil.example' }), 'wrong_issuer'],
      [await idp.sign({ sub: 'u-dora' }, other), 'bad_signature'],
      [`${h}.${p}.${base64url.encode('x'.repeat(256))}`, 'bad_signature'],
      [none, 'alg_not_allowed'],
      [hmac, 'alg_not_allowed'],
    ];
    const r = await held({ namespace: 'agents', serviceAccount: 'analytics', user: 'ana', groups: [] });
    for (const [token, reason] of cases) {
      for (const res of [
        await api(bySub, '/api/v1/approvals', token),
        await decide(bySub, r.id, token),
        await api(bySub, '/api/v1/sessions', token),
      ]) {
        expect([res.status, res.body.error.code], reason).toEqual([401, 'invalid_token']);
        expect(res.body.error.message, reason).toContain(reason);
        expect(res.text).not.toContain(token.split('.')[1]);
      }
    }
    expect((await api(bySub, `/api/v1/approvals/${r.id}`, ALICE)).body.state).toBe('pending');
  });

  it('an unknown kid is refused and refetches the keys at most once per cooldown; a rotated key is found', async () => {
    const first = idp.published[0];
    try {
      expect((await api(bySub, '/api/v1/approvals', await idp.sign({ sub: 'u-dora' }))).status).toBe(200);
      const before = idp.fetches.jwks;
      const stray = await makeSigningKey('k-stray');
      for (let i = 0; i < 5; i++) {
        const res = await api(bySub, '/api/v1/approvals', await idp.sign({ sub: 'u-dora' }, stray));
        expect([res.status, res.body.error.message]).toEqual([401, expect.stringContaining('unknown_key')]);
      }
      // Five made-up kids within bySub's 30 s cooldown: at most one refetch (one only if its last fetch was longer ago).
      expect(idp.fetches.jwks - before).toBeLessThanOrEqual(1);

      // byEmail (no cooldown): the identity provider rotates to k2; the first k2 token makes it refetch.
      expect(
        (await api(byEmail, '/api/v1/approvals', await idp.sign({ sub: 'u-olga', email: 'olga@example.com' }))).status,
      ).toBe(200);
      const k2 = await makeSigningKey('k2', 'ES256');
      idp.published = [k2];
      const fetched = idp.fetches.jwks;
      const rotated = await api(
        byEmail,
        '/api/v1/approvals',
        await idp.sign({ sub: 'u-olga', email: 'olga@example.com' }, k2),
      );
      expect(rotated.status).toBe(200);
      expect(idp.fetches.jwks).toBe(fetched + 1);
    } finally {
      idp.published = [first];
    }
  });

  it('four eyes: an approver signed in through the identity provider never approves what the same issuer and user asked for', async () => {
    // dora's binding is her sub: a request by u-dora at this issuer is hers.
    const own = await held({
      namespace: 'agents',
      serviceAccount: 'analytics',
      user: 'u-dora',
      issuer: idp.issuer,
      groups: [],
    });
    const self = await decide(bySub, own.id, await idp.sign({ sub: 'u-dora' }));
    expect([self.status, self.body.error.code]).toEqual([403, 'self_approval']);

    // byEmail matches olga's binding by e-mail; the token's sub is still hers, whatever the file binds: a sidecar that
    // records users by sub asked as u-olga2, whom no binding names.
    const token = await idp.sign({ sub: 'u-olga2', email: 'olga@example.com', email_verified: true });
    const asked = await held({
      namespace: 'agents',
      serviceAccount: 'analytics',
      user: 'u-olga2',
      issuer: idp.issuer,
      groups: [],
    });
    const refused = await decide(byEmail, asked.id, token);
    expect([refused.status, refused.body.error.code]).toEqual([403, 'self_approval']);
    // Someone else's request she may decide.
    const other = await held({
      namespace: 'agents',
      serviceAccount: 'analytics',
      user: 'ana',
      issuer: idp.issuer,
      groups: [],
    });
    const ok = await decide(byEmail, other.id, token);
    expect([ok.status, ok.body.decision?.by?.name]).toEqual([200, 'olga']);
    // The sidecar of that request reads no approver identities, so the decision names none.
    expect(ok.body.decision.by).toStrictEqual({ name: 'olga', groups: ['dba'] });
    // One that does is told who olga is: what the file binds and the token she signed in with (its sub and e-mail),
    // so that its own four-eyes check sees u-olga2 too.
    const reads = await held(
      { namespace: 'agents', serviceAccount: 'analytics', user: 'ana', issuer: idp.issuer, groups: [] },
      { approverIdentities: true },
    );
    const told = await decide(byEmail, reads.id, token);
    expect(told.status).toBe(200);
    expect(told.body.decision.by).toStrictEqual({
      name: 'olga',
      groups: ['dba'],
      oidc: [
        { issuer: idp.issuer, subject: 'u-olga' },
        { issuer: idp.issuer, subject: 'olga@example.com' },
        { issuer: idp.issuer, subject: 'u-olga2' },
      ],
    });
  });

  it('while the issuer cannot be reached, tokens get 503 and static tokens keep working', async () => {
    // A collector that has not fetched the keys yet meets an identity provider that answers 500.
    const c = await fx.start({
      read: { readersFile: join(dir, 'readers.yaml') },
      oidc: { issuer: idp.issuer, audience: ['pgwarden'], caFile: idp.caFile, retryMs: 0 },
    });
    try {
      await untilApproverRoutesServe(c, ALICE);
      idp.behaviour = { discovery: 'error', jwks: 'error' };
      const token = await idp.sign({ sub: 'u-dora' });
      for (const path of ['/api/v1/approvals', '/api/v1/sessions', '/api/v1/suspensions']) {
        const res = await api(c, path, token);
        expect([res.status, res.body.error.code], path).toEqual([503, 'idp_unavailable']);
        expect(res.text).not.toContain(token.split('.')[1]);
        expect((await api(c, path, ALICE)).status, path).toBe(200);
      }
      expect((await api(c, '/api/v1/sessions', RITA)).status).toBe(200);
      // Back up: the same token is accepted without a restart.
      idp.behaviour = { discovery: 'ok', jwks: 'ok' };
      expect((await api(c, '/api/v1/approvals', token)).status).toBe(200);
    } finally {
      idp.behaviour = { discovery: 'ok', jwks: 'ok' };
      await c.stop();
    }
  });
});
