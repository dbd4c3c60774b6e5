/**
 * List + watch for one resource type, kept alive forever. @kubernetes/client-node's informer re-lists only on 410,
 * stops on other errors and drops the watch timeout (FACTS.md), so this is the small replacement:
 * - list, then watch from the list's resourceVersion (https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes);
 * - a 410 Gone (HTTP status, or an ERROR event carrying a 410 Status) → relist and diff against the cache;
 * - any other error or a closed stream → reconnect from the last seen resourceVersion with jittered backoff;
 * - bookmarks (allowWatchBookmarks) advance the resourceVersion and count as liveness;
 * - a watchdog aborts a connection that delivered nothing (not even a bookmark) for `watchdogMs`;
 * - every `resyncMs` all cached objects are handed to the handler again (level-triggered reconciliation).
 */
import { type KubeConfig, KubernetesObjectApi, Watch } from '@kubernetes/client-node';
import type { OperatorEvents } from '../core/operator-events.js';
import { Backoff, sleep } from './backoff.js';

export type KubeObject = {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; resourceVersion?: string; [k: string]: any };
  [k: string]: any;
};

export type ChangeType = 'added' | 'updated' | 'deleted' | 'resync';
export type ChangeHandler = (type: ChangeType, obj: KubeObject, old?: KubeObject) => void;

export interface ResourceRef {
  apiVersion: string;
  kind: string;
  plural: string;
  namespace?: string;
  labelSelector?: string;
}

export interface ListWatchOptions {
  watchTimeoutSeconds?: number;
  backoff?: { initialMs: number; maxMs: number };
  resyncMs?: number;
  watchdogMs?: number;
  random?: () => number;
  /** Applied to every object before it is cached (drop what the controller never reads: big clusters, big pods). */
  transform?: (obj: KubeObject) => KubeObject;
}

type Outcome = { reason: 'gone' | 'error' | 'closed' | 'watchdog' | 'stopped'; error?: string; delivered: number };

export function objectKey(obj: { metadata: { name: string; namespace?: string } }): string {
  return obj.metadata.namespace ? `${obj.metadata.namespace}/${obj.metadata.name}` : obj.metadata.name;
}

export function collectionPath(ref: ResourceRef): string {
  const prefix = ref.apiVersion.includes('/') ? `/apis/${ref.apiVersion}` : `/api/${ref.apiVersion}`;
  return ref.namespace ? `${prefix}/namespaces/${ref.namespace}/${ref.plural}` : `${prefix}/${ref.plural}`;
}

export class ListWatch {
  readonly cache = new Map<string, KubeObject>();
  private resourceVersion = '';
  private readonly abort = new AbortController();
  private activeWatch?: AbortController;
  private readonly handlers: ChangeHandler[] = [];
  private readonly backoff: Backoff;
  private synced = false;
  private readonly syncWaiters: (() => void)[] = [];
  private loop?: Promise<void>;
  private resyncTimer?: NodeJS.Timeout;
  readonly name: string;

  constructor(
    private readonly kc: KubeConfig,
    private readonly ref: ResourceRef,
    private readonly events: OperatorEvents,
    private readonly opts: ListWatchOptions = {},
  ) {
    this.backoff = new Backoff({ ...(opts.backoff ?? { initialMs: 250, maxMs: 30_000 }), random: opts.random });
    this.name = ref.namespace ? `${ref.plural}@${ref.namespace}` : ref.plural;
  }

  onChange(fn: ChangeHandler): void {
    this.handlers.push(fn);
  }

  start(): void {
    this.loop ??= this.run();
    if (this.opts.resyncMs) {
      this.resyncTimer = setInterval(() => {
        for (const obj of this.cache.values()) this.dispatch('resync', obj);
      }, this.opts.resyncMs);
    }
  }

  async stop(): Promise<void> {
    this.abort.abort();
    this.activeWatch?.abort();
    clearInterval(this.resyncTimer);
    await this.loop;
  }

  /** Resolves once the first list has been loaded into the cache. */
  waitForSync(): Promise<void> {
    return this.synced ? Promise.resolve() : new Promise((r) => this.syncWaiters.push(r));
  }

  list(): KubeObject[] {
    return [...this.cache.values()];
  }

  private dispatch(type: ChangeType, obj: KubeObject, old?: KubeObject): void {
    for (const h of this.handlers) h(type, obj, old);
  }

  private async run(): Promise<void> {
    let needList = true;
    while (!this.abort.signal.aborted) {
      if (needList) {
        try {
          await this.relist();
          needList = false;
        } catch (err) {
          this.events.emit('watch.error', { resource: this.name, phase: 'list', error: errorText(err) });
          await sleep(this.backoff.next(), this.abort.signal);
          continue;
        }
      }
      const outcome = await this.watchOnce();
      if (outcome.reason === 'stopped') break;
      if (outcome.delivered > 0) this.backoff.reset();
      let delayMs = 0;
      if (outcome.reason === 'gone') needList = true;
      else if (outcome.reason !== 'closed' || outcome.delivered === 0) delayMs = this.backoff.next();
      this.events.emit('watch.restarted', {
        resource: this.name,
        reason: outcome.reason,
        delayMs,
        error: outcome.error,
      });
      await sleep(delayMs, this.abort.signal);
    }
  }

