/**
 * The injection decision and patch, as a pure function of (pod, policies, config). The webhook, the offline
 * `pgwarden inject` and the workload-rollout hash all go through here.
 */
import { type DatabaseAccessPolicy, type MaskingRule, matchesLabelSelector } from '@pgwarden/policy';
import { undeliverablePolicy } from '../controller/policy-status.js';
import { escapePointer, type JsonPatchOp } from '../core/json-patch.js';
import { normalisePolicy } from '../core/normalise-policy.js';
import { maskingKeySecrets } from './masking-key-secrets.js';
import { ANNOTATIONS, isNatsAuditUrl, type SidecarConfig } from './sidecar-config.js';
import { buildSidecar, sidecarShapeHash } from './sidecar-container.js';

export type MutationResult =
  | { patch: JsonPatchOp[]; policies: string[]; skipped?: string }
  | { denied: string; policies: string[] };

/** At most this many policies (one sidecar each) may select one pod. */
export const MAX_POLICIES_PER_POD = 8;

export interface PodLike {
  metadata?: {
    name?: string;
    generateName?: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  spec?: Record<string, any>;
}

/** Policies that select this pod: same namespace (when both are known) and a matching podSelector. */
export function selectingPolicies(pod: PodLike, policies: readonly DatabaseAccessPolicy[], namespace?: string) {
  const ns = namespace ?? pod.metadata?.namespace;
  return policies
    .filter((p) => !ns || !p.metadata.namespace || p.metadata.namespace === ns)
    .filter((p) => matchesLabelSelector(p.spec?.podSelector ?? {}, pod.metadata?.labels ?? {}))
    .sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0));
}

/** Capabilities that let a container reach into another container's processes or the node (ptrace, mounts, raw devices). */
const DANGEROUS_CAPABILITIES = new Set([
  'ALL',
  'SYS_ADMIN',
  'SYS_PTRACE',
  'SYS_MODULE',
  'SYS_RAWIO',
  'DAC_READ_SEARCH',
  'BPF',
  'PERFMON',
  // Routing and DNAT: the sidecar's connections to the database or NATS could be sent to the agent.
  'NET_ADMIN',
]);

/** Why a pod cannot safely hold credentials next to an untrusted agent, or undefined when it can. */
export function unsafePodReason(spec: Record<string, any>): string | undefined {
  if (spec.hostNetwork) {
    return 'the pod uses hostNetwork: the sidecar would listen on the node network and other pods on the node could reach it';
  }
  if (spec.hostPID) return "the pod uses hostPID: its containers could read the sidecar's memory and credentials";
  if (spec.shareProcessNamespace) {
    return "the pod sets shareProcessNamespace: the other containers could read the sidecar's memory and credential files";
  }
  if (spec.hostIPC) return 'the pod uses hostIPC: its containers could share memory with processes outside the pod';
  for (const v of spec.volumes ?? []) {
    if (v?.hostPath) {
      return `volume "${v.name}" is a hostPath: through the node's filesystem a container could read the sidecar's mounted credentials`;
    }
    // Cloned by the kubelet on the node (CVE-2024-10220): code the agent chose runs outside the pod.
    if (v?.gitRepo) return `volume "${v.name}" is a gitRepo volume, which runs a clone on the node`;
  }
  // The sidecar resolves the database and NATS through the pod's DNS: a resolver the pod picks can redirect it.
  if (spec.dnsPolicy === 'None' || (spec.dnsConfig?.nameservers ?? []).length > 0) {
    return "the pod chooses its own DNS servers (dnsPolicy None or dnsConfig.nameservers): they could send the sidecar's database and NATS connections elsewhere";
  }
  // spc_t ("super privileged container") runs unconfined by SELinux, the sidecar included when set for the pod.
  const spc = (sc: any) => sc?.seLinuxOptions?.type === 'spc_t';
  if (spc(spec.securityContext)) return 'the pod sets SELinux type spc_t, which leaves its containers unconfined';
  for (const list of ['initContainers', 'containers', 'ephemeralContainers']) {
    for (const c of spec[list] ?? []) {
      if (c?.securityContext?.privileged) {
        return `container "${c.name}" is privileged: it could read the sidecar's memory and credential files`;
      }
      if (spc(c?.securityContext)) return `container "${c.name}" sets SELinux type spc_t, which leaves it unconfined`;
      const added: string[] = c?.securityContext?.capabilities?.add ?? [];
      const risky = added.find((cap) => DANGEROUS_CAPABILITIES.has(String(cap).toUpperCase().replace(/^CAP_/, '')));
      if (risky) {
        return `container "${c.name}" adds capability ${risky}: it could inspect other processes or the node`;
      }
    }
  }
  return undefined;
}

