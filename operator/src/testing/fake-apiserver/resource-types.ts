/** The resource types the fake API server serves, with the properties that change API semantics. */
export interface ResourceType {
  group: string; // '' is the core group, served under /api/v1
  version: string;
  plural: string;
  kind: string;
  namespaced: boolean;
  /** Has a /status subresource: main-resource writes ignore .status, and spec changes bump metadata.generation. */
  status: boolean;
  shortNames?: string[];
  categories?: string[];
}

export const BUILTIN_RESOURCE_TYPES: ResourceType[] = [
  { group: '', version: 'v1', plural: 'namespaces', kind: 'Namespace', namespaced: false, status: true },
  { group: '', version: 'v1', plural: 'pods', kind: 'Pod', namespaced: true, status: true },
  { group: '', version: 'v1', plural: 'configmaps', kind: 'ConfigMap', namespaced: true, status: false },
  { group: '', version: 'v1', plural: 'secrets', kind: 'Secret', namespaced: true, status: false },
  { group: '', version: 'v1', plural: 'events', kind: 'Event', namespaced: true, status: false },
  { group: '', version: 'v1', plural: 'services', kind: 'Service', namespaced: true, status: true },
  { group: '', version: 'v1', plural: 'serviceaccounts', kind: 'ServiceAccount', namespaced: true, status: false },
  { group: 'apps', version: 'v1', plural: 'deployments', kind: 'Deployment', namespaced: true, status: true },
  { group: 'apps', version: 'v1', plural: 'statefulsets', kind: 'StatefulSet', namespaced: true, status: true },
  { group: 'apps', version: 'v1', plural: 'daemonsets', kind: 'DaemonSet', namespaced: true, status: true },
  { group: 'apps', version: 'v1', plural: 'replicasets', kind: 'ReplicaSet', namespaced: true, status: true },
  { group: 'batch', version: 'v1', plural: 'jobs', kind: 'Job', namespaced: true, status: true },
  { group: 'batch', version: 'v1', plural: 'cronjobs', kind: 'CronJob', namespaced: true, status: true },
  { group: 'coordination.k8s.io', version: 'v1', plural: 'leases', kind: 'Lease', namespaced: true, status: false },
  { group: 'events.k8s.io', version: 'v1', plural: 'events', kind: 'Event', namespaced: true, status: false },
  {
    group: 'admissionregistration.k8s.io',
    version: 'v1',
    plural: 'mutatingwebhookconfigurations',
    kind: 'MutatingWebhookConfiguration',
    namespaced: false,
    status: false,
  },
  {
    group: 'pgwarden.dev',
    version: 'v1alpha1',
    plural: 'databaseaccesspolicies',
    kind: 'DatabaseAccessPolicy',
    namespaced: true,
    status: true,
    shortNames: ['dap'],
    categories: ['pgwarden'],
  },
  {
    group: 'pgwarden.dev',
    version: 'v1alpha1',
    plural: 'maskingrules',
    kind: 'MaskingRule',
    namespaced: true,
    status: true,
    shortNames: ['mr'],
    categories: ['pgwarden'],
  },
];

export function groupVersion(rt: ResourceType): string {
  return rt.group === '' ? rt.version : `${rt.group}/${rt.version}`;
}

export function typeKey(rt: ResourceType): string {
  return `${rt.group}/${rt.version}/${rt.plural}`;
}

/** Kubernetes `Status` failure object, as the API server returns it for errors. */
export function statusFailure(code: number, reason: string, message: string, details?: Record<string, unknown>) {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, details, code };
}

export class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }
  toStatus() {
    return statusFailure(this.code, this.reason, this.message, this.details);
  }
}

export function groupSuffix(rt: ResourceType): string {
  return rt.group ? `.${rt.group}` : '';
}

export function notFound(rt: ResourceType, name: string): ApiError {
  return new ApiError(404, 'NotFound', `${rt.plural}${groupSuffix(rt)} "${name}" not found`, { name, kind: rt.plural });
}

export function conflict(rt: ResourceType, name: string): ApiError {
  return new ApiError(
    409,
    'Conflict',
    `Operation cannot be fulfilled on ${rt.plural}${groupSuffix(rt)} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
  );
}
