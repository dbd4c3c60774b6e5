import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Identity } from '../proxy/hooks.js';

/**
 * Workload identity: who the pod is, as Kubernetes tells the sidecar through the downward API.
 *
 * The contract with the operator (it injects these into the sidecar container):
 *
 *   env PGWARDEN_POD_NAMESPACE        ← fieldRef metadata.namespace
 *   env PGWARDEN_POD_NAME             ← fieldRef metadata.name
 *   env PGWARDEN_POD_SERVICE_ACCOUNT  ← fieldRef spec.serviceAccountName
 *   env PGWARDEN_NODE_NAME            ← fieldRef spec.nodeName
 *   env PGWARDEN_PODINFO_DIR          optional: a downwardAPI volume with files `namespace` (metadata.namespace)
 *                                     and `name` (metadata.name), used for values the env does not carry.
 *
 * spec.serviceAccountName and spec.nodeName are only available as environment variables, not as downwardAPI volume
 * files (https://kubernetes.io/docs/concepts/workloads/pods/downward-api/#downwardapi-fieldRef), hence env first.
 * The values are fixed for the life of the pod, so they are read once at startup.
 */
export const WORKLOAD_ENV = {
  namespace: 'PGWARDEN_POD_NAMESPACE',
  pod: 'PGWARDEN_POD_NAME',
  serviceAccount: 'PGWARDEN_POD_SERVICE_ACCOUNT',
  node: 'PGWARDEN_NODE_NAME',
  podInfoDir: 'PGWARDEN_PODINFO_DIR',
} as const;

/** File names inside PGWARDEN_PODINFO_DIR (the `path` of each downwardAPI volume item). */
export const PODINFO_FILES = { namespace: 'namespace', pod: 'name' } as const;

export type WorkloadIdentity = Pick<Identity, 'namespace' | 'pod' | 'serviceAccount' | 'node'>;

function clean(value: string | undefined): string | undefined {
  const v = value?.trim();
  return v ? v : undefined;
}

function readPodInfo(dir: string | undefined, file: string): string | undefined {
  if (!dir) return undefined;
  try {
    return clean(readFileSync(join(dir, file), 'utf8'));
  } catch {
    return undefined;
  }
}

export function readWorkloadIdentity(env: NodeJS.ProcessEnv = process.env): WorkloadIdentity {
  const dir = clean(env[WORKLOAD_ENV.podInfoDir]);
  const id: WorkloadIdentity = {
    namespace: clean(env[WORKLOAD_ENV.namespace]) ?? readPodInfo(dir, PODINFO_FILES.namespace),
    pod: clean(env[WORKLOAD_ENV.pod]) ?? readPodInfo(dir, PODINFO_FILES.pod),
    serviceAccount: clean(env[WORKLOAD_ENV.serviceAccount]),
    node: clean(env[WORKLOAD_ENV.node]),
  };
  for (const k of Object.keys(id) as (keyof WorkloadIdentity)[]) if (id[k] === undefined) delete id[k];
  return id;
}
