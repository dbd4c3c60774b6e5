import { createHash } from 'node:crypto';
import type { DatabaseAccessPolicy } from '@pgwarden/policy';
import type { MaskingKeySecret } from './masking-key-secrets.js';
import { isNatsAuditUrl, type SidecarConfig } from './sidecar-config.js';

/** Paths inside the sidecar container; the sidecar CLI (cli/src/commands/sidecar.ts) reads these flags. */
export const SIDECAR_PATHS = {
  policyDir: '/etc/pgwarden/policy',
  credentialsDir: '/etc/pgwarden/credentials',
  caDir: '/etc/pgwarden/ca',
  auditCredentialsDir: '/etc/pgwarden/audit-credentials',
  auditSigningKeyDir: '/etc/pgwarden/audit-signing-key',
  auditNatsCaDir: '/etc/pgwarden/audit-nats-ca',
  /** `PGWARDEN_MASKING_KEYS_DIR`: MaskingRule keySecretRefs as `<dir>/<secret>/<key>` (sidecar/src/masking). */
  maskingKeysDir: '/etc/pgwarden/masking-keys',
  spoolDir: '/var/lib/pgwarden',
} as const;

export interface SidecarParts {
  container: Record<string, any>;
  volumes: Record<string, any>[];
  listenPort: number;
}

/**
 * V8 settings of the injected sidecar (and of `make bench`'s sidecar legs), on node's command line because Node
 * refuses --heap-growing-percent in NODE_OPTIONS and V8 reads both only at start-up. Per-statement audit events make
 * V8 grow its young generation to 2 × 16 MiB: a 1 MiB semi-space measured 133 → 98 MiB peak RSS under the benchmark.
 * The small young generation promotes in-flight objects, and V8 then lets the old generation grow to 2–3× its live
 * size before a full GC: growing by half instead measured 95 → 80 MiB (docs/benchmarks.md).
 */
export const SIDECAR_NODE_ARGS: readonly string[] = ['--max-semi-space-size=1', '--heap-growing-percent=50'];

/** The CLI launcher inside the pgwarden image (e2e/Dockerfile: ENTRYPOINT ["node", "/app/bin/pgwarden"]). */
export const SIDECAR_ENTRYPOINT = '/app/bin/pgwarden';

/** ConfigMap name for a policy; the controller writes it, the webhook mounts it. */
export function configMapName(policyName: string): string {
  return boundedName('pgwarden-', policyName, 253);
}

/** Container and volume names are DNS labels (≤ 63 chars); long policy names get a hash suffix. */
export function boundedName(prefix: string, name: string, max = 63): string {
  const full = `${prefix}${name}`;
  if (full.length <= max) return full;
  const h = createHash('sha256').update(name).digest('hex').slice(0, 8);
  return `${full.slice(0, max - 9).replace(/[-.]+$/, '')}-${h}`;
}

/**
 * The native sidecar for one policy: an init container with restartPolicy Always
 * (https://kubernetes.io/docs/concepts/workloads/pods/sidecar-containers/), its volumes mounted into it alone.
 * `maskingKeys`: the Secrets holding the HMAC keys of the MaskingRules that apply to the policy.
 */
