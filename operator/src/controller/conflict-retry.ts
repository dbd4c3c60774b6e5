/**
 * Optimistic concurrency for reconciliations: the controller's writes carry the resourceVersion they were computed
 * from (k8s-writes.ts), so when another writer got in between (a second operator replica, a leader handing over,
 * someone with kubectl) the API server answers 409 and nothing is overwritten. The reconciliation then runs again on
 * the object as the API server has it now, not on the informer cache, which may still lag behind that other write.
 * https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions
 */
import type { KubeObject } from './list-watch.js';

/**
 * 409 from the API server: Conflict (a resourceVersion or uid precondition failed) or AlreadyExists (a create lost
 * the race). Both mean "read again and decide again". The controller's applies are forced, so an apply never gets a
 * field-ownership 409.
 */
export function isConflict(err: unknown): boolean {
  return (err as { code?: number } | undefined)?.code === 409;
}

export interface ConflictRetryOptions {
  /** Attempts in all, the first included. */
  attempts?: number;
  /** Wait before the second attempt; doubled for each further one. */
  backoffMs?: number;
  sleep?: (ms: number) => Promise<void>;
}

/**
 * Runs `reconcile` on `raw`; after a 409 re-reads the object (`read`) and runs it again on that, a few times with a short
 * backoff (two writers fighting settle quickly, and a retry on fresh data is what resolves it). Stops when the object
 * is gone. Past the last attempt the 409 is thrown, and the work queue retries later with its own backoff.
 */
export async function reconcileRetryingConflicts(
  raw: KubeObject,
  read: () => Promise<Record<string, any> | undefined>,
  reconcile: (obj: KubeObject) => Promise<void>,
  opts: ConflictRetryOptions = {},
): Promise<void> {
  const attempts = opts.attempts ?? 4;
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  let obj = raw;
  for (let n = 1; ; n++) {
    try {
      return await reconcile(obj);
    } catch (err) {
      if (!isConflict(err) || n >= attempts) throw err;
    }
    await sleep((opts.backoffMs ?? 50) * 2 ** (n - 1));
    const fresh = await read();
    if (!fresh) return; // deleted meanwhile: nothing left to reconcile
    obj = JSON.parse(JSON.stringify(fresh)) as KubeObject;
  }
}
