import type { DatabaseAccessPolicy, MaskingRule } from '@pgwarden/policy';
import { Pod } from 'kubernetes-models/v1';
import { describe, expect, it } from 'vitest';
import { applyJsonPatch } from '../core/json-patch.js';
import { maskingKeySecrets } from './masking-key-secrets.js';
import { expectedSidecarHash, mutatePod, type PodLike } from './mutate-pod.js';
import { ANNOTATIONS, DEFAULT_SIDECAR_CONFIG } from './sidecar-config.js';

const config = DEFAULT_SIDECAR_CONFIG;

function policy(name: string, app: string, labels?: Record<string, string>): DatabaseAccessPolicy {
  return {
    apiVersion: 'pgwarden.dev/v1alpha1',
    kind: 'DatabaseAccessPolicy',
    metadata: { name, namespace: 'agents', ...(labels ? { labels } : {}) },
    spec: {
      podSelector: { matchLabels: { app } },
      database: { host: 'db', name: 'orders', credentialsSecretRef: { name: 'orders-agent' } },
    } as DatabaseAccessPolicy['spec'],
  };
}

type Column = NonNullable<MaskingRule['spec']['columns']>[number];
const hashed = (column: string, name: string, key: string): Column => ({
  table: 'public.customers',
  column,
  strategy: { type: 'hash', keySecretRef: { name, key } },
});

function rule(
  name: string,
  select: Partial<MaskingRule['spec']>,
  columns: Column[],
  namespace = 'agents',
): MaskingRule {
  return {
    apiVersion: 'pgwarden.dev/v1alpha1',
    kind: 'MaskingRule',
    metadata: { name, namespace },
    spec: { ...select, columns } as MaskingRule['spec'],
  };
}

const rules = [
  rule('pii', { policies: ['analytics'] }, [
    hashed('name', 'pii-key', 'hmac'),
    hashed('email', 'pii-key', 'hmac'),
    { table: 'public.customers', column: 'ssn', strategy: { type: 'partial', keepLast: 4 } },
  ]),
  rule('by-label', { policySelector: { matchLabels: { tier: 'agents' } } }, [
    hashed('phone', 'pii-key', 'phone'),
    hashed('iban', 'bank-key', 'k'),
  ]),
  // Not this pod's policy, or not its namespace: nothing of these is mounted.
  rule('other-policy', { policies: ['other'] }, [hashed('x', 'other-key', 'k')]),
  rule('other-namespace', { policies: ['analytics'] }, [hashed('x', 'foreign-key', 'k')], 'elsewhere'),
];
const policies = [policy('analytics', 'analytics', { tier: 'agents' }), policy('other', 'nope')];

const pod = (): PodLike => ({
  metadata: { name: 'agent-1', namespace: 'agents', labels: { app: 'analytics' } },
  spec: { containers: [{ name: 'agent', image: 'python:3.12' }] },
});

function inject(p: PodLike, r: readonly MaskingRule[] = rules): any {
  const res = mutatePod(p, policies, config, 'agents', r);
  if ('denied' in res) throw new Error(res.denied);
  return applyJsonPatch({ apiVersion: 'v1', kind: 'Pod', ...p }, res.patch);
}

