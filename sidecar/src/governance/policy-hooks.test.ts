import { mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestIdp, type TestIdp } from '../../../test/governance/oidc-provider.js';
import { createPolicySource, type PolicySource } from '../policy-source/index.js';
import type { AuthRequest } from '../proxy/hooks.js';
import { createPolicyHooks } from './policy-hooks.js';
import { compileSidecarPolicy } from './start-governed-sidecar.js';

const doc = (name: string, auth: string) => `apiVersion: pgwarden.dev/v1alpha1
kind: DatabaseAccessPolicy
metadata: {name: ${name}}
spec:
  database: {host: db, name: app}
  authentication: ${auth}
  rules: [{name: all-reads, action: allow, statements: [select]}]
`;
const req = (password?: string): AuthRequest => ({
  startup: { user: 'a', database: 'app', params: {} },
  client: { address: '127.0.0.1', port: 1 },
  password,
});

let idp: TestIdp;
let source: PolicySource<any>;
let file: string;
beforeAll(async () => {
  idp = await startTestIdp();
  file = join(mkdtempSync(join(tmpdir(), 'pgwarden-hooks-')), 'p.yaml');
  writeFileSync(file, doc('p', '{mode: workload}'));
  source = createPolicySource({ path: file, compile: compileSidecarPolicy, pollMs: 0 });
  source.start();
});
afterAll(async () => {
  source.close();
  await idp.close();
});

describe('createPolicyHooks', () => {
  it('follows the policy: authentication mode switches on reload, sessions see the new rules', async () => {
    const hooks = await createPolicyHooks({
      source,
      oidc: { ca: idp.ca },
      env: { PGWARDEN_POD_SERVICE_ACCOUNT: 'sa' },
    });
    expect(hooks.ready?.()).toBe(true);
    expect(hooks.needsPassword).toBe(false);
    expect(await hooks.authenticate(req())).toEqual({ ok: true, identity: { serviceAccount: 'sa', groups: [] } });

    writeFileSync(`${file}.tmp`, doc('p', `{mode: oidc, oidc: {issuer: "${idp.issuer}", audience: pgwarden}}`));
    renameSync(`${file}.tmp`, file);
    expect(source.reload()).toMatchObject({ type: 'policy.loaded' });
    expect(hooks.needsPassword).toBe(true);
    expect(await hooks.authenticate(req())).toMatchObject({ ok: false, code: '28P01', reason: 'no_token' });
    const ok = await hooks.authenticate(req(await idp.sign({ sub: 'u1', groups: ['g'] })));
    expect(ok).toEqual({ ok: true, identity: { serviceAccount: 'sa', user: 'u1', groups: ['g'], issuer: idp.issuer } });
  });

  it('with several policies, a listener serves only its own by name', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgwarden-hooks2-'));
    writeFileSync(join(dir, 'a.yaml'), doc('a', '{mode: workload}'));
    writeFileSync(join(dir, 'b.yaml'), doc('b', '{mode: workload}'));
    const two = createPolicySource({ path: dir, compile: compileSidecarPolicy, pollMs: 0 });
    two.start();
    try {
      expect((await createPolicyHooks({ source: two, policyName: 'b' })).policy()?.policy.name).toBe('b');
      const unnamed = await createPolicyHooks({ source: two });
      expect(unnamed.ready?.()).toBe(false);
      expect(await unnamed.authenticate(req())).toMatchObject({ ok: false, code: '57P03', reason: 'policy_not_ready' });
    } finally {
      two.close();
    }
  });
});
