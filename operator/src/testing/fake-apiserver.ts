/**
 * An in-process Kubernetes API server that speaks real HTTP and JSON, for tests of everything that talks to a
 * cluster through @kubernetes/client-node. It follows https://kubernetes.io/docs/reference/using-api/api-concepts/:
 * collections with resourceVersion, watch streams of newline-delimited WatchEvents (ADDED/MODIFIED/DELETED/BOOKMARK,
 * and ERROR carrying a 410 Status once the requested resourceVersion is compacted), server-side apply with field
 * managers and conflicts, the status subresource, generation bumps, optimistic concurrency (409), discovery.
 * Fault injection (dropped/stalled watches, 410 on demand, error responses) drives the controller's recovery paths.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parse as parseYaml } from 'yaml';
import { applyJsonPatch, applyMergePatch, JsonPatchError } from '../core/json-patch.js';
import { parseSelectorString } from '../core/label-selector.js';
import { databaseAccessPolicyCrd, maskingRuleCrd } from '../crd/custom-resource-definitions.js';
import { discoveryFor, type Route, routeFor } from './fake-apiserver/api-paths.js';
import { CrdSchema } from './fake-apiserver/crd-validation.js';
import type { Json } from './fake-apiserver/field-ownership.js';
import { ObjectStore, type WatchFilter } from './fake-apiserver/object-store.js';
import {
  ApiError,
  BUILTIN_RESOURCE_TYPES,
  groupVersion,
  type ResourceType,
  statusFailure,
} from './fake-apiserver/resource-types.js';
import { type LiveWatch, serveWatch } from './fake-apiserver/watch-stream.js';

export type { ResourceType } from './fake-apiserver/resource-types.js';

interface InjectedFailure {
  method?: string;
  pathIncludes?: string;
  status: number;
  times: number;
}

/** Something another client does while one request is in flight (see FakeApiServer.interleave). */
interface Interleaving {
  method?: string;
  pathIncludes?: string;
  when: 'before' | 'after';
  action: () => unknown;
}

export interface RequestRecord {
  method: string;
  path: string;
  query: Record<string, string>;
  contentType?: string;
}

export class FakeApiServer {
  readonly store = new ObjectStore();
  readonly requests: RequestRecord[] = [];
  private readonly types: ResourceType[] = [];
  private readonly live = new Set<LiveWatch>();
  private readonly failures: InjectedFailure[] = [];
  private readonly interleavings: Interleaving[] = [];
  private expireWatches = 0;
  private server?: Server;
  url = '';

  /**
   * `crds`: CustomResourceDefinitions whose schemas the server enforces on their kinds (pruning, defaults, OpenAPI
   * and CEL validation; fake-apiserver/crd-validation.ts). Default: the CRDs pgwarden ships, as a cluster that had
   * `helm install` run on it has them.
   */
  constructor(types: ResourceType[] = BUILTIN_RESOURCE_TYPES, opts: { crds?: Json[] } = {}) {
    for (const t of types) this.addType(t);
    for (const crd of opts.crds ?? [databaseAccessPolicyCrd(), maskingRuleCrd()]) this.installCrd(crd);
  }

  /** Enforces a CRD's schema on its kind (which must be one of this server's types). */
  installCrd(crd: Json): void {
    const schema = new CrdSchema(crd);
    const rt = this.types.find(
      (t) => t.group === schema.group && t.version === schema.version && t.plural === schema.plural,
    );
    if (!rt) throw new Error(`no resource type ${schema.plural}.${schema.group}/${schema.version} for CRD`);
    this.store.setSchema(rt, schema);
  }