describe('MaskingRule keySecretRefs in the injected pod', () => {
  it('mounts the referenced keys, and only those, read-only into the sidecar alone, with PGWARDEN_MASKING_KEYS_DIR', () => {
    const out = inject(pod());
    const sidecar = out.spec.initContainers.find((c: any) => c.name === 'pgwarden-analytics');
    const keysVolume = out.spec.volumes.find((v: any) => v.projected);
    expect(keysVolume).toEqual({
      name: 'pgw-mkeys-analytics',
      projected: {
        defaultMode: 0o444,
        // Not `optional`: a missing Secret or key keeps the pod from starting instead of hashing with a random key.
        sources: [
          { secret: { name: 'bank-key', items: [{ key: 'k', path: 'bank-key/k' }] } },
          {
            secret: {
              name: 'pii-key',
              items: [
                { key: 'hmac', path: 'pii-key/hmac' },
                { key: 'phone', path: 'pii-key/phone' },
              ],
            },
          },
        ],
      },
    });
    expect(sidecar.volumeMounts).toContainEqual({
      name: 'pgw-mkeys-analytics',
      mountPath: '/etc/pgwarden/masking-keys',
      readOnly: true,
    });
    expect(sidecar.env).toContainEqual({ name: 'PGWARDEN_MASKING_KEYS_DIR', value: '/etc/pgwarden/masking-keys' });
    for (const c of out.spec.containers) {
      expect(c.volumeMounts).toBeUndefined();
      expect(c.env.map((e: any) => e.name)).not.toContain('PGWARDEN_MASKING_KEYS_DIR');
    }
    expect(JSON.stringify(out)).not.toMatch(/other-key|foreign-key/);
    expect(new Pod(out).validate()).toBeUndefined();
  });

  it('leaves the sidecar exactly as before when no selecting rule names a key (no rollout on upgrade)', () => {
    const unkeyed = [
      rule('plain', { policies: ['analytics'] }, [{ table: '*', column: 'ssn', strategy: { type: 'redact' } }]),
    ];
    expect(inject(pod(), unkeyed)).toEqual(inject(pod(), []));
    expect(JSON.stringify(inject(pod(), unkeyed))).not.toMatch(/mkeys|MASKING_KEYS/);
  });

  it('is idempotent, and its sidecar hash is the one the controller rolls workloads to', () => {
    const once = inject(pod());
    expect(mutatePod(once, policies, config, 'agents', rules)).toMatchObject({ patch: [] });
    expect(once.metadata.annotations[ANNOTATIONS.sidecarHash]).toBe(
      expectedSidecarHash(policies.slice(0, 1), config, rules),
    );
    // A key added to a rule later changes the sidecar's shape: the controller rolls the workload to mount it.
    expect(expectedSidecarHash(policies.slice(0, 1), config, [])).not.toBe(
      expectedSidecarHash(policies.slice(0, 1), config, rules),
    );
  });

  it('refuses a pod that defines the volume name, mounts it undefined, or reads a key Secret itself', () => {
    const denied = (spec: Record<string, any>) => {
      const p = pod();
      p.spec = { ...p.spec, ...spec };
      const res = mutatePod(p, policies, config, 'agents', rules);
      return 'denied' in res ? res.denied : '';
    };
    expect(denied({ volumes: [{ name: 'pgw-mkeys-analytics', emptyDir: {} }] })).toMatch(
      /a volume named "pgw-mkeys-analytics" already exists/,
    );
    expect(
      denied({
        containers: [{ name: 'agent', image: 'x', volumeMounts: [{ name: 'pgw-mkeys-analytics', mountPath: '/k' }] }],
      }),
    ).toMatch(/mounts volume "pgw-mkeys-analytics", which the pod does not define/);
    expect(denied({ volumes: [{ name: 'mine', secret: { secretName: 'pii-key' } }] })).toMatch(
      /volume "mine" mounts Secret "pii-key"/,
    );
    expect(
      denied({
        containers: [
          {
            name: 'agent',
            image: 'x',
            env: [{ name: 'K', valueFrom: { secretKeyRef: { name: 'bank-key', key: 'k' } } }],
          },
        ],
      }),
    ).toMatch(/container "agent" reads Secret "bank-key"/);
    // The same Secret in another pod of the namespace, not selected by a keyed rule, is none of this webhook's business.
    expect(denied({ volumes: [{ name: 'mine', secret: { secretName: 'other-key' } }] })).toBe('');
  });

  it('skips refs the sidecar would never read (a key of .. or starting with a dot)', () => {
    const odd = [
      rule('odd', { policies: ['analytics'] }, [hashed('a', 'pii-key', '..'), hashed('b', 'pii-key', '.x')]),
    ];
    expect(maskingKeySecrets(policies[0], odd)).toEqual([]);
  });
});
