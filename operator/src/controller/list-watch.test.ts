import { KubeConfig } from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { OperatorEvents } from '../core/operator-events.js';
import { FakeApiServer } from '../testing/fake-apiserver.js';
import { type ChangeType, ListWatch } from './list-watch.js';

let api: FakeApiServer;
let kc: KubeConfig;
let events: OperatorEvents;
let lw: ListWatch;
let seen: string[];

const cm = (name: string, v = '1') => ({
  apiVersion: 'v1',
  kind: 'ConfigMap',
  metadata: { name, namespace: 'ns' },
  data: { v },
});

async function until(pred: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 10));
  }
}

beforeEach(async () => {
  api = new FakeApiServer();
  await api.start();
  kc = new KubeConfig();
  kc.loadFromOptions(api.kubeconfig());
  events = new OperatorEvents();
  api.seed({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'ns' } });
  api.seed(cm('a'));
  seen = [];
});
afterEach(async () => {
  await lw?.stop();
  await api.stop();
});

function start(opts = {}) {
  lw = new ListWatch(kc, { apiVersion: 'v1', kind: 'ConfigMap', plural: 'configmaps', namespace: 'ns' }, events, {
    backoff: { initialMs: 20, maxMs: 100 },
    ...opts,
  });
  lw.onChange((t: ChangeType, o) => seen.push(`${t} ${o.metadata.name}=${o.data?.v ?? ''}`));
  lw.start();
  return lw.waitForSync();
}

const rt = () => api.typeFor('v1', 'ConfigMap');

describe('ListWatch against the fake API server', () => {
  it('lists, then follows the watch stream', async () => {
    await start();
    expect(seen).toEqual(['added a=1']);
    api.seed(cm('b'));
    api.store.replace(rt(), 'ns', 'a', cm('a', '2'));
    api.store.delete(rt(), 'ns', 'b');
    await until(() => seen.length === 4);
    expect(seen).toEqual(['added a=1', 'added b=1', 'updated a=2', 'deleted b=1']);
    expect([...lw.cache.keys()]).toEqual(['ns/a']);
  });

  it('reconnects after dropped connections and resumes from the last resourceVersion without losing events', async () => {
    await start();
    await until(() => api.openWatches === 1);
    const restarts: string[] = [];
    events.on('watch.restarted', (e) => restarts.push(e.reason));
    for (let i = 0; i < 3; i++) {
      api.dropWatches();
      api.seed(cm(`x${i}`)); // written while no watch is connected
      await until(() => seen.includes(`added x${i}=1`));
    }
    expect(restarts.filter((r) => r === 'error' || r === 'closed').length).toBeGreaterThanOrEqual(3);
    const lists = api.requests.filter((r) => r.path === '/api/v1/namespaces/ns/configmaps' && !r.query.watch).length;
    expect(lists).toBe(1); // resumed from resourceVersion: no relist needed
  });

  it('relists on 410 Gone and reports deletions that happened while away', async () => {
    await start();
    await until(() => api.openWatches === 1);
    api.dropWatches();
    api.store.delete(rt(), 'ns', 'a');
    api.seed(cm('c'));
    api.compact(); // the watch's resourceVersion is now too old
    await until(() => seen.includes('deleted a=1') && seen.includes('added c=1'));
    expect([...lw.cache.keys()]).toEqual(['ns/c']);
    const relisted = api.requests.filter((r) => r.path === '/api/v1/namespaces/ns/configmaps' && !r.query.watch).length;
    expect(relisted).toBe(2);
  });

  it('relists on an ERROR event carrying a 410 Status', async () => {
    api.expireNextWatches(1);
    const gone = events.once('watch.restarted', (e) => e.reason === 'gone');
    await start();
    await gone;
    await until(() => api.openWatches === 1);
    api.seed(cm('d'));
    await until(() => seen.includes('added d=1'));
  });

  it('the watchdog replaces a connection that went silent', async () => {
    await start({ watchdogMs: 150 });
    await until(() => api.openWatches === 1);
    api.stallWatches();
    api.seed(cm('e')); // delivered to nobody: the stalled stream is dead
    const restarted = await events.once('watch.restarted', (e) => e.reason === 'watchdog');
    expect(restarted.resource).toBe('configmaps@ns');
    await until(() => seen.includes('added e=1'));
  });

  it('keeps retrying through API errors with backoff, and bookmarks keep a quiet watch alive', async () => {
    api.failNext({ status: 500, method: 'GET', times: 3 });
    const errors: string[] = [];
    events.on('watch.error', (e) => errors.push(e.error));
    await start({ watchdogMs: 300 });
    expect(errors.length).toBe(3);
    await until(() => api.openWatches === 1);
    let watchdog = 0;
    events.on('watch.restarted', (e) => e.reason === 'watchdog' && watchdog++);
    for (let i = 0; i < 6; i++) {
      await new Promise((r) => setTimeout(r, 100));
      api.bookmark();
    }
    expect(watchdog).toBe(0);
  });

  it('resyncs the cache periodically', async () => {
    await start({ resyncMs: 50 });
    await until(() => seen.filter((s) => s === 'resync a=1').length >= 2);
  });
});