/** The agent must never hold the database credentials: refuse a pod whose own volumes already mount that Secret. */
function credentialVolume(
  spec: Record<string, any>,
  policies: readonly DatabaseAccessPolicy[],
  sidecarSecrets: readonly (string | undefined)[],
): string | undefined {
  const secrets = new Set(
    policies.map((p) => p.spec?.database?.credentialsSecretRef?.name).filter((n): n is string => Boolean(n)),
  );
  // The audit NATS user and signing key too: an agent holding the one could publish events the collector would take
  // as the sidecar's, the other sign them. And the masking HMAC keys: with one, hash pseudonyms can be reversed by
  // trying candidate values.
  for (const s of sidecarSecrets) if (s) secrets.add(s);
  for (const v of spec.volumes ?? []) {
    const names = [
      v?.secret?.secretName,
      v?.csi?.nodePublishSecretRef?.name,
      ...(v?.projected?.sources ?? []).map((s: any) => s?.secret?.name),
    ];
    const hit = names.find((n) => n && secrets.has(n));
    if (hit) return `volume "${v.name}" mounts Secret "${hit}", credentials only the sidecar may hold`;
  }
  for (const c of [...(spec.initContainers ?? []), ...(spec.containers ?? [])]) {
    for (const e of [...(c?.env ?? []), ...(c?.envFrom ?? [])]) {
      const n = e?.valueFrom?.secretKeyRef?.name ?? e?.secretRef?.name;
      if (n && secrets.has(n))
        return `container "${c.name}" reads Secret "${n}", credentials only the sidecar may hold`;
    }
  }
  return undefined;
}

/** A container of the pod's own (init, app, ephemeral) that mounts a volume `hit` names. */
function foreignMount(spec: Record<string, any>, hit: (volume: string) => boolean, what: string): string | undefined {
  for (const list of ['initContainers', 'containers', 'ephemeralContainers']) {
    for (const c of spec[list] ?? []) {
      for (const m of [...(c?.volumeMounts ?? []), ...(c?.volumeDevices ?? [])]) {
        if (m?.name !== undefined && hit(m.name)) return `container "${c.name}" mounts volume "${m.name}", ${what}`;
      }
    }
  }
  return undefined;
}

/** A container other than the sidecars that mounts one of the sidecars' volumes. */
function sidecarVolumeMount(spec: Record<string, any>, sidecarVolumes: ReadonlySet<string>): string | undefined {
  return foreignMount(spec, (name) => sidecarVolumes.has(name), 'which belongs to the pgwarden sidecar');
}

/** hostAliases that give the database's or NATS's host name another address (the sidecar would connect there). */
function redirectedHost(
  spec: Record<string, any>,
  policies: readonly DatabaseAccessPolicy[],
  config: SidecarConfig,
): string | undefined {
  const hosts = new Set(policies.map((p) => String(p.spec?.database?.host ?? '').toLowerCase()).filter(Boolean));
  if (config.auditUrl?.startsWith('nats://')) {
    try {
      hosts.add(new URL(config.auditUrl).hostname.toLowerCase());
    } catch {
      // An unparsable audit URL fails elsewhere (the sidecar refuses it); nothing to compare here.
    }
  }
  for (const a of spec.hostAliases ?? []) {
    const named = (a?.hostnames ?? []).find((h: string) => hosts.has(String(h).toLowerCase()));
    if (named) return `hostAliases give "${named}", a host the sidecar connects to, the address ${a.ip}`;
  }
  return undefined;
}

/**
 * `maskingRules`: the MaskingRules of the pod's namespace (the webhook's watch cache); those selecting a policy
 * decide which HMAC key Secrets its sidecar mounts.
 */