  addType(rt: ResourceType): void {
    this.types.push(rt);
    this.store.register(rt);
  }

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err) => send(res, 500, statusFailure(500, 'InternalError', String(err))));
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this.url;
  }

  async stop(): Promise<void> {
    for (const w of this.live) w.res.destroy();
    this.live.clear();
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  /** A kubeconfig (as KubeConfig.loadFromOptions takes it) pointing at this server. */
  kubeconfig() {
    return {
      clusters: [{ name: 'fake', server: this.url, skipTLSVerify: true }],
      users: [{ name: 'tester', token: 'fake-token' }],
      contexts: [{ name: 'fake', cluster: 'fake', user: 'tester' }],
      currentContext: 'fake',
    };
  }

  // ---- fault injection -------------------------------------------------------------------------------------------

  /** Resets every open watch connection (TCP destroy), as a load balancer or apiserver restart would. */
  dropWatches(): number {
    const n = this.live.size;
    for (const w of this.live) w.res.destroy();
    this.live.clear();
    return n;
  }

  /** Keeps watch connections open but stops writing to them (a half-dead connection). */
  stallWatches(): void {
    for (const w of this.live) w.stalled = true;
  }

  /** The next `n` watch requests receive an ERROR event with a 410 Status, whatever their resourceVersion. */
  expireNextWatches(n = 1): void {
    this.expireWatches += n;
  }

  /** Compacts history: every watch from an older resourceVersion answers 410 Gone. */
  compact(): void {
    this.store.compact();
  }

  /** The next `times` matching requests fail with `status` (a Status body). */
  failNext(f: Partial<InjectedFailure> & { status: number }): void {
    this.failures.push({ times: 1, ...f });
  }

  /**
   * Once, on the next matching request: `before` runs `action` before the server handles it, `after` runs it after
   * the response is computed and before it is sent, so the client acts on what is by then stale (another writer
   * landing between a client's read and its write). The request waits for the action (which may itself call this
   * server).
   */
  interleave(f: { method?: string; pathIncludes?: string; when?: 'before' | 'after' }, action: () => unknown): void {
    this.interleavings.push({ when: 'after', ...f, action });
  }

  private async interleaved(when: 'before' | 'after', method: string, path: string): Promise<void> {
    const i = this.interleavings.findIndex(
      (x) =>
        x.when === when && (!x.method || x.method === method) && (!x.pathIncludes || path.includes(x.pathIncludes)),
    );
    if (i < 0) return;
    const [x] = this.interleavings.splice(i, 1);
    await x.action();
  }

  /** Sends a BOOKMARK to every watch that asked for bookmarks (allowWatchBookmarks=true). */
  bookmark(): void {
    for (const w of this.live) {
      if (w.bookmarks) {
        w.watcher.send({
          type: 'BOOKMARK',
          object: {
            kind: w.watcher.rt.kind,
            apiVersion: groupVersion(w.watcher.rt),
            metadata: { resourceVersion: this.store.resourceVersion },
          },
        });
      }
    }
  }

  get openWatches(): number {
    return this.live.size;
  }

  // ---- convenience for test setup (bypasses HTTP) ------------------------------------------------------------------

  typeFor(apiVersion: string, kind: string): ResourceType {
    const rt = this.types.find((t) => groupVersion(t) === apiVersion && t.kind === kind);
    if (!rt) throw new Error(`fake apiserver does not serve ${apiVersion} ${kind}`);
    return rt;
  }

  seed(obj: Json): Json {
    const rt = this.typeFor(obj.apiVersion, obj.kind);
    const created = this.store.create(rt, obj.metadata?.namespace, obj);
    if (rt.status && obj.status !== undefined) {
      return this.store.replace(
        rt,
        obj.metadata?.namespace,
        obj.metadata.name,
        { status: obj.status },
        { subresource: 'status' },
      );
    }
    return created;
  }

  get(apiVersion: string, kind: string, namespace: string | undefined, name: string): Json | undefined {
    return this.store.tryGet(this.typeFor(apiVersion, kind), namespace, name);
  }

  // ---- HTTP ---------------------------------------------------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const query = Object.fromEntries(url.searchParams);
    const method = req.method ?? 'GET';
    this.requests.push({ method, path: url.pathname, query, contentType: req.headers['content-type'] });
    const body = await readBody(req);
    const failure = this.failures.find(
      (f) =>
        f.times > 0 && (!f.method || f.method === method) && (!f.pathIncludes || url.pathname.includes(f.pathIncludes)),
    );
    if (failure) {
      failure.times--;
      return send(res, failure.status, statusFailure(failure.status, 'InternalError', 'injected failure'));
    }
    try {
      const discovery = discoveryFor(this.types, url.pathname);
      if (discovery) return send(res, 200, discovery);
      const route = routeFor(this.types, url.pathname);
      if (!route) throw new ApiError(404, 'NotFound', `the server could not find the requested resource`);
      const isWatch = query.watch === 'true' || query.watch === '1';
      if (method === 'GET' && isWatch) return this.watch(route, query, res);
      await this.interleaved('before', method, url.pathname);
      let answer: Json;
      try {
        answer = this.serve(method, route, query, body, req.headers['content-type'] ?? '');
      } finally {
        await this.interleaved('after', method, url.pathname);
      }
      send(res, 200, answer);
    } catch (err) {
      if (err instanceof ApiError) return send(res, err.code, err.toStatus());
      if (err instanceof JsonPatchError || err instanceof SyntaxError) {
        return send(res, 422, statusFailure(422, 'Invalid', `invalid patch: ${err.message}`));
      }
      throw err;
    }
  }

  private serve(method: string, r: Route, q: Record<string, string>, body: string, contentType: string): Json {
    const { rt, namespace: ns, name } = r;
    const store = this.store;
    const sub = r.subresource === 'status' ? ('status' as const) : undefined;
    if (r.subresource && !sub) throw new ApiError(404, 'NotFound', `subresource ${r.subresource} not served`);
    if (sub && !rt.status) throw new ApiError(404, 'NotFound', `${rt.plural} has no status subresource`);
    const opts = { subresource: sub, fieldManager: q.fieldManager };
    if (!name) {
      if (method === 'GET') {
        const { items, resourceVersion } = store.list(this.filter(r, q));
        return { kind: `${rt.kind}List`, apiVersion: groupVersion(rt), metadata: { resourceVersion }, items };
      }
      if (method === 'POST') {
        const obj = JSON.parse(body);
        if (rt.namespaced && obj.metadata?.namespace && obj.metadata.namespace !== ns) {
          throw new ApiError(
            400,
            'BadRequest',
            'the namespace of the provided object does not match the namespace sent on the request',
          );
        }
        return store.create(rt, ns, obj, opts);
      }
      throw new ApiError(405, 'MethodNotAllowed', `${method} is not supported on collections here`);
    }
    switch (method) {
      case 'GET':
        return store.get(rt, ns, name);
      case 'PUT':
        return store.replace(rt, ns, name, JSON.parse(body), opts);
      case 'DELETE': {
        // DeleteOptions.preconditions: the object must still be the one the client looked at.
        const pre = body ? JSON.parse(body)?.preconditions : undefined;
        if (pre?.uid || pre?.resourceVersion) {
          const cur = store.get(rt, ns, name);
          if (pre.uid && pre.uid !== cur.metadata.uid)
            throw new ApiError(
              409,
              'Conflict',
              `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${cur.metadata.uid}`,
            );
          if (pre.resourceVersion && pre.resourceVersion !== cur.metadata.resourceVersion)
            throw new ApiError(
              409,
              'Conflict',
              `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${cur.metadata.resourceVersion}`,
            );
        }
        return store.delete(rt, ns, name);
      }
      case 'PATCH': {
        const type = contentType.split(';')[0].trim();
        if (type === 'application/apply-patch+yaml') {
          return store.apply(rt, ns, name, parseYaml(body), { ...opts, force: q.force === 'true' });
        }
        const current = store.get(rt, ns, name);
        let next: Json;
        if (type === 'application/json-patch+json') next = applyJsonPatch(current, JSON.parse(body));
        // Strategic merge is approximated by a JSON merge patch (lists replaced rather than merged by key).
        else if (type === 'application/merge-patch+json' || type === 'application/strategic-merge-patch+json') {
          next = applyMergePatch(current, JSON.parse(body));
        } else
          throw new ApiError(
            415,
            'UnsupportedMediaType',
            `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml`,
          );
        const patchRv = JSON.parse(body)?.metadata?.resourceVersion;
        if (!patchRv && next.metadata) next.metadata.resourceVersion = undefined;
        return store.replace(rt, ns, name, next, opts);
      }
      default:
        throw new ApiError(405, 'MethodNotAllowed', `${method} not allowed`);
    }
  }

  private filter(r: Route, q: Record<string, string>): WatchFilter {
    const selector = q.labelSelector ? parseSelectorString(q.labelSelector) : [];
    let name: string | undefined;
    for (const part of (q.fieldSelector ?? '').split(',').filter(Boolean)) {
      const m = part.match(/^metadata\.name==?(.*)$/);
      if (m) name = m[1];
      else if (!part.startsWith('metadata.namespace'))
        throw new ApiError(400, 'BadRequest', `field label not supported: ${part}`);
    }
    return { rt: r.rt, namespace: r.namespace, selector, name: name ?? r.name };
  }

  private watch(r: Route, q: Record<string, string>, res: ServerResponse): void {
    const expired = this.expireWatches > 0;
    if (expired) this.expireWatches--;
    serveWatch(this.store, this.live, this.filter(r, q), q, res, expired);
  }
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return void res.end();
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}