  private async relist(): Promise<void> {
    const client = KubernetesObjectApi.makeApiClient(this.kc);
    const res = await client.list(
      this.ref.apiVersion,
      this.ref.kind,
      this.ref.namespace,
      undefined,
      undefined,
      undefined,
      undefined,
      this.ref.labelSelector,
    );
    // Typed kinds come back as client-node model classes (Date timestamps); keep plain JSON like watch events.
    const plain = JSON.parse(JSON.stringify(res.items)) as KubeObject[];
    const items = this.opts.transform ? plain.map(this.opts.transform) : plain;
    const seen = new Set<string>();
    for (const obj of items) {
      const key = objectKey(obj);
      seen.add(key);
      const old = this.cache.get(key);
      this.cache.set(key, obj);
      if (!old) this.dispatch('added', obj);
      else if (old.metadata.resourceVersion !== obj.metadata.resourceVersion) this.dispatch('updated', obj, old);
    }
    for (const [key, old] of this.cache) {
      if (!seen.has(key)) {
        this.cache.delete(key);
        this.dispatch('deleted', old);
      }
    }
    this.resourceVersion = res.metadata?.resourceVersion ?? '';
    this.events.emit('watch.synced', { resource: this.name, items: items.length });
    if (!this.synced) {
      this.synced = true;
      for (const w of this.syncWaiters.splice(0)) w();
    }
  }

  private watchOnce(): Promise<Outcome> {
    return new Promise<Outcome>((resolve) => {
      let delivered = 0;
      let settled = false;
      let lastActivity = Date.now();
      let controller: AbortController | undefined;
      const watchdogMs = this.opts.watchdogMs ?? 0;
      const finish = (o: Omit<Outcome, 'delivered'>) => {
        if (settled) return;
        settled = true;
        clearInterval(dog);
        this.abort.signal.removeEventListener('abort', onStop);
        controller?.abort();
        resolve({ ...o, delivered });
      };
      const onStop = () => finish({ reason: 'stopped' });
      if (this.abort.signal.aborted) return resolve({ reason: 'stopped', delivered: 0 });
      this.abort.signal.addEventListener('abort', onStop, { once: true });
      const dog = watchdogMs
        ? setInterval(
            () => {
              if (Date.now() - lastActivity > watchdogMs) finish({ reason: 'watchdog' });
            },
            Math.max(10, Math.floor(watchdogMs / 4)),
          )
        : undefined;
      const onEvent = (phase: string, obj: any) => {
        if (settled) return;
        lastActivity = Date.now();
        if (phase === 'ERROR') {
          // https://kubernetes.io/docs/reference/using-api/api-concepts/#410-gone-responses
          if (obj?.code === 410) finish({ reason: 'gone', error: obj?.message });
          else finish({ reason: 'error', error: obj?.message ?? 'watch error event' });
          return;
        }
        const rv = obj?.metadata?.resourceVersion;
        if (rv) this.resourceVersion = rv;
        if (phase === 'BOOKMARK') return;
        delivered++;
        if (this.opts.transform) obj = this.opts.transform(obj);
        const key = objectKey(obj);
        const old = this.cache.get(key);
        if (phase === 'DELETED') {
          this.cache.delete(key);
          this.dispatch('deleted', obj);
        } else {
          this.cache.set(key, obj);
          this.dispatch(old ? 'updated' : 'added', obj, old);
        }
      };
      const onDone = (err: any) => {
        if (!err) return finish({ reason: 'closed' });
        if (err.statusCode === 410) return finish({ reason: 'gone', error: errorText(err) });
        finish({ reason: 'error', error: errorText(err) });
      };
      new Watch(this.kc)
        .watch(
          collectionPath(this.ref),
          {
            resourceVersion: this.resourceVersion || undefined,
            allowWatchBookmarks: true,
            timeoutSeconds: this.opts.watchTimeoutSeconds ?? 300,
            labelSelector: this.ref.labelSelector,
          },
          onEvent,
          onDone,
        )
        .then((c) => {
          controller = c;
          this.activeWatch = c;
          if (settled) c.abort();
        })
        .catch((err) => finish({ reason: 'error', error: errorText(err) }));
    });
  }
}

function errorText(err: unknown): string {
  if (err && typeof err === 'object') {
    const e = err as { statusCode?: number; code?: number; message?: string };
    const code = e.statusCode ?? e.code;
    return code ? `${code}: ${e.message ?? ''}` : (e.message ?? String(err));
  }
  return String(err);
}
