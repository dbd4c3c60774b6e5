/** URL paths of the Kubernetes API (https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-uris) and discovery documents. */
import type { Json } from './field-ownership.js';
import { groupVersion, type ResourceType } from './resource-types.js';

export interface Route {
  rt: ResourceType;
  namespace?: string;
  name?: string;
  subresource?: string;
}

export function routeFor(types: ResourceType[], path: string): Route | undefined {
  const segs = path.split('/').filter(Boolean);
  let group: string;
  let version: string;
  let rest: string[];
  if (segs[0] === 'api') [group, version, rest] = ['', segs[1], segs.slice(2)];
  else if (segs[0] === 'apis') [group, version, rest] = [segs[1], segs[2], segs.slice(3)];
  else return undefined;
  const find = (plural: string) => types.find((t) => t.group === group && t.version === version && t.plural === plural);
  if (rest[0] === 'namespaces' && rest.length >= 3) {
    const rt = find(rest[2]);
    if (rt?.namespaced) return { rt, namespace: rest[1], name: rest[3], subresource: rest[4] };
  }
  const rt = find(rest[0]);
  if (!rt || (rt.namespaced && rest.length > 1)) return undefined;
  return { rt, name: rest[1], subresource: rest[2] };
}

export function discoveryFor(types: ResourceType[], path: string): Json | undefined {
  const p = path.replace(/\/$/, '');
  if (p === '/api') return { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [] };
  if (p === '/version') return { major: '1', minor: '33', gitVersion: 'v1.33.0-fake' };
  const groups = [...new Set(types.filter((t) => t.group).map((t) => `${t.group}/${t.version}`))];
  if (p === '/apis') {
    return {
      kind: 'APIGroupList',
      apiVersion: 'v1',
      groups: groups.map((gv) => {
        const [name, version] = gv.split('/');
        const v = { groupVersion: gv, version };
        return { name, versions: [v], preferredVersion: v };
      }),
    };
  }
  const gv = p === '/api/v1' ? 'v1' : p.startsWith('/apis/') && p.split('/').length === 4 ? p.slice(6) : undefined;
  if (!gv) return undefined;
  const served = types.filter((t) => groupVersion(t) === gv);
  if (served.length === 0) return undefined;
  const verbs = ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'];
  const resources = served.flatMap((t) => [
    {
      name: t.plural,
      singularName: t.kind.toLowerCase(),
      namespaced: t.namespaced,
      kind: t.kind,
      verbs,
      shortNames: t.shortNames,
      categories: t.categories,
    },
    ...(t.status
      ? [
          {
            name: `${t.plural}/status`,
            singularName: '',
            namespaced: t.namespaced,
            kind: t.kind,
            verbs: ['get', 'patch', 'update'],
          },
        ]
      : []),
  ]);
  return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: gv, resources };
}
