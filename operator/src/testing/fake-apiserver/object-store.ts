import { randomUUID } from 'node:crypto';
import { validateCoreObject } from './core-validation.js';
import { type CrdSchema, invalidStatusMessage } from './crd-validation.js';
import {
  changedPaths,
  deepEqual,
  type Json,
  leafPaths,
  type ManagerEntry,
  pathKey,
  renderManaged,
} from './field-ownership.js';
import {
  ApiError,
  conflict,
  groupSuffix,
  groupVersion,
  notFound,
  type ResourceType,
  typeKey,
} from './resource-types.js';
import { mergeApplied } from './server-side-apply.js';
import {
  filteredEvent,
  matchesFilter,
  type WatchEvent,
  type WatchEventType,
  type Watcher,
  type WatchFilter,
} from './watch-filter.js';

export type { WatchEvent, WatchEventType, Watcher, WatchFilter } from './watch-filter.js';

interface HistoryEntry {
  rv: number;
  tk: string;
  type: WatchEventType;
  object: Json;
  /** The previous state, for filtered watches: an object entering a selector is ADDED, leaving it DELETED. */
  old?: Json;
}

export interface WriteOptions {
  subresource?: 'status';
  fieldManager?: string;
}

/** Metadata the server owns: clients cannot set these through writes. */
const SERVER_METADATA = ['uid', 'creationTimestamp', 'resourceVersion', 'generation', 'managedFields'];

/**
 * Objects, one global resourceVersion counter (as etcd's revision), a bounded event history for watches, and
 * field ownership. Semantics follow https://kubernetes.io/docs/reference/using-api/api-concepts/.
 */
export class ObjectStore {
  private rv = 1000;
  private readonly objects = new Map<string, Map<string, Stored>>();
  private history: HistoryEntry[] = [];
  /** Watches from a resourceVersion at or below this get 410 Gone (etcd compaction). */
  compactedRv = 0;
  readonly watchers = new Set<Watcher>();

  constructor(private readonly maxHistory = 5000) {}

  get resourceVersion(): string {
    return String(this.rv);
  }

  private readonly schemas = new Map<string, CrdSchema>();

  /** Objects of `rt` are pruned, defaulted and validated against this CRD schema on every write (crd-validation.ts). */
  setSchema(rt: ResourceType, schema: CrdSchema): void {
    this.schemas.set(typeKey(rt), schema);
  }

  private validating = true;

  /**
   * Runs `fn` with CRD validation off (pruning and defaults still apply), as on an API server that does not enforce
   * the CRD's rules (`x-kubernetes-validations` needs Kubernetes ≥ 1.25 and is ignored before): for tests of what
   * the operator does when a spec the CRD should have refused reaches it anyway.
   */
  withoutValidation<T>(fn: () => T): T {
    this.validating = false;
    try {
      return fn();
    } finally {
      this.validating = true;
    }
  }

  /**
   * What the API server does to a custom resource before it stores it; throws the 422 Invalid it would answer.
   * A write to the status subresource is judged on `status` alone, as the API server's status strategy does: an
   * object whose spec slipped past validation keeps getting status updates.
   */
  private admit(rt: ResourceType, obj: Json, subresource?: 'status'): void {
    const schema = this.schemas.get(typeKey(rt));
    if (!schema) return;
    let causes = schema.admit(obj);
    if (!this.validating) return;
    if (subresource === 'status') causes = causes.filter((c) => c.field === 'status' || c.field.startsWith('status.'));
    if (causes.length === 0) return;
    const name = obj.metadata?.name ?? '';
    throw new ApiError(422, 'Invalid', invalidStatusMessage(schema, name, causes), {
      name,
      group: rt.group,
      kind: rt.kind,
      causes,
    });
  }

  private bucket(rt: ResourceType): Map<string, Stored> {
    const k = typeKey(rt);
    let b = this.objects.get(k);
    if (!b) {
      b = new Map();
      this.objects.set(k, b);
    }
    return b;
  }

