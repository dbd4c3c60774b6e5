/**
 * Contract between the injector and the sidecar CLI: the args the webhook puts into the injected container must
 * parse with `pgwarden sidecar` as it is today (an unknown or renamed flag fails here, not in a cluster).
 */
import { DEFAULT_SIDECAR_CONFIG, mutatePod } from '@pgwarden/operator';
import type { DatabaseAccessPolicy } from '@pgwarden/policy';
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
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
