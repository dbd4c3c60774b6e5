import type { DatabaseAccessPolicy } from '@pgwarden/policy';
import fc from 'fast-check';
import { Pod } from 'kubernetes-models/v1';
import { describe, expect, it } from 'vitest';
import { applyJsonPatch } from '../core/json-patch.js';
import { mutatePod, type PodLike, reviewEphemeralContainers } from './mutate-pod.js';
import {
  ANNOTATIONS,
  AUDIT_CREDENTIALS_SECRET,
  AUDIT_NATS_CA_SECRET,
  AUDIT_SIGNING_KEY_SECRET,
  DEFAULT_SIDECAR_CONFIG,
} from './sidecar-config.js';

const config = { ...DEFAULT_SIDECAR_CONFIG, auditUrl: 'nats://nats.pgwarden:4222' };

function policy(name: string, app: string, extra: Partial<DatabaseAccessPolicy['spec']> = {}): DatabaseAccessPolicy {
  return {
    apiVersion: 'pgwarden.dev/v1alpha1',
    kind: 'DatabaseAccessPolicy',
    metadata: { name, namespace: 'agents' },
    spec: {
      podSelector: { matchLabels: { app } },
      database: {
        host: 'orders-db.data.svc',
        name: 'orders',
        caSecretRef: { name: 'orders-ca', key: 'ca.crt' },
        credentialsSecretRef: { name: 'orders-agent' },
      },
      ...extra,
    } as DatabaseAccessPolicy['spec'],
  };
}

const basePod = (): PodLike => ({
  metadata: { name: 'agent-1', namespace: 'agents', labels: { app: 'analytics' } },
  spec: {
    serviceAccountName: 'agent',
    containers: [
      {
        name: 'agent',
        image: 'python:3.12',
        env: [
          { name: 'PGHOST', value: 'orders-db' },
          { name: 'X', value: '1' },
        ],
      },
    ],
  },
});

/** What of the pod's Secrets a container can read: mounted Secret volumes and Secret-sourced env. */
function secretsReadBy(pod: any, container: any): string[] {
  const secretOf = (name: string) => {
    const v = pod.spec.volumes?.find((x: any) => x.name === name);
    return v?.secret?.secretName ?? v?.projected?.sources?.map((s: any) => s.secret?.name).join(',');
  };
  return [
    ...(container.volumeMounts ?? []).map((m: any) => secretOf(m.name)),
    ...(container.env ?? []).map((e: any) => e.valueFrom?.secretKeyRef?.name),
    ...(container.envFrom ?? []).map((e: any) => e.secretRef?.name),
  ].filter(Boolean);
}

function apply(pod: PodLike, res: ReturnType<typeof mutatePod>): any {
  if ('denied' in res) throw new Error(res.denied);
  return applyJsonPatch({ apiVersion: 'v1', kind: 'Pod', ...pod }, res.patch);
}