  list(f: WatchFilter): { items: Json[]; resourceVersion: string } {
    const items = [...this.bucket(f.rt).values()].map((s) => s.obj).filter((o) => matchesFilter(f, o));
    items.sort((a, b) =>
      `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}`),
    );
    return { items: structuredClone(items), resourceVersion: this.resourceVersion };
  }

  get(rt: ResourceType, ns: string | undefined, name: string): Json {
    const s = this.bucket(rt).get(`${ns ?? ''}/${name}`);
    if (!s) throw notFound(rt, name);
    return structuredClone(s.obj);
  }

  tryGet(rt: ResourceType, ns: string | undefined, name: string): Json | undefined {
    const s = this.bucket(rt).get(`${ns ?? ''}/${name}`);
    return s ? structuredClone(s.obj) : undefined;
  }

  create(rt: ResourceType, ns: string | undefined, body: Json, opts: WriteOptions = {}): Json {
    const meta = body?.metadata ?? {};
    let name: string | undefined = meta.name;
    if (!name && meta.generateName) name = `${meta.generateName}${randomUUID().slice(0, 5)}`;
    if (!name) throw new ApiError(422, 'Invalid', `${rt.kind} "" is invalid: metadata.name: Required value`);
    if (rt.namespaced) this.requireNamespace(ns!);
    const bucket = this.bucket(rt);
    if (bucket.has(`${ns ?? ''}/${name}`)) {
      throw new ApiError(409, 'AlreadyExists', `${rt.plural}${groupSuffix(rt)} "${name}" already exists`, {
        name,
        kind: rt.plural,
      });
    }
    const obj = structuredClone(body);
    obj.apiVersion = groupVersion(rt);
    obj.kind = rt.kind;
    for (const k of SERVER_METADATA) delete obj.metadata?.[k];
    obj.metadata = { ...obj.metadata, name, ...(rt.namespaced ? { namespace: ns } : {}) };
    delete obj.metadata.generateName;
    if (rt.status) delete obj.status; // status is written only through the subresource
    obj.metadata.uid = randomUUID();
    obj.metadata.creationTimestamp = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    if (rt.status && rt.kind !== 'Namespace' && rt.kind !== 'Pod') obj.metadata.generation = 1;
    this.admit(rt, obj);
    validateCoreObject(rt, obj);
    const stored: Stored = { obj, managers: [] };
    if (opts.fieldManager) this.takeOwnership(stored, opts.fieldManager, 'Update', leafPaths(strip(obj)), opts);
    return this.commit(rt, stored, 'ADDED', `${ns ?? ''}/${name}`);
  }

  /** PUT (update or status update). Honors a resourceVersion precondition like the real server (409 Conflict). */
  replace(rt: ResourceType, ns: string | undefined, name: string, body: Json, opts: WriteOptions = {}): Json {
    const stored = this.bucket(rt).get(`${ns ?? ''}/${name}`);
    // Most kinds (custom resources included) do not allow create-on-update: PUT of a missing object is 404.
    if (!stored) throw notFound(rt, name);
    const wantRv = body?.metadata?.resourceVersion;
    if (wantRv && wantRv !== stored.obj.metadata.resourceVersion) throw conflict(rt, name);
    return this.write(rt, stored, `${ns ?? ''}/${name}`, body, opts, 'Update');
  }

  /** Server-side apply: https://kubernetes.io/docs/reference/using-api/server-side-apply/ */
  apply(
    rt: ResourceType,
    ns: string | undefined,
    name: string,
    applied: Json,
    opts: WriteOptions & { force?: boolean },
  ): Json {
    if (!opts.fieldManager) {
      throw new ApiError(400, 'BadRequest', 'PATCH, fieldManager: Required value: is required for apply patch');
    }
    if (applied?.metadata?.managedFields) {
      throw new ApiError(400, 'BadRequest', 'metadata.managedFields must be nil');
    }
    if (applied?.kind !== rt.kind || applied?.apiVersion !== groupVersion(rt)) {
      throw new ApiError(
        400,
        'BadRequest',
        `apply patch must carry apiVersion ${groupVersion(rt)} and kind ${rt.kind}`,
      );
    }
    const key = `${ns ?? ''}/${name}`;
    const bucket = this.bucket(rt);
    // A resourceVersion in the applied configuration is a precondition, as in every patch: the server stores the
    // merged object only if that version is still the current one (kubernetes/kubernetes#63104), else 409 Conflict.
    const wantRv = applied?.metadata?.resourceVersion;
    const current = bucket.get(key);
    if (wantRv && current && wantRv !== current.obj.metadata.resourceVersion) throw conflict(rt, name);
    if (!current) {
      if (opts.subresource) throw notFound(rt, name);
      this.create(rt, ns, { ...applied, metadata: { ...applied.metadata, name } }, {});
    }
    const stored = bucket.get(key)!;
    const scope =
      opts.subresource === 'status'
        ? { status: applied.status }
        : rt.status
          ? { ...applied, status: undefined }
          : applied;
    const { next, paths } = mergeApplied(
      stored.obj,
      stored.managers,
      applied,
      strip(JSON.parse(JSON.stringify(scope))),
      opts,
    );
    return this.write(rt, stored, key, next, opts, 'Apply', paths);
  }

  delete(rt: ResourceType, ns: string | undefined, name: string): Json {
    const key = `${ns ?? ''}/${name}`;
    const stored = this.bucket(rt).get(key);
    if (!stored) throw notFound(rt, name);
    this.bucket(rt).delete(key);
    this.rv++;
    stored.obj.metadata.resourceVersion = String(this.rv);
    this.record(rt, 'DELETED', stored.obj);
    // Garbage collection of dependents (the real one is a controller; here it is immediate and foreground-like).
    for (const [tk, bucket] of this.objects) {
      for (const s of [...bucket.values()]) {
        if ((s.obj.metadata.ownerReferences ?? []).some((r: Json) => r.uid === stored.obj.metadata.uid)) {
          const depRt = this.typeByKey(tk);
          if (depRt) this.delete(depRt, s.obj.metadata.namespace, s.obj.metadata.name);
        }
      }
    }
    return structuredClone(stored.obj);
  }

  private readonly types = new Map<string, ResourceType>();
  register(rt: ResourceType): void {
    this.types.set(typeKey(rt), rt);
  }
  private typeByKey(tk: string): ResourceType | undefined {
    return this.types.get(tk);
  }

  /** Events after `rv` for a filter, or undefined when that history was compacted (→ 410 Gone). */
  eventsSince(f: WatchFilter, rv: number): WatchEvent[] | undefined {
    if (rv < this.compactedRv) return undefined;
    const tk = typeKey(f.rt);
    return this.history
      .filter((h) => h.rv > rv && h.tk === tk)
      .map((h) => filteredEvent(f, h))
      .filter((e): e is WatchEvent => e !== undefined);
  }

  /** Forgets all history, as etcd compaction does: older resourceVersions now answer 410 Gone. */
  compact(): void {
    this.history = [];
    this.compactedRv = this.rv;
  }

  private requireNamespace(ns: string): void {
    if (!this.bucket(NAMESPACE_TYPE).has(`/${ns}`)) throw new ApiError(404, 'NotFound', `namespaces "${ns}" not found`);
  }

  private write(
    rt: ResourceType,
    stored: Stored,
    key: string,
    body: Json,
    opts: WriteOptions,
    operation: 'Apply' | 'Update',
    appliedPaths?: string[][],
  ): Json {
    const before = stored.obj;
    let next: Json;
    if (opts.subresource === 'status') {
      next = { ...structuredClone(before), status: structuredClone(body.status) };
      if (next.status === undefined) delete next.status;
    } else {
      next = structuredClone(body);
      if (rt.status) {
        if (before.status === undefined) delete next.status;
        else next.status = structuredClone(before.status);
      }
    }
    next.apiVersion = before.apiVersion;
    next.kind = before.kind;
    next.metadata = { ...next.metadata };
    for (const k of ['name', 'namespace', ...SERVER_METADATA]) {
      if (before.metadata[k] === undefined) delete next.metadata[k];
      else next.metadata[k] = before.metadata[k];
    }
    this.admit(rt, next, opts.subresource);
    validateCoreObject(rt, next, before);
    const changed = changedPaths(strip(before), strip(next));
    if (changed.length === 0 && !appliedPaths) return structuredClone(before); // no-op writes keep the resourceVersion
    const specChanged = changed.some((p) => p[0] !== 'metadata' && p[0] !== 'status');
    if (specChanged && next.metadata.generation !== undefined)
      next.metadata.generation = before.metadata.generation + 1;
    const candidate: Stored = { obj: next, managers: stored.managers };
    if (opts.fieldManager) this.takeOwnership(candidate, opts.fieldManager, operation, appliedPaths ?? changed, opts);
    // A no-op apply does not bump resourceVersion, even though the applier's timestamp would move.
    const timeless = (m: Json[] | undefined) => (m ?? []).map(({ time: _t, ...rest }: Json) => rest);
    if (
      changed.length === 0 &&
      deepEqual(timeless(before.metadata.managedFields), timeless(renderManaged(candidate.managers)))
    ) {
      return structuredClone(before);
    }
    return this.commit(rt, candidate, 'MODIFIED', key);
  }

  private takeOwnership(
    s: Stored,
    manager: string,
    operation: 'Apply' | 'Update',
    paths: string[][],
    opts: WriteOptions,
  ) {
    const keys = new Set(paths.map(pathKey));
    const same = (m: ManagerEntry) =>
      m.manager === manager && m.operation === operation && m.subresource === opts.subresource;
    for (const m of s.managers) if (!same(m)) for (const k of keys) m.fields.delete(k);
    let entry = s.managers.find(same);
    if (!entry) {
      entry = { manager, operation, subresource: opts.subresource, time: '', fields: new Set() };
      s.managers.push(entry);
    }
    if (operation === 'Apply') entry.fields = keys;
    else for (const k of keys) entry.fields.add(k);
    entry.time = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    s.managers = s.managers.filter((m) => m.fields.size > 0);
  }

  private commit(rt: ResourceType, stored: Stored, type: WatchEventType, key: string): Json {
    const old = this.bucket(rt).get(key)?.obj;
    this.rv++;
    stored.obj.metadata.resourceVersion = String(this.rv);
    stored.obj.metadata.managedFields = renderManaged(stored.managers);
    if (stored.obj.metadata.managedFields.length === 0) delete stored.obj.metadata.managedFields;
    this.bucket(rt).set(key, stored);
    this.record(rt, type, stored.obj, old);
    return structuredClone(stored.obj);
  }

  private record(rt: ResourceType, type: WatchEventType, obj: Json, old?: Json): void {
    const entry: HistoryEntry = {
      rv: this.rv,
      tk: typeKey(rt),
      type,
      object: structuredClone(obj),
      old: old && structuredClone(old),
    };
    this.history.push(entry);
    if (this.history.length > this.maxHistory) {
      const dropped = this.history.shift()!;
      this.compactedRv = dropped.rv;
    }
    for (const w of this.watchers) {
      if (typeKey(w.rt) !== entry.tk) continue;
      const ev = filteredEvent(w, entry);
      if (ev) w.send(ev);
    }
  }
}

const NAMESPACE_TYPE: ResourceType = {
  group: '',
  version: 'v1',
  plural: 'namespaces',
  kind: 'Namespace',
  namespaced: false,
  status: true,
};

/** The object without server-owned metadata, for change detection and ownership. */
function strip(obj: Json): Json {
  const o = structuredClone(obj);
  delete o.apiVersion;
  delete o.kind;
  if (o.metadata) for (const k of ['name', 'namespace', ...SERVER_METADATA]) delete o.metadata[k];
  return o;
}
