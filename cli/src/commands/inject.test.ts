/**
 * Contract between the injector and the sidecar CLI: the args the webhook puts into the injected container must
 * parse with `pgwarden sidecar` as it is today (an unknown or renamed flag fails here, not in a cluster).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_SIDECAR_CONFIG, mutatePod } from '@pgwarden/operator';
import type { DatabaseAccessPolicy } from '@pgwarden/policy';
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { BIN, BUILT } from '../testing/cli-process.js';
import { registerSidecar } from './sidecar.js';

const policy: DatabaseAccessPolicy = {
  apiVersion: 'pgwarden.dev/v1alpha1',
  kind: 'DatabaseAccessPolicy',
  metadata: { name: 'analytics', namespace: 'agents' },
  spec: {
    podSelector: { matchLabels: { app: 'analytics' } },
    database: {
      host: 'db',
      name: 'orders',
      caSecretRef: { name: 'ca', key: 'ca.crt' },
      credentialsSecretRef: { name: 'creds' },
    },
    listen: { port: 6432 },
  } as DatabaseAccessPolicy['spec'],
};

describe('injected sidecar args vs `pgwarden sidecar`', () => {
  it('every flag the webhook passes is a flag the sidecar command accepts, with the intended values', () => {
    const res = mutatePod(
      {
        metadata: { namespace: 'agents', labels: { app: 'analytics' } },
        spec: { containers: [{ name: 'a', image: 'x' }] },
      },
      [policy],
      { ...DEFAULT_SIDECAR_CONFIG, auditUrl: 'nats://nats.pgwarden:4222' },
    );
    if ('denied' in res) throw new Error(res.denied);
    const sidecar = (res.patch.find((p) => p.path === '/spec/initContainers') as { value: { args: string[] }[] })
      .value[0];
    const program = new Command('pgwarden').exitOverride();
    registerSidecar(program);
    const cmd = program.commands.find((c) => c.name() === 'sidecar')!;
    cmd.exitOverride();
    let parsed: Record<string, unknown> | undefined;
    cmd.action((o) => {
      parsed = o;
    });
    program.parse(sidecar.args, { from: 'user' });
    expect(parsed).toMatchObject({
      listen: '127.0.0.1:6432',
      policy: '/etc/pgwarden/policy',
      credentialsDir: '/etc/pgwarden/credentials',
      caFile: '/etc/pgwarden/ca/ca.crt',
      http: '0.0.0.0:9187',
      audit: 'nats://nats.pgwarden:4222',
      spoolDir: '/var/lib/pgwarden',
    });
  });
});

// The CLI runs from cli/dist: `make test` builds first. Under CI a missing build fails here instead of skipping.
describe.skipIf(!BUILT && !process.env.CI)('pgwarden inject with audit Secrets named on the command line', () => {
  it('mounts the NATS user and the signing key into the sidecar alone and passes their flags', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgwarden-inject-'));
    try {
      writeFileSync(join(dir, 'policy.yaml'), stringify(policy));
      writeFileSync(
        join(dir, 'deploy.yaml'),
        stringify({
          apiVersion: 'apps/v1',
          kind: 'Deployment',
          metadata: { name: 'agent', namespace: 'agents' },
          spec: {
            selector: { matchLabels: { app: 'analytics' } },
            template: {
              metadata: { labels: { app: 'analytics' } },
              spec: { containers: [{ name: 'agent', image: 'python:3.12' }] },
            },
          },
        }),
      );
      const out = execFileSync(
        process.execPath,
        [
          BIN,
          'inject',
          '-f',
          join(dir, 'deploy.yaml'),
          '--policies',
          join(dir, 'policy.yaml'),
          '--audit-url',
          'nats://nats.pgwarden:4222',
          '--audit-credentials-secret',
          'agents-nats-user',
          '--audit-signing-key-secret',
          'agents-audit-signing',
          '--audit-nats-ca-secret',
          'agents-nats-ca',
        ],
        { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
      );
      const pod = parse(out).spec.template.spec;
      const sidecar = pod.initContainers[0];
      const secretOf = (mount: { name: string }) =>
        pod.volumes.find((v: { name: string }) => v.name === mount.name)?.secret?.secretName;
      const sidecarSecrets = sidecar.volumeMounts.map(secretOf).filter(Boolean);
      expect(sidecarSecrets).toEqual(expect.arrayContaining(['agents-nats-user', 'agents-audit-signing']));
      const keyAt = sidecar.args[sidecar.args.indexOf('--audit-signing-key') + 1];
      const keyMount = sidecar.volumeMounts.find(
        (m: { name: string }) => secretOf(m) === 'agents-audit-signing',
      ).mountPath;
      expect(keyAt).toBe(`${keyMount}/signing.key`);
      expect(sidecar.args).toContain('--audit-nats-credentials-dir');
      // As the webhook does with audit.natsCa: the CA reaches the sidecar alone, and it verifies NATS with it.
      expect(sidecarSecrets).toContain('agents-nats-ca');
      const caAt = sidecar.args[sidecar.args.indexOf('--audit-nats-ca') + 1];
      const caMount = sidecar.volumeMounts.find((m: { name: string }) => secretOf(m) === 'agents-nats-ca').mountPath;
      expect(caAt).toBe(`${caMount}/ca.crt`);
      // The agent's container sees neither Secret.
      for (const c of pod.containers) expect((c.volumeMounts ?? []).map(secretOf).filter(Boolean)).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