describe('mutatePod', () => {
  it('injects a native sidecar first, with the restricted security context, secrets mounted only into it', () => {
    const res = mutatePod(basePod(), [policy('analytics', 'analytics'), policy('other', 'nope')], config);
    expect(res).toMatchObject({ policies: ['analytics'] });
    const out = apply(basePod(), res);
    const sidecar = out.spec.initContainers[0];
    expect(sidecar.name).toBe('pgwarden-analytics');
    expect(sidecar.restartPolicy).toBe('Always');
    expect(sidecar.startupProbe.httpGet).toEqual({ path: '/readyz', port: 9187 });
    expect(sidecar.securityContext).toMatchObject({
      runAsNonRoot: true,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    });
    expect(sidecar.args).toEqual([
      'sidecar',
      '--listen',
      '127.0.0.1:5432',
      '--policy',
      '/etc/pgwarden/policy',
      '--credentials-dir',
      '/etc/pgwarden/credentials',
      '--ca-file',
      '/etc/pgwarden/ca/ca.crt',
      '--http',
      '0.0.0.0:9187',
      '--audit',
      'nats://nats.pgwarden:4222',
      '--spool-dir',
      '/var/lib/pgwarden',
      '--spool-max-bytes',
      String(Math.floor(256 * 1024 * 1024 * 0.9)),
    ]);
    // The spool cap stays below the emptyDir's sizeLimit, or the kubelet would evict the pod with the unsent events.
    expect(out.spec.volumes.find((v: any) => v.emptyDir)?.emptyDir.sizeLimit).toBe('256Mi');
    expect(sidecar.env.map((e: any) => e.name)).toEqual(
      expect.arrayContaining([
        'PGWARDEN_POD_NAMESPACE',
        'PGWARDEN_POD_NAME',
        'PGWARDEN_POD_SERVICE_ACCOUNT',
        'PGWARDEN_NODE_NAME',
      ]),
    );
    expect(sidecar.command).toEqual([
      'node',
      '--max-semi-space-size=1',
      '--heap-growing-percent=50',
      '/app/bin/pgwarden',
    ]);
    expect(sidecar.env.map((e: any) => e.name)).not.toContain('NODE_OPTIONS');
    const credVolume = out.spec.volumes.find((v: any) => v.secret?.secretName === 'orders-agent');
    expect(credVolume).toBeDefined();
    expect(out.spec.volumes.find((v: any) => v.configMap)?.configMap.name).toBe('pgwarden-analytics');
    const agent = out.spec.containers[0];
    expect(agent.volumeMounts).toBeUndefined();
    expect(secretsReadBy(out, agent)).toEqual([]);
    expect(secretsReadBy(out, sidecar)).toEqual(['orders-agent', 'orders-ca']);
    expect(agent.env).toEqual([
      { name: 'PGHOST', value: '127.0.0.1' },
      { name: 'X', value: '1' },
      { name: 'PGPORT', value: '5432' },
    ]);
    expect(out.metadata.annotations[ANNOTATIONS.status]).toBe('injected');
    expect(new Pod(out).validate()).toBeUndefined();
  });

  it('skips pods no policy selects, opted-out pods, and already-injected pods', () => {
    const p = basePod();
    p.metadata!.labels = { app: 'web' };
    expect(mutatePod(p, [policy('analytics', 'analytics')], config)).toMatchObject({
      patch: [],
      skipped: expect.any(String),
    });
    const o = basePod();
    o.metadata!.annotations = { [ANNOTATIONS.inject]: 'false' };
    expect(mutatePod(o, [policy('analytics', 'analytics')], config)).toMatchObject({ patch: [] });
  });

  it('believes the injected annotation only with the sidecars there, and checks what a later webhook added', () => {
    // Written by the pod's author: no sidecar yet, so the pod is checked and injected like any other.
    const forged = basePod();
    forged.metadata!.annotations = { [ANNOTATIONS.status]: 'injected' };
    forged.spec = { ...forged.spec, hostPID: true };
    expect(mutatePod(forged, [policy('analytics', 'analytics')], config)).toMatchObject({
      denied: expect.stringMatching(/hostPID/),
    });
    const plain = basePod();
    plain.metadata!.annotations = { [ANNOTATIONS.status]: 'injected' };
    const injected = apply(plain, mutatePod(plain, [policy('analytics', 'analytics')], config));
    expect(injected.spec.initContainers.map((c: any) => c.name)).toEqual(['pgwarden-analytics']);
    // Reinvocation after another webhook added a container mounting the sidecar's credentials: refused.
    injected.spec.containers.push({
      name: 'late',
      image: 'x',
      volumeMounts: [{ name: 'pgw-creds-analytics', mountPath: '/s' }],
    });
    expect(mutatePod(injected, [policy('analytics', 'analytics')], config)).toMatchObject({
      denied: expect.stringMatching(
        /container "late" mounts volume "pgw-creds-analytics", which belongs to the pgwarden sidecar/,
      ),
    });
  });

  it('refuses ephemeral containers that could read a sidecar (kubectl debug), and allows the rest', () => {
    const injected = apply(basePod(), mutatePod(basePod(), [policy('analytics', 'analytics')], config));
    const withDebug = (c: Record<string, unknown>) => ({
      ...injected,
      spec: { ...injected.spec, ephemeralContainers: [c] },
    });
    expect(
      reviewEphemeralContainers(withDebug({ name: 'd', image: 'busybox', targetContainerName: 'pgwarden-analytics' })),
    ).toMatch(/"d" targets the pgwarden sidecar "pgwarden-analytics"/);
    expect(
      reviewEphemeralContainers(withDebug({ name: 'd', image: 'busybox', securityContext: { privileged: true } })),
    ).toMatch(/privileged/);
    expect(
      reviewEphemeralContainers(
        withDebug({ name: 'd', image: 'busybox', volumeMounts: [{ name: 'pgw-creds-analytics', mountPath: '/s' }] }),
      ),
    ).toMatch(/mounts volume "pgw-creds-analytics"/);
    expect(
      reviewEphemeralContainers(withDebug({ name: 'd', image: 'busybox', targetContainerName: 'agent' })),
    ).toBeUndefined();
    // A pod without a sidecar is none of pgwarden's business.
    expect(
      reviewEphemeralContainers({
        ...basePod(),
        spec: {
          ...basePod().spec,
          ephemeralContainers: [
            { name: 'd', image: 'x', targetContainerName: 'agent', securityContext: { privileged: true } },
          ],
        },
      }),
    ).toBeUndefined();
  });

  it('on reinvocation, gives containers added by a later webhook PGHOST/PGPORT and nothing else', () => {
    const once = apply(basePod(), mutatePod(basePod(), [policy('analytics', 'analytics')], config));
    once.spec.containers.push({ name: 'late', image: 'busybox' });
    const again = mutatePod(once, [policy('analytics', 'analytics')], config);
    expect(again).toEqual({
      policies: ['analytics'],
      patch: [
        {
          op: 'add',
          path: '/spec/containers/1/env',
          value: [
            { name: 'PGHOST', value: '127.0.0.1' },
            { name: 'PGPORT', value: '5432' },
          ],
        },
      ],
    });
    expect(mutatePod(apply(once, again), [policy('analytics', 'analytics')], config)).toMatchObject({
      patch: [],
      skipped: 'already injected',
    });
  });

  it.each([
    ['hostNetwork', { hostNetwork: true }, /hostNetwork/],
    ['hostPID', { hostPID: true }, /hostPID/],
    ['shareProcessNamespace', { shareProcessNamespace: true }, /shareProcessNamespace/],
    ['hostIPC', { hostIPC: true }, /hostIPC/],
    [
      'a hostPath volume',
      { volumes: [{ name: 'node', hostPath: { path: '/var/lib/kubelet' } }] },
      /volume "node" is a hostPath/,
    ],
    [
      'a container adding SYS_PTRACE',
      { containers: [{ name: 'agent', image: 'x', securityContext: { capabilities: { add: ['SYS_PTRACE'] } } }] },
      /container "agent" adds capability SYS_PTRACE/,
    ],
    [
      'a volume of its own mounting the credentials Secret',
      { volumes: [{ name: 'creds', secret: { secretName: 'orders-agent' } }] },
      /volume "creds" mounts Secret "orders-agent"/,
    ],
    [
      'an env var read from the credentials Secret',
      {
        containers: [
          {
            name: 'agent',
            image: 'x',
            env: [{ name: 'PGPASSWORD', valueFrom: { secretKeyRef: { name: 'orders-agent', key: 'password' } } }],
          },
        ],
      },
      /container "agent" reads Secret "orders-agent"/,
    ],
    [
      'a privileged container',
      { containers: [{ name: 'agent', image: 'x', securityContext: { privileged: true } }] },
      /container "agent" is privileged/,
    ],
    // A reviewer's findings (2026-12-01): each of these let the agent reach the sidecar's credentials or connections.
    [
      "a mount of the sidecar's credentials volume by its name, before the sidecar adds it",
      { containers: [{ name: 'agent', image: 'x', volumeMounts: [{ name: 'pgw-creds-analytics', mountPath: '/s' }] }] },
      /container "agent" mounts volume "pgw-creds-analytics", which the pod does not define/,
    ],
    [
      "NET_ADMIN (DNAT of the sidecar's connections)",
      { containers: [{ name: 'agent', image: 'x', securityContext: { capabilities: { add: ['net_admin'] } } }] },
      /adds capability net_admin/,
    ],
    [
      'hostAliases giving the database host another address',
      { hostAliases: [{ ip: '127.0.0.2', hostnames: ['Orders-DB.data.svc'] }] },
      /hostAliases give "Orders-DB.data.svc"/,
    ],
    [
      'hostAliases giving the NATS host another address',
      { hostAliases: [{ ip: '127.0.0.2', hostnames: ['nats.pgwarden'] }] },
      /hostAliases give "nats.pgwarden"/,
    ],
    ['its own DNS servers', { dnsPolicy: 'None', dnsConfig: { nameservers: ['127.0.0.1'] } }, /its own DNS servers/],
    ['a gitRepo volume', { volumes: [{ name: 'g', gitRepo: { repository: 'https://x' } }] }, /gitRepo volume/],
    [
      'a CSI volume handed the credentials Secret',
      { volumes: [{ name: 'c', csi: { driver: 'x', nodePublishSecretRef: { name: 'orders-agent' } } }] },
      /volume "c" mounts Secret "orders-agent"/,
    ],
    ['SELinux type spc_t', { securityContext: { seLinuxOptions: { type: 'spc_t' } } }, /spc_t/],
  ])('refuses a pod with %s, saying why', (_n, specPatch, message) => {
    const pod = basePod();
    pod.spec = { ...pod.spec, ...specPatch };
    const res = mutatePod(pod, [policy('analytics', 'analytics')], config);
    expect(res).toHaveProperty('denied');
    expect((res as { denied: string }).denied).toMatch(message);
  });

  it('mounts the audit NATS credentials into the sidecar alone, and refuses a pod that reads them itself', () => {
    const withCreds = { ...config, auditCredentialsSecret: AUDIT_CREDENTIALS_SECRET };
    const res = mutatePod(basePod(), [policy('analytics', 'analytics')], withCreds);
    if (!('patch' in res)) throw new Error(`denied: ${(res as { denied: string }).denied}`);
    const out = applyJsonPatch(basePod(), res.patch) as any;
    const sidecar = out.spec.initContainers.find((c: any) => c.name === 'pgwarden-analytics');
    const i = sidecar.args.indexOf('--audit-nats-credentials-dir');
    expect(sidecar.args[i + 1]).toBe('/etc/pgwarden/audit-credentials');
    const vol = out.spec.volumes.find((v: any) => v.secret?.secretName === AUDIT_CREDENTIALS_SECRET);
    expect(vol.secret.items.map((x: any) => x.key)).toEqual(['username', 'password']);
    expect(sidecar.volumeMounts).toContainEqual({
      name: vol.name,
      mountPath: '/etc/pgwarden/audit-credentials',
      readOnly: true,
    });
    expect(out.spec.containers[0].volumeMounts).toBeUndefined();
    expect(new Pod(out).validate()).toBeUndefined();

    const thief = basePod();
    thief.spec = { ...thief.spec, volumes: [{ name: 'n', secret: { secretName: AUDIT_CREDENTIALS_SECRET } }] };
    expect((mutatePod(thief, [policy('analytics', 'analytics')], withCreds) as { denied: string }).denied).toMatch(
      /volume "n" mounts Secret "pgwarden-audit-credentials"/,
    );
    // Without a NATS audit URL there is nothing to mount.
    const fileAudit = mutatePod(basePod(), [policy('analytics', 'analytics')], { ...withCreds, auditUrl: 'stdout' });
    expect(JSON.stringify(fileAudit)).not.toContain('audit-credentials');
  });

  it('mounts the audit signing key into the sidecar alone, whatever the sink, and refuses a pod that reads it itself', () => {
    const signing = {
      ...config,
      auditCredentialsSecret: AUDIT_CREDENTIALS_SECRET,
      auditSigningKeySecret: AUDIT_SIGNING_KEY_SECRET,
    };
    for (const auditUrl of ['nats://nats.pgwarden:4222', 'stdout']) {
      const res = mutatePod(basePod(), [policy('analytics', 'analytics')], { ...signing, auditUrl });
      if (!('patch' in res)) throw new Error(`denied: ${(res as { denied: string }).denied}`);
      const out = applyJsonPatch(basePod(), res.patch) as any;
      const sidecar = out.spec.initContainers.find((c: any) => c.name === 'pgwarden-analytics');
      const i = sidecar.args.indexOf('--audit-signing-key');
      expect(sidecar.args[i + 1]).toBe('/etc/pgwarden/audit-signing-key/signing.key');
      const vol = out.spec.volumes.find((v: any) => v.secret?.secretName === AUDIT_SIGNING_KEY_SECRET);
      expect(vol.secret.items).toEqual([{ key: 'signing.key', path: 'signing.key' }]);
      expect(sidecar.volumeMounts).toContainEqual({
        name: vol.name,
        mountPath: '/etc/pgwarden/audit-signing-key',
        readOnly: true,
      });
      expect(secretsReadBy(out, sidecar)).toContain(AUDIT_SIGNING_KEY_SECRET);
      // The agent gets none of the sidecar's Secrets: not the key, not the NATS user, not the database login.
      for (const c of out.spec.containers) expect(secretsReadBy(out, c)).toEqual([]);
      expect(new Pod(out).validate()).toBeUndefined();
    }

    for (const [how, spec] of [
      ['a volume', { volumes: [{ name: 'k', secret: { secretName: AUDIT_SIGNING_KEY_SECRET } }] }],
      [
        'a projected volume',
        { volumes: [{ name: 'k', projected: { sources: [{ secret: { name: AUDIT_SIGNING_KEY_SECRET } }] } }] },
      ],
      [
        'an env var',
        {
          containers: [
            {
              name: 'agent',
              image: 'python:3.12',
              env: [{ name: 'K', valueFrom: { secretKeyRef: { name: AUDIT_SIGNING_KEY_SECRET, key: 'signing.key' } } }],
            },
          ],
        },
      ],
    ] as const) {
      const thief = basePod();
      thief.spec = { ...thief.spec, ...spec };
      expect(
        (mutatePod(thief, [policy('analytics', 'analytics')], signing) as { denied?: string }).denied,
        how,
      ).toMatch(/Secret "pgwarden-audit-signing-key", credentials only the sidecar may hold/);
    }
    // Not configured: no key, no flag.
    expect(JSON.stringify(mutatePod(basePod(), [policy('analytics', 'analytics')], config))).not.toContain('signing');
  });

  it.each([
    ['a Secret the operator copied', { kind: 'secret', name: AUDIT_NATS_CA_SECRET }, 'secret'],
    ['a ConfigMap in the namespace', { kind: 'configMap', name: 'nats-trust' }, 'configMap'],
  ] as const)(
    'verifies NATS with the CA from %s: mounted read-only into the sidecar alone, with --audit-nats-ca',
    (_n, ca, source) => {
      const withCa = { ...config, auditCredentialsSecret: AUDIT_CREDENTIALS_SECRET, auditNatsCa: ca };
      for (const auditUrl of ['nats://nats.pgwarden:4222', 'tls://nats.pgwarden:4222']) {
        const out = apply(basePod(), mutatePod(basePod(), [policy('analytics', 'analytics')], { ...withCa, auditUrl }));
        const sidecar = out.spec.initContainers.find((c: any) => c.name === 'pgwarden-analytics');
        const i = sidecar.args.indexOf('--audit-nats-ca');
        expect(i, auditUrl).toBeGreaterThan(0);
        expect(sidecar.args[i + 1]).toBe('/etc/pgwarden/audit-nats-ca/ca.crt');
        // A tls:// URL is NATS too: it gets the user and the spool as nats:// does.
        expect(sidecar.args).toContain('--audit-nats-credentials-dir');
        expect(sidecar.args).toContain('--spool-dir');
        const vol = out.spec.volumes.find(
          (v: any) => v[source]?.[source === 'secret' ? 'secretName' : 'name'] === ca.name,
        );
        expect(vol[source].items).toEqual([{ key: 'ca.crt', path: 'ca.crt' }]);
        expect(sidecar.volumeMounts).toContainEqual({
          name: vol.name,
          mountPath: '/etc/pgwarden/audit-nats-ca',
          readOnly: true,
        });
        for (const c of out.spec.containers)
          expect((c.volumeMounts ?? []).map((m: any) => m.name)).not.toContain(vol.name);
        expect(new Pod(out).validate()).toBeUndefined();
      }
      // Without NATS there is no connection to verify.
      const fileAudit = mutatePod(basePod(), [policy('analytics', 'analytics')], { ...withCa, auditUrl: 'stdout' });
      expect(JSON.stringify(fileAudit)).not.toContain('nats-ca');
      expect(JSON.stringify(mutatePod(basePod(), [policy('analytics', 'analytics')], config))).not.toContain('nats-ca');
    },
  );

  it('refuses invalid selecting policies and listen-port clashes (fail closed)', () => {
    const broken = policy('broken', 'analytics', { defaultAction: 'maybe' as any });
    expect(mutatePod(basePod(), [broken], config)).toMatchObject({
      denied: expect.stringMatching(/"broken" .* invalid/),
    });
    const two = [policy('a', 'analytics'), policy('b', 'analytics')];
    expect(mutatePod(basePod(), two, config)).toMatchObject({
      denied: expect.stringMatching(/both listen on port 5432/),
    });
    two[1].spec.listen = { port: 6432 };
    const out = apply(basePod(), mutatePod(basePod(), two, config));
    expect(out.spec.initContainers.map((c: any) => c.name)).toEqual(['pgwarden-a', 'pgwarden-b']);
    expect(out.spec.initContainers[1].ports[0].containerPort).toBe(9188);
  });
});

