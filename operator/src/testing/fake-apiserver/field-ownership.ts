/**
 * A reduced model of server-side apply field management.
 * https://kubernetes.io/docs/reference/using-api/server-side-apply/
 *
 * Fields are identified by their path of map keys; lists are atomic (as `x-kubernetes-list-type: atomic`), which is
 * a simplification of the real merge strategies (list-map keys such as containers[name], conditions[type]).
 * What is kept faithful: an applier owns exactly the fields in its last applied configuration; fields it stops
 * applying are removed unless another manager owns them; a differing value owned by another manager is a 409
 * conflict unless force=true, which transfers ownership; non-apply updates take ownership without conflicts.
 */

export type Path = string[];
export type Json = any;

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Leaf paths of an object: scalars, arrays and empty maps are leaves. */
export function leafPaths(obj: Json, prefix: Path = []): Path[] {
  if (!isPlainObject(obj) || Object.keys(obj).length === 0) return prefix.length ? [prefix] : [];
  const out: Path[] = [];
  for (const [k, v] of Object.entries(obj)) out.push(...leafPaths(v, [...prefix, k]));
  return out;
}

export function getAt(obj: Json, path: Path): Json {
  let cur = obj;
  for (const k of path) {
    if (!isPlainObject(cur)) return undefined;
    cur = cur[k];
  }
  return cur;
}

export function setAt(obj: Json, path: Path, value: Json): void {
  let cur = obj;
  for (const k of path.slice(0, -1)) {
    if (!isPlainObject(cur[k])) cur[k] = {};
    cur = cur[k];
  }
  cur[path[path.length - 1]] = structuredClone(value);
}

/** Deletes a leaf and prunes the maps it leaves empty. */
export function deleteAt(obj: Json, path: Path): void {
  const parents: Json[] = [];
  let cur = obj;
  for (const k of path.slice(0, -1)) {
    if (!isPlainObject(cur[k])) return;
    parents.push(cur);
    cur = cur[k];
  }
  delete cur[path[path.length - 1]];
  for (let i = path.length - 2; i >= 0; i--) {
    const parent = parents[i];
    const child = parent[path[i]];
    if (isPlainObject(child) && Object.keys(child).length === 0) delete parent[path[i]];
    else break;
  }
}

export function deepEqual(a: Json, b: Json): boolean {
  return JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
}

function canonical(v: Json): Json {
  if (Array.isArray(v)) return v.map(canonical);
  if (isPlainObject(v)) {
    const o: Record<string, Json> = {};
    for (const k of Object.keys(v).sort()) o[k] = canonical(v[k]);
    return o;
  }
  return v;
}

export const pathKey = (p: Path): string => JSON.stringify(p);

export interface ManagerEntry {
  manager: string;
  operation: 'Apply' | 'Update';
  subresource?: string;
  time: string;
  fields: Set<string>; // pathKey()s
}

/** Builds `fieldsV1` in the API's `f:<name>` notation from owned paths. */
export function fieldsV1(fields: Set<string>): Json {
  const root: Json = {};
  for (const key of fields) {
    let cur = root;
    for (const seg of JSON.parse(key) as Path) {
      cur[`f:${seg}`] ??= {};
      cur = cur[`f:${seg}`];
    }
  }
  return root;
}

/** Paths whose values differ between two objects (leaves of either side). */
export function changedPaths(before: Json, after: Json): Path[] {
  const keys = new Map<string, Path>();
  for (const p of [...leafPaths(before), ...leafPaths(after)]) keys.set(pathKey(p), p);
  return [...keys.values()].filter((p) => !deepEqual(getAt(before, p), getAt(after, p)));
}

/** metadata.managedFields as the API server renders it. */
export function renderManaged(managers: ManagerEntry[]): Json[] {
  return managers.map((m) => ({
    manager: m.manager,
    operation: m.operation,
    apiVersion: 'v1',
    time: m.time,
    fieldsType: 'FieldsV1',
    fieldsV1: fieldsV1(m.fields),
    ...(m.subresource ? { subresource: m.subresource } : {}),
  }));
}
