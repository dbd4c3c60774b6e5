/**
 * The injection decision and patch, as a pure function of (pod, policies, config). The webhook, the offline
 * `pgwarden inject` and the workload-rollout hash all go through here.
 */
import { type DatabaseAccessPolicy, matchesLabelSelector } from '@pgwarden/policy';
import { escapePointer, type JsonPatchOp } from '../core/json-patch.js';
import { normalisePolicy } from '../core/normalise-policy.js';
import { ANNOTATIONS, type SidecarConfig } from './sidecar-config.js';
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
  }
  for (const list of ['initContainers', 'containers', 'ephemeralContainers']) {
    for (const c of spec[list] ?? []) {
      if (c?.securityContext?.privileged) {
        return `container "${c.name}" is privileged: it could read the sidecar's memory and credential files`;
      }
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
  auditSecrets: readonly (string | undefined)[],
): string | undefined {
  const secrets = new Set(
    policies.map((p) => p.spec?.database?.credentialsSecretRef?.name).filter((n): n is string => Boolean(n)),
  );
  // The audit NATS user and signing key too: an agent holding the one could publish events the collector would take
  // as the sidecar's, the other sign them.
  for (const s of auditSecrets) if (s) secrets.add(s);
  for (const v of spec.volumes ?? []) {
    const names = [v?.secret?.secretName, ...(v?.projected?.sources ?? []).map((s: any) => s?.secret?.name)];
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

export function mutatePod(
  pod: PodLike,
  policies: readonly DatabaseAccessPolicy[],
  config: SidecarConfig,
  namespace?: string,
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
  if (annotations[ANNOTATIONS.status] === 'injected') {
    // Reinvocation (reinvocationPolicy IfNeeded): a later webhook may have added containers; give them PGHOST/PGPORT.
    const port = buildSidecar(selected[0], 0, config).listenPort;
    const patch = appEnvPatch(spec, port);
    return patch.length ? { patch, policies: names } : { patch, policies: names, skipped: 'already injected' };
  }
  const deny = (why: string): MutationResult => ({
    denied: `pgwarden: cannot inject the database sidecar: ${why}`,
    policies: names,
  });
  const bad = selected.find((p) => invalid.includes(p.metadata.name));
  if (bad) return deny(`DatabaseAccessPolicy "${bad.metadata.name}" selects this pod but is invalid`);
  if (selected.length > MAX_POLICIES_PER_POD)
    return deny(`${selected.length} policies select this pod (at most ${MAX_POLICIES_PER_POD})`);
  const unsafe = unsafePodReason(spec);
  if (unsafe) return deny(unsafe);
  const leaked = credentialVolume(spec, selected, [
    config.auditUrl?.startsWith('nats://') ? config.auditCredentialsSecret : undefined,
    config.auditSigningKeySecret,
  ]);
  if (leaked) return deny(leaked);

  const parts = selected.map((p, i) => buildSidecar(p, i, config));
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

/** The sidecar-shape hash a pod selected by these policies would get (for workload rollouts). */
export function expectedSidecarHash(policies: readonly DatabaseAccessPolicy[], config: SidecarConfig): string {
  const sorted = policies
    .map((p) => normalisePolicy(p).policy)
    .sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1));
  return sidecarShapeHash(sorted.map((p, i) => buildSidecar(p, i, config).container));
}