// ---- properties --------------------------------------------------------------------------------------------------

const name = fc.stringMatching(/^[a-z][a-z0-9]{0,8}$/);
const envVar = fc.record({
  name: fc.constantFrom('PGHOST', 'PGPORT', 'A', 'B', 'HOME'),
  value: fc.string({ maxLength: 8 }),
});
const container = fc.record(
  {
    name,
    image: fc.constantFrom('busybox', 'python:3.12', 'ghcr.io/x/y@sha256:abc'),
    env: fc.uniqueArray(envVar, { selector: (e) => e.name, maxLength: 4 }),
    args: fc.array(fc.string({ maxLength: 6 }), { maxLength: 3 }),
    ports: fc.uniqueArray(fc.record({ containerPort: fc.integer({ min: 8000, max: 8100 }) }), {
      selector: (p) => p.containerPort,
      maxLength: 2,
    }),
    volumeMounts: fc.constant([{ name: 'data', mountPath: '/data' }]),
  },
  { requiredKeys: ['name', 'image'] },
);
const podArb = fc
  .record({
    labels: fc.record({ app: fc.constantFrom('analytics', 'web') }),
    annotations: fc.option(fc.dictionary(fc.constantFrom('a', 'b/c', 'x~y'), fc.string({ maxLength: 5 })), {
      nil: undefined,
    }),
    containers: fc.uniqueArray(container, { selector: (c) => c.name, minLength: 1, maxLength: 3 }),
    initContainers: fc.option(fc.uniqueArray(container, { selector: (c) => `init-${c.name}`, maxLength: 2 }), {
      nil: undefined,
    }),
    withVolumes: fc.boolean(),
  })
  .map(
    (r): PodLike => ({
      metadata: { generateName: 'agent-', namespace: 'agents', labels: r.labels, annotations: r.annotations },
      spec: {
        containers: r.containers,
        ...(r.initContainers
          ? { initContainers: r.initContainers.map((c) => ({ ...c, name: `init-${c.name}` })) }
          : {}),
        volumes: r.withVolumes ? [{ name: 'data', emptyDir: {} }] : undefined,
      },
    }),
  );

