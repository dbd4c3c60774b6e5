import type { ServerResponse } from 'node:http';
import type { ObjectStore, WatchEvent, Watcher, WatchFilter } from './object-store.js';
import { statusFailure } from './resource-types.js';

export interface LiveWatch {
  watcher: Watcher;
  res: ServerResponse;
  stalled: boolean;
  bookmarks: boolean;
}

/**
 * One watch request: a chunked stream of newline-delimited WatchEvents
 * (https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes). Without a
 * resourceVersion (or "0") the current state comes first as synthetic ADDED events; from a resourceVersion older than
 * the retained history the stream carries one ERROR event with a 410 Expired Status and ends, as kube-apiserver does.
 */
export function serveWatch(
  store: ObjectStore,
  live: Set<LiveWatch>,
  f: WatchFilter,
  q: Record<string, string>,
  res: ServerResponse,
  forceExpired: boolean,
): void {
  res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
  res.flushHeaders();
  const write = (ev: WatchEvent) => res.write(`${JSON.stringify(ev)}\n`);
  const gone = (msg: string) => {
    write({ type: 'ERROR', object: statusFailure(410, 'Expired', msg) });
    res.end();
  };
  if (forceExpired) {
    gone(`too old resource version: ${q.resourceVersion ?? ''} (${store.resourceVersion})`);
    return;
  }
  let backlog: WatchEvent[];
  if (q.resourceVersion === undefined || q.resourceVersion === '' || q.resourceVersion === '0') {
    backlog = store.list(f).items.map((object) => ({ type: 'ADDED' as const, object }));
  } else {
    const since = store.eventsSince(f, Number(q.resourceVersion));
    if (!since) {
      gone(`too old resource version: ${q.resourceVersion} (${store.compactedRv})`);
      return;
    }
    backlog = since;
  }
  const lw: LiveWatch = {
    res,
    stalled: false,
    bookmarks: q.allowWatchBookmarks === 'true',
    watcher: { ...f, send: (ev) => !lw.stalled && !res.writableEnded && write(ev) },
  };
  for (const ev of backlog) write(ev);
  live.add(lw);
  store.watchers.add(lw.watcher);
  const timeout = Number(q.timeoutSeconds ?? 0);
  const timer = timeout > 0 ? setTimeout(() => res.end(), timeout * 1000) : undefined;
  res.on('close', () => {
    live.delete(lw);
    store.watchers.delete(lw.watcher);
    clearTimeout(timer);
  });
}
