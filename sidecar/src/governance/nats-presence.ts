import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { ControlPolicyRef } from '@pgwarden/policy';

/** How often a sidecar says it serves a policy; a pod not heard for three periods no longer counts. */
export const PRESENCE_INTERVAL_MS = 2000;

/** Core NATS (no stream): presence only matters while it is fresh. Namespace `_` for a policy without one. */
export const presenceSubject = (p: ControlPolicyRef) => `pgwarden.presence.${p.namespace}.${p.name}`;

/** What presence needs from one listener (one policy) of the sidecar. */
export interface PresenceListener {
  policy(): ControlPolicyRef | undefined;
  /** Whether its policy splits guardrails.rateLimit among its pods (scope: policy): only those announce themselves. */
  shared(): boolean;
  /** How many pods serve the policy now, this one included. */
  setPods(n: number): void;
}

export interface NatsPresenceOptions {
  onConnected(listener: (nc: NatsConnection) => void): () => void;
  listeners: readonly PresenceListener[];
  /** This process, as its peers count it. */
  instance: string;
  intervalMs?: number;
  now?: () => number;
}

/**
 * `guardrails.rateLimit.scope: policy`: the sidecars serving a policy count each other, so each takes its share of
 * the policy's budget. Every period each announces itself on the policy's presence subject and counts the distinct
 * instances heard within the last three periods.
 *
 * While it cannot hear itself (NATS away) it keeps the last count instead of falling back to 1: a partition must not
 * hand every pod the whole budget. A pod that left stops counting after three periods, so the others' shares grow
 * back within about six seconds. Anything able to publish on the subject can only make the count larger, that is
 * the shares smaller.
 */
export function natsPresence(opts: NatsPresenceOptions): { close(): void } {
  const interval = opts.intervalMs ?? PRESENCE_INTERVAL_MS;
  const now = opts.now ?? (() => performance.now());
  const window = 3 * interval;
  const payload = JSON.stringify({ instance: opts.instance });
  /** Per presence subject: instance → when last heard. */
  const heard = new Map<string, Map<string, number>>();
  let nc: NatsConnection | undefined;
  let subscriptions: Subscription[] = [];

  const listen = (c: NatsConnection) => {
    for (const s of subscriptions) s.unsubscribe();
    subscriptions = [];
    for (const l of opts.listeners) {
      const p = l.policy();
      if (!p) continue;
      const subject = presenceSubject(p);
      const sub = c.subscribe(subject);
      subscriptions.push(sub);
      void (async () => {
        for await (const m of sub) {
          const instance = instanceOf(m.data);
          if (instance === undefined) continue;
          let seen = heard.get(subject);
          if (!seen) {
            seen = new Map();
            heard.set(subject, seen);
          }
          // Bounded: a flood of made-up instances is forgotten after the window like any other.
          if (seen.size < 10_000 || seen.has(instance)) seen.set(instance, now());
        }
      })().catch(() => {});
    }
  };

  const tick = () => {
    const t = now();
    for (const l of opts.listeners) {
      const p = l.policy();
      if (!p || !l.shared()) continue;
      const subject = presenceSubject(p);
      if (nc && !nc.isClosed()) nc.publish(subject, payload);
      const seen = heard.get(subject);
      const self = seen?.get(opts.instance);
      // Not hearing itself: the count is stale, not smaller.
      if (seen === undefined || self === undefined || t - self > window) continue;
      // Measured from when it last heard itself, so that losing the connection ages nobody ahead of it.
      let n = 0;
      for (const [instance, at] of seen) {
        if (self - at <= window) n++;
        else if (t - at > window) seen.delete(instance);
      }
      l.setPods(n);
    }
  };

  const off = opts.onConnected((c) => {
    if (c === nc) return;
    nc = c;
    listen(c);
    tick();
  });
  const timer = setInterval(tick, interval);
  timer.unref();
  return {
    close() {
      clearInterval(timer);
      off();
      for (const s of subscriptions) s.unsubscribe();
      subscriptions = [];
    },
  };
}

function instanceOf(data: Uint8Array): string | undefined {
  try {
    const o = JSON.parse(Buffer.from(data).toString('utf8')) as { instance?: unknown };
    return typeof o.instance === 'string' && o.instance.length > 0 && o.instance.length <= 128 ? o.instance : undefined;
  } catch {
    return undefined;
  }
}