describe('mutatePod properties', () => {
  const policies = [policy('analytics', 'analytics')];

  it('is idempotent: a second invocation on its own output changes nothing', () => {
    fc.assert(
      fc.property(podArb, (pod) => {
        const first = mutatePod(pod, policies, config);
        if ('denied' in first) return;
        const once = apply(pod, first);
        const second = mutatePod(once, policies, config);
        expect(second).toMatchObject({ patch: [] });
      }),
      { numRuns: 300 },
    );
  });

  it('never touches unrelated containers or fields (only PGHOST/PGPORT env on app containers)', () => {
    fc.assert(
      fc.property(podArb, (pod) => {
        const res = mutatePod(pod, policies, config);
        if ('denied' in res) return;
        const out = apply(pod, res);
        const injected = res.policies.length;
        const strip = (c: any) => ({
          ...c,
          env: (c.env ?? []).filter((e: any) => e.name !== 'PGHOST' && e.name !== 'PGPORT'),
        });
        pod.spec!.containers.forEach((c: any, i: number) => {
          expect(strip(out.spec.containers[i])).toEqual(strip(c));
          if (injected) {
            expect(out.spec.containers[i].env.find((e: any) => e.name === 'PGHOST').value).toBe('127.0.0.1');
          }
        });
        expect(out.spec.initContainers?.slice(injected) ?? []).toEqual(pod.spec!.initContainers ?? []);
        expect((out.spec.volumes ?? []).slice(0, pod.spec!.volumes?.length ?? 0)).toEqual(pod.spec!.volumes ?? []);
        for (const [k, v] of Object.entries(pod.metadata!.annotations ?? {}))
          expect(out.metadata.annotations[k]).toBe(v);
        expect(out.metadata.labels).toEqual(pod.metadata!.labels);
      }),
      { numRuns: 300 },
    );
  });

  it('every pod it produces validates against the Kubernetes schemas (kubernetes-models)', () => {
    fc.assert(
      fc.property(podArb, (pod) => {
        const res = mutatePod(pod, policies, config);
        if ('denied' in res) return;
        expect(() => new Pod(apply(pod, res)).validate()).not.toThrow();
      }),
      { numRuns: 200 },
    );
  });
});