export function mutatePod(
  pod: PodLike,
  policies: readonly DatabaseAccessPolicy[],
  config: SidecarConfig,
  namespace?: string,
  maskingRules: readonly MaskingRule[] = [],
): MutationResult {
  const annotations = pod.metadata?.annotations ?? {};
  const spec = pod.spec ?? {};
  // Normalise (fill defaults of) a copy of each policy; an invalid one that selects the pod fails closed.
  const normalised: DatabaseAccessPolicy[] = [];
  const invalid: string[] = [];
  for (const p of policies) {
    const { policy, errors } = normalisePolicy(p);
    if (errors.length) invalid.push(p.metadata.name);
    normalised.push(policy);
  }
  const selected = selectingPolicies(pod, normalised, namespace);
  const names = selected.map((p) => p.metadata.name);
  if (selected.length === 0) return { patch: [], policies: [], skipped: 'no DatabaseAccessPolicy selects this pod' };
  if (annotations[ANNOTATIONS.inject] === 'false') {
    return { patch: [], policies: names, skipped: `annotation ${ANNOTATIONS.inject}=false` };
  }
  const deny = (why: string): MutationResult => ({
    denied: `pgwarden: cannot inject the database sidecar: ${why}`,
    policies: names,
  });
  const keys = selected.map((p) => maskingKeySecrets(p, maskingRules));
  const sidecarSecrets = [
    isNatsAuditUrl(config.auditUrl) ? config.auditCredentialsSecret : undefined,
    config.auditSigningKeySecret,
    ...keys.flat().map((k) => k.secret),
  ];
  // The annotation alone proves nothing (the pod's author can write it): injected means the sidecars are there.
  const expected = selected.map((p, i) => buildSidecar(p, i, config, keys[i]));
  const present = new Set((spec.initContainers ?? []).map((c: any) => c?.name));
  if (annotations[ANNOTATIONS.status] === 'injected' && expected.every((p) => present.has(p.container.name))) {
    // Reinvocation (reinvocationPolicy IfNeeded): a later webhook may have added containers. They are checked as the
    // pod's own were, and get PGHOST/PGPORT.
    const sidecarNames = new Set(expected.map((p) => p.container.name));
    const sidecarVolumes = new Set(expected.flatMap((p) => p.volumes.map((v) => v.name)));
    const own = {
      ...spec,
      initContainers: (spec.initContainers ?? []).filter((c: any) => !sidecarNames.has(c?.name)),
      volumes: (spec.volumes ?? []).filter((v: any) => !sidecarVolumes.has(v?.name)),
    };
    const why =
      unsafePodReason(own) ??
      credentialVolume(own, selected, sidecarSecrets) ??
      sidecarVolumeMount(own, sidecarVolumes) ??
      redirectedHost(own, selected, config);
    if (why) return deny(why);
    const patch = appEnvPatch(spec, expected[0].listenPort);
    return patch.length ? { patch, policies: names } : { patch, policies: names, skipped: 'already injected' };
  }
  const bad = selected.find((p) => invalid.includes(p.metadata.name));
  if (bad) return deny(`DatabaseAccessPolicy "${bad.metadata.name}" selects this pod but is invalid`);
  // Its ConfigMap holds an older content or someone else's: fail closed rather than start a pod on either.
  for (const p of policies) {
    const why = names.includes(p.metadata.name) ? undeliverablePolicy(p as any) : undefined;
    if (why)
      return deny(`DatabaseAccessPolicy "${p.metadata.name}" selects this pod but cannot be delivered: ${why.message}`);
  }
  if (selected.length > MAX_POLICIES_PER_POD)
    return deny(`${selected.length} policies select this pod (at most ${MAX_POLICIES_PER_POD})`);
  const unsafe = unsafePodReason(spec);
  if (unsafe) return deny(unsafe);
  const leaked = credentialVolume(spec, selected, sidecarSecrets);
  if (leaked) return deny(leaked);
  // A mount of a volume the pod does not define would be one of the sidecar's once they are added (its credentials,
  // the audit user and signing key, the spool): Kubernetes validates the pod after this patch.
  const defined = new Set((spec.volumes ?? []).map((v: any) => v?.name));
  const undefinedMount = foreignMount(spec, (name) => !defined.has(name), 'which the pod does not define');
  if (undefinedMount) return deny(undefinedMount);
  const redirected = redirectedHost(spec, selected, config);
  if (redirected) return deny(redirected);

  const parts = expected;
  const ports = new Map<number, string>();
  for (const [i, part] of parts.entries()) {
    const other = ports.get(part.listenPort);
    if (other) return deny(`policies "${other}" and "${names[i]}" both listen on port ${part.listenPort}`);
    ports.set(part.listenPort, names[i]);
  }
  const taken = new Set<number>([...ports.keys(), ...parts.map((_, i) => config.httpPort + i)]);
  const existing = [...(spec.initContainers ?? []), ...(spec.containers ?? [])];
  for (const c of existing) {
    if (parts.some((p) => p.container.name === c.name)) return deny(`a container named "${c.name}" already exists`);
    for (const port of c.ports ?? []) {
      if (taken.has(port.containerPort))
        return deny(`container "${c.name}" declares port ${port.containerPort}, which the sidecar needs`);
    }
  }
  const volumeNames = new Set((spec.volumes ?? []).map((v: any) => v.name));
  for (const v of parts.flatMap((p) => p.volumes))
    if (volumeNames.has(v.name)) return deny(`a volume named "${v.name}" already exists`);

  const patch: JsonPatchOp[] = [];
  const sidecars = parts.map((p) => p.container);
  if (!Array.isArray(spec.initContainers) || spec.initContainers.length === 0) {
    patch.push({ op: 'add', path: '/spec/initContainers', value: sidecars });
  } else {
    // Sidecars go first so they start (and pass their startup probe) before any other init container.
    for (const [i, c] of sidecars.entries()) patch.push({ op: 'add', path: `/spec/initContainers/${i}`, value: c });
  }
  const volumes = parts.flatMap((p) => p.volumes);
  if (!Array.isArray(spec.volumes)) patch.push({ op: 'add', path: '/spec/volumes', value: volumes });
  else for (const v of volumes) patch.push({ op: 'add', path: '/spec/volumes/-', value: v });

  patch.push(...appEnvPatch(spec, parts[0].listenPort));

  const marks: Record<string, string> = {
    [ANNOTATIONS.status]: 'injected',
    [ANNOTATIONS.policies]: names.join(','),
    [ANNOTATIONS.sidecarHash]: sidecarShapeHash(sidecars),
  };
  if (!pod.metadata?.annotations) {
    patch.push({
      op: 'add',
      path: pod.metadata ? '/metadata/annotations' : '/metadata',
      value: pod.metadata ? marks : { annotations: marks },
    });
  } else {
    for (const [k, v] of Object.entries(marks))
      patch.push({ op: 'add', path: `/metadata/annotations/${escapePointer(k)}`, value: v });
  }
  return { patch, policies: names };
}

