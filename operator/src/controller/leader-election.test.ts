import { KubeConfig } from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { OperatorEvents } from '../core/operator-events.js';
import { FakeApiServer } from '../testing/fake-apiserver.js';
import { LeaderElector, microTime } from './leader-election.js';

let api: FakeApiServer;
let kc: KubeConfig;
const electors: LeaderElector[] = [];

beforeEach(async () => {
  api = new FakeApiServer();
  await api.start();
  kc = new KubeConfig();
  kc.loadFromOptions(api.kubeconfig());
  api.seed({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'pgwarden' } });
});
afterEach(async () => {
  for (const e of electors.splice(0)) await e.stop();
  await api.stop();
});

function elector(identity: string, events: OperatorEvents, log: string[]) {
  const e = new LeaderElector(
    kc,
    {
      namespace: 'pgwarden',
      name: 'pgwarden-operator',
      identity,
      leaseDurationSeconds: 1,
      retryPeriodMs: 50,
      renewDeadlineMs: 600,
    },
    events,
    {
      onStartedLeading: () => void log.push(`${identity} leads`),
      onStoppedLeading: () => void log.push(`${identity} stops`),
    },
  );
  electors.push(e);
  return e;
}

const lease = () => api.get('coordination.k8s.io/v1', 'Lease', 'pgwarden', 'pgwarden-operator');
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('leader election through a coordination.k8s.io/v1 Lease', () => {
  it('exactly one of two candidates leads; the other takes over when the leader releases', async () => {
    const events = new OperatorEvents();
    const log: string[] = [];
    const a = elector('a', events, log);
    const b = elector('b', events, log);
    a.start();
    await events.once('leader.acquired');
    b.start();
    await wait(400);
    expect([a.isLeader, b.isLeader]).toEqual([true, false]);
    expect(lease().spec).toMatchObject({ holderIdentity: 'a', leaseDurationSeconds: 1, leaseTransitions: 0 });
    expect(lease().spec.renewTime).toMatch(/\.\d{6}Z$/);
    const taken = events.once('leader.acquired', (e) => e.identity === 'b');
    await a.stop();
    await taken;
    expect(b.isLeader).toBe(true);
    expect(lease().spec).toMatchObject({ holderIdentity: 'b', leaseTransitions: 1 });
    expect(log).toEqual(['a leads', 'a stops', 'b leads']);
  });

  it('takes over an expired lease of a dead holder, never a live one', async () => {
    const stale = new Date(Date.now() - 5000);
    api.seed({
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: 'pgwarden-operator', namespace: 'pgwarden' },
      spec: { holderIdentity: 'dead', leaseDurationSeconds: 1, renewTime: microTime(stale), leaseTransitions: 3 },
    });
    const events = new OperatorEvents();
    const c = elector('c', events, []);
    c.start();
    await events.once('leader.acquired');
    expect(lease().spec).toMatchObject({ holderIdentity: 'c', leaseTransitions: 4 });
  });

  it('steps down when it cannot renew (API unavailable past the renew deadline)', async () => {
    const events = new OperatorEvents();
    const log: string[] = [];
    const d = elector('d', events, log);
    d.start();
    await events.once('leader.acquired');
    api.failNext({ status: 503, pathIncludes: '/leases', times: 1000 });
    const lost = await events.once('leader.lost', () => true, 5000);
    expect(lost.reason).toMatch(/renew deadline/);
    expect(d.isLeader).toBe(false);
  });
});
