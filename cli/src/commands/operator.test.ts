import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crdFiles } from '@pgwarden/operator';
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { operatorConfigFromFlags, parseDurationMs, registerOperator } from './operator.js';

/** Parses `pgwarden operator run ...` and returns the options instead of starting the operator. */
function runFlags(args: string[]): Record<string, any> {
  const program = new Command('pgwarden').exitOverride();
  registerOperator(program);
  const run = program.commands.find((c) => c.name() === 'operator')!.commands.find((c) => c.name() === 'run')!;
  let captured: Record<string, any> = {};
  run.action((o) => {
    captured = o;
  });
  program.parse(['operator', 'run', ...args], { from: 'user' });
  return captured;
}

describe('pgwarden operator run flags', () => {
  it('defaults give a leader-elected operator with a self-managed webhook certificate', () => {
    const cfg = operatorConfigFromFlags(runFlags([]));
    expect(cfg).toMatchObject({
      namespace: process.env.POD_NAMESPACE ?? 'pgwarden',
      leaderElection: true,
      leaseName: 'pgwarden-operator',
      webhook: {
        enabled: true,
        port: 9443,
        tls: 'self',
        secretName: 'pgwarden-webhook-tls',
        certValidityMs: 86_400_000,
      },
      metricsPort: 8080,
      rollout: 'Workload',
      refreshPods: false,
      resyncMs: 600_000,
    });
    expect(cfg.sidecar.resources).toEqual({ requests: { cpu: '50m', memory: '64Mi' }, limits: { memory: '256Mi' } });
  });

  it('maps every sidecar and webhook flag', () => {
    const cfg = operatorConfigFromFlags(
      runFlags([
        '--no-leader-elect',
        '--no-webhook',
        '--webhook-tls',
        'files',
        '--sidecar-image',
        'registry.local/pgwarden:2',
        '--sidecar-cpu-limit',
        '500m',
        '--sidecar-http-port',
        '9300',
        '--audit-url',
        'nats://nats.pgwarden:4222',
        '--rollout-strategy',
        'None',
        '--refresh-pods',
        '--resync',
        '90s',
      ]),
    );
    expect(cfg.refreshPods).toBe(true);
    expect(cfg.leaderElection).toBe(false);
    expect(cfg.webhook).toMatchObject({ enabled: false, tls: 'files' });
    expect(cfg.sidecar).toMatchObject({
      image: 'registry.local/pgwarden:2',
      httpPort: 9300,
      auditUrl: 'nats://nats.pgwarden:4222',
    });
    expect(cfg.sidecar.resources?.limits).toEqual({ cpu: '500m', memory: '256Mi' });
    expect(cfg.rollout).toBe('None');
    expect(cfg.resyncMs).toBe(90_000);
  });

  it('--audit-signing-key-source: the source Secret to copy, and the copy sidecars mount; none by default', () => {
    const cfg = operatorConfigFromFlags(runFlags(['--audit-signing-key-source', 'pgwarden-audit-signing']));
    expect(cfg.auditSigningKeySource).toBe('pgwarden-audit-signing');
    expect(cfg.sidecar.auditSigningKeySecret).toBe('pgwarden-audit-signing-key');
    const plain = operatorConfigFromFlags(runFlags([]));
    expect(plain.auditSigningKeySource).toBeUndefined();
    expect(plain.sidecar.auditSigningKeySecret).toBeUndefined();
  });

  it('--audit-nats-ca-source / --audit-nats-ca-configmap: the CA sidecars verify NATS with, for nats:// and tls://', () => {
    const copied = operatorConfigFromFlags(
      runFlags(['--audit-url', 'tls://nats.example:4222', '--audit-nats-ca-source', 'nats-ca']),
    );
    expect(copied.auditNatsCaSource).toBe('nats-ca');
    expect(copied.sidecar.auditNatsCa).toEqual({ kind: 'secret', name: 'pgwarden-audit-nats-ca' });
    const shared = operatorConfigFromFlags(
      runFlags(['--audit-url', 'nats://nats.example:4222', '--audit-nats-ca-configmap', 'nats-trust']),
    );
    expect(shared.auditNatsCaSource).toBeUndefined();
    expect(shared.sidecar.auditNatsCa).toEqual({ kind: 'configMap', name: 'nats-trust' });
    expect(operatorConfigFromFlags(runFlags([])).sidecar.auditNatsCa).toBeUndefined();
    // A tls:// URL takes NATS credentials as nats:// does.
    expect(
      operatorConfigFromFlags(runFlags(['--audit-url', 'tls://n:4222', '--audit-credentials-source', 's']))
        .auditCredentialsSource,
    ).toBe('s');
    expect(() =>
      operatorConfigFromFlags(
        runFlags(['--audit-url', 'nats://n:4222', '--audit-nats-ca-source', 'a', '--audit-nats-ca-configmap', 'b']),
      ),
    ).toThrow(/give one/);
    expect(() => operatorConfigFromFlags(runFlags(['--audit-url', 'stdout', '--audit-nats-ca-source', 'a']))).toThrow(
      /--audit-nats-ca-source/,
    );
  });

  it('rejects bad values with a message naming the flag', () => {
    expect(() => runFlags(['--rollout-strategy', 'Always'])).toThrow(/rollout-strategy/);
    expect(() => operatorConfigFromFlags(runFlags(['--webhook-port', '70000']))).toThrow(/--webhook-port/);
    expect(() => operatorConfigFromFlags(runFlags(['--resync', 'soon']))).toThrow(/--resync/);
    expect(() => operatorConfigFromFlags(runFlags(['--audit-url', 'http://x']))).toThrow(/--audit-url/);
    expect(parseDurationMs('--x', '250ms')).toBe(250);
  });
});

describe('pgwarden operator crds', () => {
  it('writes the generated CRDs and --check reports drift', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgw-crds-'));
    const program = new Command('pgwarden').exitOverride();
    registerOperator(program);
    const out: string[] = [];
    const write = process.stdout.write.bind(process.stdout);
    const err = process.stderr.write.bind(process.stderr);
    process.stdout.write = ((t: string) => out.push(t) > 0) as typeof process.stdout.write;
    process.stderr.write = ((t: string) => out.push(t) > 0) as typeof process.stderr.write;
    try {
      await program.parseAsync(['operator', 'crds', '--out-dir', dir], { from: 'user' });
      expect(readFileSync(join(dir, 'maskingrules.yaml'), 'utf8')).toBe(crdFiles()['maskingrules.yaml']);
      process.exitCode = undefined;
      await program.parseAsync(['operator', 'crds', '--out-dir', dir, '--check'], { from: 'user' });
      expect(process.exitCode).toBeUndefined();
      writeFileSync(join(dir, 'maskingrules.yaml'), '# edited by hand\n');
      await program.parseAsync(['operator', 'crds', '--out-dir', dir, '--check'], { from: 'user' });
      expect(process.exitCode).toBe(1);
      expect(out.join('')).toMatch(/maskingrules.yaml is out of date/);
    } finally {
      process.stdout.write = write;
      process.stderr.write = err;
      process.exitCode = undefined;
    }
  });
});