/** Sets PGHOST/PGPORT on every app container (existing entries replaced in place; nothing else touched). */
function appEnvPatch(spec: Record<string, any>, port: number): JsonPatchOp[] {
  const patch: JsonPatchOp[] = [];
  const pgEnv = [
    { name: 'PGHOST', value: '127.0.0.1' },
    { name: 'PGPORT', value: String(port) },
  ];
  (spec.containers ?? []).forEach((c: any, ci: number) => {
    if (!Array.isArray(c.env)) {
      patch.push({ op: 'add', path: `/spec/containers/${ci}/env`, value: pgEnv });
      return;
    }
    for (const e of pgEnv) {
      const idx = c.env.findIndex((x: any) => x?.name === e.name);
      if (idx < 0) patch.push({ op: 'add', path: `/spec/containers/${ci}/env/-`, value: e });
      else if (c.env[idx].value !== e.value || c.env[idx].valueFrom) {
        patch.push({ op: 'replace', path: `/spec/containers/${ci}/env/${idx}`, value: e });
      }
    }
  });
  return patch;
}

/**
 * The sidecar-shape hash a pod selected by these policies would get (for workload rollouts). The MaskingRules count:
 * a keySecretRef added later changes the sidecar's mounts, so workloads roll to get the key.
 */
export function expectedSidecarHash(
  policies: readonly DatabaseAccessPolicy[],
  config: SidecarConfig,
  maskingRules: readonly MaskingRule[] = [],
): string {
  const sorted = policies
    .map((p) => normalisePolicy(p).policy)
    .sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1));
  return sidecarShapeHash(
    sorted.map((p, i) => buildSidecar(p, i, config, maskingKeySecrets(p, maskingRules)).container),
  );
}

/**
 * An update of a pod's ephemeral containers (`kubectl debug`): refused when one of them could read a pgwarden
 * sidecar, by joining its process namespace (`targetContainerName`; with the same uid it reads the sidecar's files
 * through /proc/PID/root, no privilege needed), mounting its volumes, or by privilege. Pods without a sidecar: allowed.
 */
export function reviewEphemeralContainers(pod: PodLike): string | undefined {
  const spec = pod.spec ?? {};
  const sidecars = new Set(
    (spec.initContainers ?? []).map((c: any) => String(c?.name ?? '')).filter((n: string) => n.startsWith('pgwarden-')),
  );
  if (sidecars.size === 0 && pod.metadata?.annotations?.[ANNOTATIONS.status] !== 'injected') return undefined;
  const deny = (why: string) => `pgwarden: ephemeral container refused: ${why}`;
  for (const c of spec.ephemeralContainers ?? []) {
    const target = c?.targetContainerName;
    if (target !== undefined && (sidecars.has(target) || String(target).startsWith('pgwarden-')))
      return deny(
        `"${c.name}" targets the pgwarden sidecar "${target}", whose memory and credential files it could read`,
      );
    const unsafe = unsafePodReason({ ephemeralContainers: [c] });
    if (unsafe) return deny(unsafe);
    const mount = foreignMount(
      { ephemeralContainers: [c] },
      (name) => name.startsWith('pgw-'),
      'which belongs to the pgwarden sidecar',
    );
    if (mount) return deny(mount);
  }
  return undefined;
}
