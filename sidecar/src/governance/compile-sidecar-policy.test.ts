import { describe, expect, it } from 'vitest';
import { compileSidecarPolicy } from './start-governed-sidecar.js';

const policy = (auth: string) => ({
  name: 'p.yaml',
  text: `apiVersion: pgwarden.dev/v1alpha1
kind: DatabaseAccessPolicy
metadata: {name: p}
spec:
  database: {host: db, name: app}
  authentication: ${auth}
`,
});

describe('compileSidecarPolicy', () => {
  it('accepts what the sidecar can enforce', () => {
    expect(compileSidecarPolicy([policy('{mode: workload}')]).names).toEqual(['p']);
    expect(
      compileSidecarPolicy([policy('{mode: oidc, oidc: {issuer: "https://idp.example", audience: pg, clockSkew: 5m}}')])
        .names,
    ).toEqual(['p']);
  });

  it('rejects at load time an identity setup the schema allows but the verifier refuses (skew above 5 minutes)', () => {
    expect(() =>
      compileSidecarPolicy([
        policy('{mode: oidc, oidc: {issuer: "https://idp.example", audience: pg, clockSkew: 10m}}'),
      ]),
    ).toThrow(/clock skew must be between 0 and 300 seconds/);
  });
});
