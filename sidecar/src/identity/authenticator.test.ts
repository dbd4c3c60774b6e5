import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestIdp, type TestIdp } from '../../../test/governance/oidc-provider.js';
import type { AuthRequest } from '../proxy/hooks.js';
import { type AuthEvent, createAuthenticator } from './authenticator.js';
import { readWorkloadIdentity } from './workload.js';

const podEnv = {
  PGWARDEN_POD_NAMESPACE: 'agents',
  PGWARDEN_POD_NAME: 'analytics-7d9f',
  PGWARDEN_POD_SERVICE_ACCOUNT: 'analytics-agent',
  PGWARDEN_NODE_NAME: 'node-3',
};
const req = (password?: string): AuthRequest => ({
  startup: { user: 'agent', database: 'app', params: {} },
  client: { address: '127.0.0.1', port: 50000 },
  password,
});

describe('workload identity', () => {
  it('reads the downward API env vars, falling back to podinfo files for namespace and name', () => {
    expect(readWorkloadIdentity(podEnv)).toEqual({
      namespace: 'agents',
      pod: 'analytics-7d9f',
      serviceAccount: 'analytics-agent',
      node: 'node-3',
    });
    const dir = mkdtempSync(join(tmpdir(), 'podinfo-'));
    writeFileSync(join(dir, 'namespace'), 'from-file\n');
    writeFileSync(join(dir, 'name'), 'pod-from-file');
    expect(readWorkloadIdentity({ PGWARDEN_PODINFO_DIR: dir, PGWARDEN_POD_SERVICE_ACCOUNT: 'sa' })).toEqual({
      namespace: 'from-file',
      pod: 'pod-from-file',
      serviceAccount: 'sa',
    });
    expect(readWorkloadIdentity({ PGWARDEN_PODINFO_DIR: dir, PGWARDEN_POD_NAMESPACE: 'env-wins' }).namespace).toBe(
      'env-wins',
    );
    expect(readWorkloadIdentity({ PGWARDEN_POD_NAME: '  ' })).toEqual({});
  });

  it('workload mode asks no password and identifies every client as the pod', async () => {
    const events: AuthEvent[] = [];
    const auth = createAuthenticator({ mode: 'workload' }, { env: podEnv, onEvent: (e) => events.push(e) });
    expect(auth.needsPassword).toBe(false);
    expect(await auth.authenticate(req())).toEqual({
      ok: true,
      identity: {
        namespace: 'agents',
        pod: 'analytics-7d9f',
        serviceAccount: 'analytics-agent',
        node: 'node-3',
        groups: [],
      },
    });
    expect(events.map((e) => e.type)).toEqual(['auth.accepted']);
  });
});

describe('oidc authenticator', () => {
  let idp: TestIdp;
  beforeAll(async () => {
    idp = await startTestIdp();
  });
  afterAll(() => idp.close());

  it('merges the token subject with the pod identity, and refuses with 28P01 without leaking the token', async () => {
    const events: AuthEvent[] = [];
    const auth = createAuthenticator(
      { mode: 'oidc', oidc: { issuer: idp.issuer, audience: 'pgwarden', ca: idp.ca } },
      { env: podEnv, onEvent: (e) => events.push(e) },
    );
    expect(auth.needsPassword).toBe(true);
    const ok = await auth.authenticate(req(await idp.sign({ sub: 'bob', groups: ['data-team'] })));
    expect(ok).toEqual({
      ok: true,
      identity: {
        namespace: 'agents',
        pod: 'analytics-7d9f',
        serviceAccount: 'analytics-agent',
        node: 'node-3',
        user: 'bob',
        groups: ['data-team'],
        issuer: idp.issuer,
      },
    });
    const expired = await idp.sign({ exp: Math.floor(Date.now() / 1000) - 3600 });
    const out = await auth.authenticate(req(expired));
    expect(out).toEqual({
      ok: false,
      code: '28P01',
      message: 'pgwarden: OIDC token has expired',
      reason: 'token_expired',
    });
    expect(await auth.authenticate(req())).toMatchObject({ ok: false, code: '28P01', reason: 'no_token' });
    expect(events.map((e) => e.type)).toEqual(['auth.accepted', 'auth.refused', 'auth.refused']);
    const logged = JSON.stringify(events);
    for (const part of expired.split('.')) expect(logged).not.toContain(part);
  });
});
