/**
 * Typed events the operator's core emits instead of logging. Logging (pino) and metrics (prom-client) subscribe in
 * observability.ts; tests subscribe directly to assert on behaviour.
 */
export interface OperatorEventMap {
  'watch.synced': { resource: string; items: number };
  'watch.restarted': {
    resource: string;
    reason: 'gone' | 'error' | 'closed' | 'watchdog';
    delayMs: number;
    error?: string;
  };
  'watch.error': { resource: string; phase: 'list' | 'watch'; error: string };
  'queue.depth': { depth: number };
  'reconcile.done': { key: string; durationMs: number };
  'reconcile.failed': { key: string; error: string; retryInMs: number };
  'policy.rendered': { namespace: string; name: string; hash: string; changed: boolean; matchedWorkloads: number };
  'policy.invalid': { namespace: string; name: string; message: string };
  /** Keys someone else added to a rendered ConfigMap, removed. */
  'policy.configmap-restored': { namespace: string; name: string; keys: string };
  /** A valid policy that could not be written to its ConfigMap (too large, a ConfigMap of someone else's). */
  'policy.undeliverable': { namespace: string; name: string; reason: string; message: string };
  /** A rendered ConfigMap someone made immutable, deleted and created again. */
  'policy.configmap-recreated': { namespace: string; name: string };
  'workload.rolled': {
    namespace: string;
    kind: string;
    name: string;
    /** A new sidecar shape, or */
    sidecarHash?: string;
    /** the rendered ConfigMap that replaced a frozen one. */
    configMapUid?: string;
  };
  'leader.acquired': { identity: string; lease: string };
  'leader.lost': { identity: string; lease: string; reason: string };
  'webhook.admission': {
    namespace: string;
    pod: string;
    result: 'injected' | 'skipped' | 'denied' | 'error';
    reason?: string;
    durationMs: number;
  };
  'tls.issued': { notAfter: string; reason: 'initial' | 'rotation' | 'loaded' };
  'tls.error': { error: string };
}

export type OperatorEventName = keyof OperatorEventMap;
type Listener<K extends OperatorEventName> = (payload: OperatorEventMap[K]) => void;

export class OperatorEvents {
  private readonly listeners = new Map<OperatorEventName, Set<Listener<any>>>();

  on<K extends OperatorEventName>(name: K, fn: Listener<K>): () => void {
    let set = this.listeners.get(name);
    if (!set) {
      set = new Set();
      this.listeners.set(name, set);
    }
    set.add(fn);
    return () => set.delete(fn);
  }

  emit<K extends OperatorEventName>(name: K, payload: OperatorEventMap[K]): void {
    for (const fn of this.listeners.get(name) ?? []) {
      try {
        fn(payload);
      } catch {
        // A failing subscriber (logger, metrics) must never break the control loop.
      }
    }
  }

  /** Resolves with the first payload of `name` that satisfies `pred` (tests). */
  once<K extends OperatorEventName>(
    name: K,
    pred: (p: OperatorEventMap[K]) => boolean = () => true,
    timeoutMs = 10_000,
  ) {
    return new Promise<OperatorEventMap[K]>((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error(`timed out waiting for ${name}`));
      }, timeoutMs);
      const off = this.on(name, (p) => {
        if (pred(p)) {
          clearTimeout(timer);
          off();
          resolve(p);
        }
      });
    });
  }
}
