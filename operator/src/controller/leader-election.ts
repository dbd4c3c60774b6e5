/**
 * Leader election through a coordination.k8s.io/v1 Lease, the protocol client-go's leaderelection package uses
 * (https://kubernetes.io/docs/concepts/architecture/leases/): the holder renews `renewTime` every retry period; a
 * candidate takes over only after `leaseDurationSeconds` without renewal; every write is a PUT conditional on the
 * resourceVersion it read, so two candidates cannot both win (the loser gets 409 Conflict).
 */
import { CoordinationV1Api, type KubeConfig, type V1Lease } from '@kubernetes/client-node';
import type { OperatorEvents } from '../core/operator-events.js';
import { sleep } from './backoff.js';

export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationSeconds?: number;
  /** How often to try to acquire or renew. */
  retryPeriodMs?: number;
  /** The holder gives up leadership if it could not renew within this long. */
  renewDeadlineMs?: number;
  now?: () => Date;
}

/** metav1.MicroTime: RFC 3339 with exactly six fractional digits. */
export function microTime(d: Date): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

export class LeaderElector {
  private readonly api: CoordinationV1Api;
  private readonly stopper = new AbortController();
  private leading = false;
  private lastRenew = 0;
  private loop?: Promise<void>;

  constructor(
    kc: KubeConfig,
    private readonly opts: LeaderElectionOptions,
    private readonly events: OperatorEvents,
    private readonly callbacks: {
      onStartedLeading: () => void | Promise<void>;
      onStoppedLeading: () => void | Promise<void>;
    },
  ) {
    this.api = kc.makeApiClient(CoordinationV1Api);
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Stops campaigning; a leader releases the lease (holderIdentity cleared) so a standby takes over at once. */
  async stop(): Promise<void> {
    this.stopper.abort();
    await this.loop;
    if (this.leading) {
      await this.release().catch(() => undefined);
      await this.setLeading(false, 'stopped');
    }
  }

  private get durationMs(): number {
    return (this.opts.leaseDurationSeconds ?? 15) * 1000;
  }

  private async run(): Promise<void> {
    const retry = this.opts.retryPeriodMs ?? 2000;
    const deadline = this.opts.renewDeadlineMs ?? Math.floor(this.durationMs * (2 / 3));
    while (!this.stopper.signal.aborted) {
      let ok = false;
      try {
        ok = await this.tryAcquireOrRenew();
      } catch {
        ok = false; // API errors: keep trying; leadership ends once the renew deadline passes
      }
      const now = Date.now();
      if (ok) {
        this.lastRenew = now;
        if (!this.leading) await this.setLeading(true, 'acquired');
      } else if (this.leading && now - this.lastRenew > deadline) {
        await this.setLeading(false, 'renew deadline exceeded');
      }
      await sleep(retry, this.stopper.signal);
    }
  }

  private async setLeading(leading: boolean, reason: string): Promise<void> {
    if (this.leading === leading) return;
    this.leading = leading;
    const lease = `${this.opts.namespace}/${this.opts.name}`;
    if (leading) {
      this.events.emit('leader.acquired', { identity: this.opts.identity, lease });
      await this.callbacks.onStartedLeading();
    } else {
      this.events.emit('leader.lost', { identity: this.opts.identity, lease, reason });
      await this.callbacks.onStoppedLeading();
    }
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { namespace, name, identity } = this.opts;
    const now = this.opts.now?.() ?? new Date();
    let lease: V1Lease;
    try {
      lease = await this.api.readNamespacedLease({ namespace, name });
    } catch (err: any) {
      if (err?.code !== 404) throw err;
      await this.api.createNamespacedLease({
        namespace,
        body: {
          metadata: { name, namespace },
          spec: {
            holderIdentity: identity,
            leaseDurationSeconds: this.durationMs / 1000,
            acquireTime: microTime(now) as any,
            renewTime: microTime(now) as any,
            leaseTransitions: 0,
          },
        },
      });
      return true;
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity;
    const renewed = spec.renewTime ? new Date(spec.renewTime as any).getTime() : 0;
    const expired = renewed + (spec.leaseDurationSeconds ?? 15) * 1000 < now.getTime();
    if (holder && holder !== identity && !expired) return false;
    const takeover = holder !== identity;
    const next: V1Lease = {
      ...lease,
      spec: {
        ...spec,
        holderIdentity: identity,
        leaseDurationSeconds: this.durationMs / 1000,
        renewTime: microTime(now) as any,
        ...(takeover ? { acquireTime: microTime(now) as any, leaseTransitions: (spec.leaseTransitions ?? 0) + 1 } : {}),
      },
    };
    try {
      await this.api.replaceNamespacedLease({ namespace, name, body: next });
      return true;
    } catch (err: any) {
      if (err?.code === 409) return false; // someone else wrote first
      throw err;
    }
  }

  private async release(): Promise<void> {
    const { namespace, name, identity } = this.opts;
    const lease = await this.api.readNamespacedLease({ namespace, name });
    if (lease.spec?.holderIdentity !== identity) return;
    await this.api.replaceNamespacedLease({
      namespace,
      name,
      body: {
        ...lease,
        spec: {
          ...lease.spec,
          holderIdentity: undefined,
          leaseDurationSeconds: 1,
          renewTime: microTime(new Date()) as any,
        },
      },
    });
  }
}
