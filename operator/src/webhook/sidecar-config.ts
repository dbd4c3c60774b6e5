/** How the operator shapes the injected sidecar (from `pgwarden operator` flags / Helm values). */
export interface SidecarConfig {
  image: string;
  imagePullPolicy?: 'Always' | 'IfNotPresent' | 'Never';
  resources?: {
    requests?: Record<string, string>;
    limits?: Record<string, string>;
  };
  /** Admin HTTP (health, readiness, metrics) port of the first sidecar; further sidecars use the next ports. */
  httpPort: number;
  /** Audit destination passed as `--audit` (e.g. nats://nats.pgwarden:4222); omitted when empty. */
  auditUrl?: string;
  /**
   * Name of the Secret (keys `username`, `password`) in each workload namespace that holds the NATS user the sidecars
   * publish audit events as; the controller copies it there from the operator's source Secret. Without it any pod
   * that reaches NATS could publish forged audit events, so the Helm chart always sets it with its bundled NATS.
   */
  auditCredentialsSecret?: string;
  /**
   * Name of the Secret (key `signing.key`, a PEM Ed25519 private key) in each workload namespace that the sidecars
   * sign audit checkpoints with (`--audit-signing-key`); the controller copies it there. Unset: chains unsigned.
   */
  auditSigningKeySecret?: string;
  /**
   * The CA bundle (key `ca.crt`) the sidecars verify NATS's TLS certificate with (`--audit-nats-ca`), in each workload
   * namespace: a Secret the controller copies there (AUDIT_NATS_CA_SECRET), or a ConfigMap that something else puts
   * in every namespace (e.g. a trust-manager Bundle). Without it NATS over plain TCP carries the sidecars' NATS
   * password, and over `tls://` only the system CAs vouch for the server.
   */
  auditNatsCa?: { kind: 'secret' | 'configMap'; name: string };
  /** UID/GID the sidecar runs as (non-root). */
  runAsUser: number;
  /** Size limit of the writable spool (audit spool while NATS is unreachable; the root filesystem is read-only). */
  spoolSizeLimit: string;
}

export const DEFAULT_SIDECAR_CONFIG: SidecarConfig = {
  image: 'ghcr.io/pgwarden/pgwarden:0.1.0',
  imagePullPolicy: 'IfNotPresent',
  resources: { requests: { cpu: '50m', memory: '64Mi' }, limits: { memory: '256Mi' } },
  httpPort: 9187,
  runAsUser: 65532,
  spoolSizeLimit: '256Mi',
};

/** Annotations and labels the operator reads or writes on pods and workloads. */
export const ANNOTATIONS = {
  /** Set on injected pods; its presence makes reinvocation a no-op. */
  status: 'pgwarden.dev/status',
  /** Comma-separated names of the policies whose sidecars were injected. */
  policies: 'pgwarden.dev/policies',
  /**
   * On a running pod: the hash of the last policy content the operator asked the kubelet to deliver now
   * (--refresh-pods); changing a pod's annotations makes the kubelet refresh its ConfigMap volumes at once.
   */
  policyRefresh: 'pgwarden.dev/policy-refresh',
  /** Hash over the injected sidecar containers' shape (image, args, ports, resources...). */
  sidecarHash: 'pgwarden.dev/sidecar-hash',
  /**
   * On a rendered ConfigMap the operator created again because someone had made it immutable: the uid of the frozen
   * one. Pods that mounted that one never see another (kubelets stop watching an immutable ConfigMap).
   */
  replacedImmutable: 'pgwarden.dev/replaced-immutable',
  /**
   * On a pod template (and so on its pods): the uid of the rendered ConfigMap its pods were rolled to mount, set
   * when the operator rolls a workload off a frozen ConfigMap.
   */
  configMapUid: 'pgwarden.dev/configmap-uid',
  /** `"false"` on a pod (template) opts it out of injection. */
  inject: 'pgwarden.dev/inject',
  /** On a DatabaseAccessPolicy: `Workload` (default) or `None`. */
  rolloutStrategy: 'pgwarden.dev/rollout-strategy',
  /** Written by the ConfigMap renderer: the rendered policy's hash. */
  contentHash: 'pgwarden.dev/content-hash',
} as const;

/** The Secret name the controller replicates the audit NATS credentials to in every namespace with a policy. */
export const AUDIT_CREDENTIALS_SECRET = 'pgwarden-audit-credentials';

/** The Secret name the controller replicates the audit signing key to in every namespace with a policy. */
export const AUDIT_SIGNING_KEY_SECRET = 'pgwarden-audit-signing-key';

/** The Secret name the controller replicates the NATS CA bundle to in every namespace with a policy. */
export const AUDIT_NATS_CA_SECRET = 'pgwarden-audit-nats-ca';

/** Audit URLs the sidecar reaches NATS by (create-audit-sink.ts): only these get NATS credentials, a CA, a spool. */
export const isNatsAuditUrl = (url: string | undefined): url is string => /^(nats|tls):\/\//.test(url ?? '');

export const INJECTION_NAMESPACE_LABEL = 'pgwarden.dev/injection';
