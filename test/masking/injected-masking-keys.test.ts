import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { applyJsonPatch, DEFAULT_SIDECAR_CONFIG, mutatePod } from '@pgwarden/operator';
import { type DatabaseAccessPolicy, type MaskingRule, renderPolicy } from '@pgwarden/policy';
import { describe, expect, it } from 'vitest';

// What the webhook injects is what the sidecar reads: the injected container's env and Secret mounts, laid out as
// the kubelet would, give two separate sidecar processes the same HMAC key, so `hash` pseudonyms join across pods.
// Each process compiles the rendered MaskingRules as `pgwarden sidecar --policy` does (keyResolverFromEnv).
const ROOT = new URL('../../', import.meta.url);
const SIDECAR_MASKING = new URL('sidecar/dist/masking/index.js', ROOT);
const POLICY = new URL('policy/dist/index.js', ROOT);
const built = existsSync(SIDECAR_MASKING) && existsSync(POLICY);

const policy: DatabaseAccessPolicy = {
  apiVersion: 'pgwarden.dev/v1alpha1',
  kind: 'DatabaseAccessPolicy',
  metadata: { name: 'analytics', namespace: 'agents' },
  spec: {
    podSelector: { matchLabels: { app: 'analytics' } },
    database: { host: 'db', name: 'orders', credentialsSecretRef: { name: 'orders-agent' } },
  } as DatabaseAccessPolicy['spec'],
};
const rule: MaskingRule = {
  apiVersion: 'pgwarden.dev/v1alpha1',
  kind: 'MaskingRule',
  metadata: { name: 'pii', namespace: 'agents' },
  spec: {
    policies: ['analytics'],
    columns: [
      {
        table: 'customers',
        column: 'name',
        strategy: { type: 'hash', keySecretRef: { name: 'pii-key', key: 'hmac' } },
      },
    ],
  } as MaskingRule['spec'],
};
/** The cluster's Secrets, as the kubelet would find them. */
const secrets: Record<string, Record<string, string>> = {
  'pii-key': { hmac: 'a shared HMAC key', other: 'not referenced' },
  'orders-agent': { username: 'agent', password: 'pw' },
};

/** The injected sidecar's filesystem and env: Secret volumes mounted under `root`, only their `items`. */
function sidecarOf(): { root: string; env: Record<string, string> } {
  const pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'agent-0', namespace: 'agents', labels: { app: 'analytics' } },
    spec: { containers: [{ name: 'agent', image: 'x' }] },
  };
  const res = mutatePod(pod, [policy], DEFAULT_SIDECAR_CONFIG, 'agents', [rule]);
  if ('denied' in res) throw new Error(res.denied);
  const out = applyJsonPatch(pod, res.patch) as any;
  const sidecar = out.spec.initContainers[0];
  const root = mkdtempSync(join(tmpdir(), 'pgw-kubelet-'));
  for (const m of sidecar.volumeMounts) {
    const v = out.spec.volumes.find((x: any) => x.name === m.name);
    const sources = v.projected?.sources ?? (v.secret ? [{ secret: { ...v.secret, name: v.secret.secretName } }] : []);
    for (const s of sources) {
      for (const item of s.secret?.items ?? []) {
        const file = join(root, m.mountPath, item.path);
        mkdirSync(dirname(file), { recursive: true });
        writeFileSync(file, secrets[s.secret.name][item.key]);
      }
    }
  }
  const env: Record<string, string> = {};
  for (const e of sidecar.env)
    if (typeof e.value === 'string') env[e.name] = e.value.startsWith('/') ? join(root, e.value) : e.value;
  return { root, env };
}

/** One sidecar process: hashes `value` with the rule's strategy and reports the keys it could not read. */
function sidecarProcess(env: Record<string, string>, value: string): { hash: string; unreadable: unknown[] } {
  const rendered = renderPolicy(policy, [rule]);
  const script = `
    const { compileMasking, maskText } = await import(${JSON.stringify(POLICY.href)});
    const { keyResolverFromEnv } = await import(${JSON.stringify(SIDECAR_MASKING.href)});
    const { unreadableMaskingKeys } = await import(${JSON.stringify(new URL('sidecar/dist/masking/masking-keys.js', ROOT).href)});
    const rendered = JSON.parse(process.env.RENDERED);
    const resolveKey = keyResolverFromEnv();
    const config = compileMasking(rendered.maskingRules, undefined, { groups: [] }, resolveKey);
    process.stdout.write(JSON.stringify({
      hash: maskText(process.env.VALUE, config.columns[0].strategy),
      unreadable: unreadableMaskingKeys(rendered, resolveKey),
    }));`;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
    env: { PATH: process.env.PATH ?? '', ...env, RENDERED: JSON.stringify(rendered), VALUE: value },
    encoding: 'utf8',
  });
  return JSON.parse(out);
}

// Runs the built code (dist/) in separate processes: skipped without a build outside CI; under CI a missing build
// fails it instead, so nothing is skipped silently there.
describe.skipIf(!built && !process.env.CI)('MaskingRule keys from the webhook to the sidecar', () => {
  it('two sidecar processes of injected pods give the same pseudonym for the same value', () => {
    const a = sidecarOf();
    const b = sidecarOf();
    expect(a.env.PGWARDEN_MASKING_KEYS_DIR).toBeDefined();
    const first = sidecarProcess(a.env, 'Ada Lovelace');
    const second = sidecarProcess(b.env, 'Ada Lovelace');
    expect(first).toEqual({ hash: expect.stringMatching(/^[0-9a-f]{32}$/), unreadable: [] });
    expect(second.hash).toBe(first.hash);
    expect(sidecarProcess(a.env, 'Grace Hopper').hash).not.toBe(first.hash);
  });

  it('without the mounted key each process hashes with its own key, and says so', () => {
    const first = sidecarProcess({}, 'Ada Lovelace');
    const second = sidecarProcess({}, 'Ada Lovelace');
    expect(second.hash).not.toBe(first.hash);
    expect(first.unreadable).toEqual([
      { rule: 'pii', secret: 'pii-key', key: 'hmac', reason: 'PGWARDEN_MASKING_KEYS_DIR is not set' },
    ]);
  });
});
