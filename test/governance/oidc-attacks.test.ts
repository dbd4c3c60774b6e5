import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGovernanceDb, type GovernanceDb } from './governance-db.js';
import { errorOf, type Governed, startGoverned } from './governed-sidecar.js';
import { makeSigningKey, startTestIdp, type TestIdp } from './oidc-provider.js';

// The agent's side of OIDC login through the real sidecar, a real HTTPS identity provider and real PostgreSQL:
// tokens the identity provider really signed, shaped so that a careless reading of their claims lets the agent
// past a deny rule, and identity providers that fail while the agent keeps connecting.
let db: GovernanceDb;
let idp: TestIdp;
let g: Governed;
let nested: Governed;
let byEmail: Governed;
const logged: string[] = [];
const logger = {
  info: (o: object, m?: string) => void logged.push(JSON.stringify([o, m])),
  warn: (o: object, m?: string) => void logged.push(JSON.stringify([o, m])),
  error: (o: object, m?: string) => void logged.push(JSON.stringify([o, m])),
  debug: (o: object, m?: string) => void logged.push(JSON.stringify([o, m])),
};

const policy = (name: string, oidc: Record<string, unknown>) => ({
  apiVersion: 'pgwarden.dev/v1alpha1',
  kind: 'DatabaseAccessPolicy',
  metadata: { name, namespace: 'agents' },
  spec: {
    database: { host: 'unused', name: 'app' },
    authentication: { mode: 'oidc', oidc: { issuer: idp.issuer, audience: 'pgwarden', ...oidc } },
    role: db.roles.writer,
    defaultAction: 'allow',
    rules: [{ name: 'no-contractors', action: 'deny', subjects: { groups: ['contractors'] } }],
    guardrails: { blockedFunctions: [] },
  },
});

beforeAll(async () => {
  [db, idp] = await Promise.all([createGovernanceDb('oidcatk'), startTestIdp()]);
  [g, nested] = await Promise.all([
    startGoverned(db.name, policy('flat', {}), {
      governance: { oidc: { ca: idp.ca, discoveryRetryMs: 500, jwksCooldownMs: 0, jwksMinAgeMs: 500 } },
      sidecar: { logger },
    }),
    startGoverned(db.name, policy('nested', { groupsClaim: 'realm_access.roles', maxTokenLifetime: '2h' }), {
      governance: { oidc: { ca: idp.ca } },
    }),
  ]);
  const emailPolicy = policy('by-email', { usernameClaim: 'email' });
  emailPolicy.spec.defaultAction = 'deny';
  emailPolicy.spec.rules = [
    { name: 'no-boss', action: 'deny', subjects: { users: ['boss@example.com', 'boss@gmail.com'] } } as never,
    { name: 'alice-reads', action: 'allow', subjects: { users: ['alice@example.com'] } } as never,
  ];
  byEmail = await startGoverned(db.name, emailPolicy, { governance: { oidc: { ca: idp.ca } } });
});
afterAll(async () => {
  await g?.close();
  await nested?.close();
  await byEmail?.close();
  await idp?.close();
  await db?.drop();
});

const loginError = (gov: Governed, password: string) =>
  gov.client({ password }).then(
    async (c) => {
      await c.end();
      return undefined;
    },
    (e: Error & { code?: string }) => e,
  );