export function buildSidecar(
  policy: DatabaseAccessPolicy,
  index: number,
  config: SidecarConfig,
  maskingKeys: readonly MaskingKeySecret[] = [],
): SidecarParts {
  const p = policy.metadata.name;
  const spec = policy.spec;
  const listenPort = spec.listen?.port ?? 5432;
  const httpPort = config.httpPort + index;
  const v = (kind: string) => boundedName(`pgw-${kind}-`, p);
  const volumes: Record<string, any>[] = [
    // A whole-ConfigMap directory mount (no subPath), so kubelet's atomic symlink swap delivers edits: hot reload.
    // https://kubernetes.io/docs/concepts/configuration/configmap/#mounted-configmaps-are-updated-automatically
    { name: v('policy'), configMap: { name: configMapName(p) } },
    { name: v('spool'), emptyDir: { sizeLimit: config.spoolSizeLimit } },
  ];
  const mounts: Record<string, any>[] = [
    { name: v('policy'), mountPath: SIDECAR_PATHS.policyDir, readOnly: true },
    { name: v('spool'), mountPath: SIDECAR_PATHS.spoolDir },
  ];
  const args = ['sidecar', '--listen', `127.0.0.1:${listenPort}`, '--policy', SIDECAR_PATHS.policyDir];
  const creds = spec.database.credentialsSecretRef;
  if (creds) {
    // 0444 inside this container only: the files are owned by root and the sidecar runs as non-root; no other
    // container mounts this volume, and pods that could reach into this container's filesystem are refused.
    volumes.push({
      name: v('creds'),
      secret: {
        secretName: creds.name,
        defaultMode: 0o444,
        items: [
          { key: creds.usernameKey ?? 'username', path: 'username' },
          { key: creds.passwordKey ?? 'password', path: 'password' },
        ],
      },
    });
    mounts.push({ name: v('creds'), mountPath: SIDECAR_PATHS.credentialsDir, readOnly: true });
    args.push('--credentials-dir', SIDECAR_PATHS.credentialsDir);
  }
  const ca = spec.database.caSecretRef;
  if (ca) {
    volumes.push({
      name: v('ca'),
      secret: { secretName: ca.name, defaultMode: 0o444, items: [{ key: ca.key, path: 'ca.crt' }] },
    });
    mounts.push({ name: v('ca'), mountPath: SIDECAR_PATHS.caDir, readOnly: true });
    args.push('--ca-file', `${SIDECAR_PATHS.caDir}/ca.crt`);
  }
  args.push('--http', `0.0.0.0:${httpPort}`);
  if (config.auditUrl) {
    args.push('--audit', config.auditUrl);
    // While NATS is unreachable the sidecar spools to disk; the root filesystem is read-only, so the emptyDir.
    if (isNatsAuditUrl(config.auditUrl)) {
      args.push('--spool-dir', SIDECAR_PATHS.spoolDir);
      // The kubelet evicts a pod whose emptyDir outgrows its sizeLimit, taking the unsent events with it: keep the
      // spool's own cap (which refuses or counts drops per failMode) safely below the volume's limit.
      const limit = quantityToBytes(config.spoolSizeLimit);
      if (limit !== undefined) args.push('--spool-max-bytes', String(Math.floor(limit * 0.9)));
    }
    if (isNatsAuditUrl(config.auditUrl) && config.auditCredentialsSecret) {
      // Mounted into the sidecar alone, like the database credentials: the agent cannot publish forged events.
      volumes.push({
        name: v('auditcreds'),
        secret: {
          secretName: config.auditCredentialsSecret,
          defaultMode: 0o444,
          items: [
            { key: 'username', path: 'username' },
            { key: 'password', path: 'password' },
          ],
        },
      });
      mounts.push({ name: v('auditcreds'), mountPath: SIDECAR_PATHS.auditCredentialsDir, readOnly: true });
      args.push('--audit-nats-credentials-dir', SIDECAR_PATHS.auditCredentialsDir);
    }
    if (isNatsAuditUrl(config.auditUrl) && config.auditNatsCa) {
      // With a CA the sidecar speaks TLS to NATS even on a nats:// URL and verifies the server's name, so a rewritten
      // /etc/hosts in the pod cannot send the NATS password elsewhere (docs/security.md). Not secret, but mounted
      // into the sidecar alone all the same: the agent has no use for it.
      const ca = config.auditNatsCa;
      const items = [{ key: 'ca.crt', path: 'ca.crt' }];
      volumes.push({
        name: v('natsca'),
        ...(ca.kind === 'secret'
          ? { secret: { secretName: ca.name, defaultMode: 0o444, items } }
          : { configMap: { name: ca.name, defaultMode: 0o444, items } }),
      });
      mounts.push({ name: v('natsca'), mountPath: SIDECAR_PATHS.auditNatsCaDir, readOnly: true });
      args.push('--audit-nats-ca', `${SIDECAR_PATHS.auditNatsCaDir}/ca.crt`);
    }
  }
  if (config.auditSigningKeySecret) {
    // Whatever the sink: a checkpoint's signature is checked by the collector, not by the transport. Mounted into
    // the sidecar alone, so the agent can never sign events of its own making.
    volumes.push({
      name: v('auditkey'),
      secret: {
        secretName: config.auditSigningKeySecret,
        defaultMode: 0o444,
        items: [{ key: 'signing.key', path: 'signing.key' }],
      },
    });
    mounts.push({ name: v('auditkey'), mountPath: SIDECAR_PATHS.auditSigningKeyDir, readOnly: true });
    args.push('--audit-signing-key', `${SIDECAR_PATHS.auditSigningKeyDir}/signing.key`);
  }
  const keysEnv: Record<string, string>[] = [];
  if (maskingKeys.length > 0) {
    // Not optional: a missing Secret or key keeps the pod from starting (FailedMount), where the sidecar would
    // otherwise hash with a random per-process key and pseudonyms would silently stop joining across pods.
    // One projected volume for all of them, only the referenced keys (items), into the sidecar alone: with the key
    // the agent could reverse pseudonyms by dictionary. Absent when no rule names a key, so that pods without
    // keyed rules keep their sidecar shape (no rollout on upgrade).
    volumes.push({
      name: v('mkeys'),
      projected: {
        defaultMode: 0o444,
        sources: maskingKeys.map((s) => ({
          secret: { name: s.secret, items: s.keys.map((key) => ({ key, path: `${s.secret}/${key}` })) },
        })),
      },
    });
    mounts.push({ name: v('mkeys'), mountPath: SIDECAR_PATHS.maskingKeysDir, readOnly: true });
    keysEnv.push({ name: 'PGWARDEN_MASKING_KEYS_DIR', value: SIDECAR_PATHS.maskingKeysDir });
  }
  const fieldEnv = (name: string, fieldPath: string) => ({ name, valueFrom: { fieldRef: { fieldPath } } });
  const container: Record<string, any> = {
    name: boundedName('pgwarden-', p),
    image: config.image,
    ...(config.imagePullPolicy ? { imagePullPolicy: config.imagePullPolicy } : {}),
    // The image's entrypoint, with the V8 settings in front of the script.
    command: ['node', ...SIDECAR_NODE_ARGS, SIDECAR_ENTRYPOINT],
    args,
    restartPolicy: 'Always',
    // Identity through the downward API: https://kubernetes.io/docs/concepts/workloads/pods/downward-api/
    env: [
      fieldEnv('PGWARDEN_POD_NAMESPACE', 'metadata.namespace'),
      fieldEnv('PGWARDEN_POD_NAME', 'metadata.name'),
      fieldEnv('PGWARDEN_POD_UID', 'metadata.uid'),
      fieldEnv('PGWARDEN_POD_SERVICE_ACCOUNT', 'spec.serviceAccountName'),
      fieldEnv('PGWARDEN_NODE_NAME', 'spec.nodeName'),
      { name: 'PGWARDEN_POLICY', value: p },
      ...keysEnv,
    ],
    ports: [{ name: `pgw-http-${index}`, containerPort: httpPort, protocol: 'TCP' }],
    // The app containers start only after this probe passes (native sidecar ordering).
    startupProbe: {
      httpGet: { path: '/readyz', port: httpPort },
      periodSeconds: 1,
      failureThreshold: 120,
      timeoutSeconds: 2,
    },
    readinessProbe: { httpGet: { path: '/readyz', port: httpPort }, periodSeconds: 5, timeoutSeconds: 2 },
    livenessProbe: {
      httpGet: { path: '/healthz', port: httpPort },
      periodSeconds: 10,
      timeoutSeconds: 2,
      failureThreshold: 3,
    },
    ...(config.resources ? { resources: structuredClone(config.resources) } : {}),
    securityContext: {
      runAsNonRoot: true,
      runAsUser: config.runAsUser,
      runAsGroup: config.runAsUser,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      privileged: false,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
      // Pinned here so that a pod-level Unconfined does not reach the sidecar (Kubernetes 1.30+; older ones drop it).
      appArmorProfile: { type: 'RuntimeDefault' },
    },
    volumeMounts: mounts,
  };
  return { container, volumes, listenPort };
}

/** Identifies the sidecars' shape; a change of it (image, args, ports, resources) is what rolls workloads. */
export function sidecarShapeHash(containers: Record<string, any>[]): string {
  return `sha256:${createHash('sha256').update(JSON.stringify(containers)).digest('hex').slice(0, 32)}`;
}

const QUANTITY = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/;
const QUANTITY_UNIT: Record<string, number> = {
  '': 1,
  Ki: 1024,
  Mi: 1024 ** 2,
  Gi: 1024 ** 3,
  Ti: 1024 ** 4,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
};

/** Bytes of a Kubernetes resource quantity (the subset used for sizes); undefined when it is not one. */
export function quantityToBytes(q: string): number | undefined {
  const m = QUANTITY.exec(q.trim());
  return m ? Number(m[1]) * QUANTITY_UNIT[m[2] ?? ''] : undefined;
}