describe('claims are read as strictly as the deny rules need', () => {
  it('a user whose groups the token only refers to (groups overage) is refused, not let past deny rules on groups', async () => {
    const overage = await idp.sign({
      sub: 'contractor-1',
      _claim_names: { groups: 'src1' },
      _claim_sources: { src1: { endpoint: 'https://graph.example/v1.0/users/contractor-1/getMemberObjects' } },
    });
    const hasgroups = await idp.sign({ sub: 'contractor-2', hasgroups: true });
    for (const token of [overage, hasgroups]) {
      const err = await loginError(g, token);
      expect(err?.code).toBe('28P01');
      expect(err?.message).toMatch(/claim "groups" is not in the token/);
    }
    // The same user with the groups in the token is denied by the rule; without any groups claim, allowed.
    const c = await g.client({ password: await idp.sign({ sub: 'contractor-1', groups: ['contractors'] }) });
    expect((await errorOf(c, 'SELECT 1'))?.message).toMatch(/denied by rule "no-contractors"/);
    const d = await g.client({ password: await idp.sign({ sub: 'employee-1' }) });
    expect((await d.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('a dotted groupsClaim reads the nested claim (Keycloak realm_access.roles), so its deny rules apply', async () => {
    const c = await nested.client({
      password: await idp.sign({ sub: 'contractor-3', realm_access: { roles: ['contractors'] } }),
    });
    expect((await errorOf(c, 'SELECT 1'))?.message).toMatch(/denied by rule "no-contractors"/);
    const err = await loginError(nested, await idp.sign({ realm_access: { roles: 'contractors' } as never, sub: 'x' }));
    expect(err).toBeUndefined(); // a space-separated string is a list of one, as at the top level
  });

  it('refuses a token issued in the future (iat beyond the clock skew)', async () => {
    const err = await loginError(g, await idp.sign({ iat: Math.floor(Date.now() / 1000) + 3600 }));
    expect(err?.code).toBe('28P01');
    expect(err?.message).toMatch(/iat is in the future/);
  });
});

describe('a user name the user can edit (usernameClaim: email)', () => {
  const as = async (email: string) =>
    byEmail.client({ password: await idp.sign({ sub: `id-${email.length}`, email, email_verified: true }) });

  it('cannot step around a deny rule by spelling the address differently', async () => {
    for (const email of [
      'boss@example.com',
      'Boss@Example.COM',
      'boss+ci@example.com',
      'boss@example.com.',
      'b\u043ess@example.com', // Cyrillic о
      '\uff42\uff4f\uff53\uff53@example.com', // fullwidth
      'bo\u200bss@example.com', // zero-width space
      ' boss@example.com',
      'b\u0585ss@example.com', // Armenian օ, which only the collector's table of look-alikes had
      'b\u03c3ss@example.com', // Greek σ and Cherokee Ꮟ: Unicode's confusables (UTS #39) read them as o and b
      '\u13cfoss@example.com',
      'B0SS@example.com', // a zero for the O, as the collector reads names
      'bo.ss@googlemail.com', // the same Gmail mailbox as boss@gmail.com
    ]) {
      const c = await as(email);
      expect((await errorOf(c, 'SELECT 1'))?.message, JSON.stringify(email)).toMatch(/denied by rule "no-boss"/);
      await c.end();
    }
  });

  it('allow rules still match exactly: another spelling of an allowed name is not let in', async () => {
    const alice = await as('alice@example.com');
    expect((await alice.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    await alice.end();
    for (const email of ['Alice@example.com', 'alice+x@example.com', '\u0430lice@example.com', 'aIice@example.com']) {
      const c = await as(email);
      expect((await errorOf(c, 'SELECT 1'))?.message, JSON.stringify(email)).toMatch(/by the default action/);
      await c.end();
    }
  });
});

describe('token lifetime and withdrawn keys', () => {
  it('refuses a token valid for a year with 28P01; the policy maxTokenLifetime replaces the 24h default', async () => {
    const T = Math.floor(Date.now() / 1000);
    for (const gov of [g, nested]) {
      const err = await loginError(gov, await idp.sign({ sub: 'forever', iat: T, exp: T + 365 * 86400 }));
      expect(err?.code).toBe('28P01');
      expect(err?.message).toMatch(/^pgwarden: OIDC token lifetime 365d \(exp - iat\) exceeds the maximum of/);
    }
    const threeHours = await idp.sign({ sub: 'three-hours', iat: T, exp: T + 3 * 3600 });
    expect(await loginError(g, threeHours)).toBeUndefined();
    const err = await loginError(nested, threeHours);
    expect(err?.code).toBe('28P01');
    expect(err?.message).toMatch(/lifetime 3h \(exp - iat\) exceeds the maximum of 2h/);
    expect(g.events).toContainEqual(
      expect.objectContaining({ type: 'login.refused', reason: 'token_lifetime_too_long' }),
    );
  });

  it('a key the identity provider withdraws stops letting agents log in once the JWKS max-age has passed', async () => {
    const old = idp.published;
    const k3 = await makeSigningKey('k3');
    idp.published = [...old, k3];
    idp.jwksHeaders = { 'cache-control': 'max-age=1' };
    try {
      const token = await idp.sign({ sub: 'k3-user' }, k3);
      // An unknown kid refetches (cooldown 0 here) and picks up the one-second max-age.
      expect(await loginError(g, token)).toBeUndefined();
      idp.published = old;
      const open = await g.client({ password: token });
      await new Promise((r) => setTimeout(r, 1100));
      const err = await loginError(g, token);
      expect(err?.code).toBe('28P01');
      expect(err?.message).toBe('pgwarden: OIDC token is signed with a key the identity provider does not publish');
      // Identity is fixed at login: a session opened before the key was withdrawn goes on (docs/identity.md).
      expect((await open.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
      await open.end();
      expect(await loginError(g, await idp.sign({ sub: 'k1-user' }))).toBeUndefined();
    } finally {
      idp.published = old;
      idp.jwksHeaders = {};
    }
  });
});

describe('an identity provider that fails while the agent keeps connecting', () => {
  it('refuses new logins promptly, asks the failing JWKS endpoint once per retry interval, and open sessions go on', async () => {
    const open = await g.client({ password: await idp.sign({ sub: 'already-in' }) });
    const rotated = await makeSigningKey('rotated');
    const old = idp.published;
    idp.published = [...old, rotated];
    idp.behaviour.jwks = 'error';
    try {
      const token = await idp.sign({ sub: 'new-key' }, rotated);
      const before = idp.fetches.jwks;
      const t0 = Date.now();
      const errs = await Promise.all(Array.from({ length: 20 }, () => loginError(g, token)));
      expect(Date.now() - t0).toBeLessThan(5000);
      for (const err of errs) {
        expect(err?.code).toBe('28000');
        expect(err?.message).toMatch(/cannot verify OIDC token/);
      }
      expect(idp.fetches.jwks - before).toBe(1);
      expect((await open.query('SELECT 2 AS two')).rows).toEqual([{ two: 2 }]);
      // Keys already held keep verifying.
      await (await g.client({ password: await idp.sign({ sub: 'old-key' }) })).end();
      idp.behaviour.jwks = 'ok';
      await new Promise((r) => setTimeout(r, 550));
      await (await g.client({ password: token })).end();
    } finally {
      idp.behaviour.jwks = 'ok';
      idp.published = old;
    }
  });

  it('a login waiting on a stuck discovery answer fails after the request timeout, not at authentication_timeout', async () => {
    const stuck = await startTestIdp();
    stuck.behaviour.discovery = 'trickle';
    const s = await startGoverned(
      db.name,
      {
        ...policy('stuck', {}),
        spec: {
          ...policy('stuck', {}).spec,
          authentication: { mode: 'oidc', oidc: { issuer: stuck.issuer, audience: 'pgwarden' } },
        },
      },
      { governance: { oidc: { ca: stuck.ca, timeoutMs: 800 } } },
    );
    try {
      const t0 = Date.now();
      const err = await loginError(s, await stuck.sign({}));
      expect(Date.now() - t0).toBeLessThan(5000);
      expect(err?.code).toBe('28000');
      expect(err?.message).toMatch(/discovery failed/);
    } finally {
      await s.close();
      await stuck.close();
    }
  });
});

describe('the token is a secret', () => {
  it('appears in no audit event, governance event, log line or metric, refused or accepted', async () => {
    const tokens = [
      await idp.sign({ sub: 'secret-keeper', groups: ['data-team'] }),
      await idp.sign({ sub: 'secret-keeper', exp: Math.floor(Date.now() / 1000) - 600 }),
      await idp.sign({ sub: 'secret-keeper', aud: 'another-service' }),
      await idp.sign({ sub: 'secret-keeper' }, await makeSigningKey('k1')),
    ];
    for (const t of tokens) await loginError(g, t);
    const metrics = await g.gs.listeners[0].sidecar.metrics.registry.metrics();
    const recorded = JSON.stringify([g.audit.events, g.events, logged]) + metrics;
    expect(recorded).toContain('secret-keeper');
    for (const t of tokens) for (const part of t.split('.')) expect(recorded).not.toContain(part);
  });
});
