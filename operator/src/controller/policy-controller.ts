/**
 * Wires list+watch caches (DatabaseAccessPolicies, MaskingRules, Pods, the operator's ConfigMaps) to a keyed work
 * queue that runs reconcilePolicy. Every relevant change enqueues the policies it can affect; the periodic resync
 * re-enqueues everything (level-triggered: missed events heal).
 */

import type { KubeConfig } from '@kubernetes/client-node';
import { type DatabaseAccessPolicy, type MaskingRule, matchesLabelSelector } from '@pgwarden/policy';
import type { OperatorEvents } from '../core/operator-events.js';
import type { SidecarConfig } from '../webhook/sidecar-config.js';
import { configMapName } from '../webhook/sidecar-container.js';
import { type ConflictRetryOptions, reconcileRetryingConflicts } from './conflict-retry.js';
import { K8sWrites } from './k8s-writes.js';
import { type KubeObject, ListWatch, type ListWatchOptions, objectKey } from './list-watch.js';
import { reconcileMaskingRule } from './reconcile-masking-rule.js';
import { type RolloutStrategy, reconcilePolicy } from './reconcile-policy.js';
import { WorkQueue } from './work-queue.js';

/** Work-queue keys of MaskingRules carry this prefix; policy keys are plain `namespace/name`. */
const RULE_PREFIX = 'MaskingRule:';

export interface PolicyControllerOptions {
  kc: KubeConfig;
  events: OperatorEvents;
  sidecar: SidecarConfig;
  defaultRollout?: RolloutStrategy;
  /** Restrict to one namespace (default: all namespaces). */
  namespace?: string;
  watch?: ListWatchOptions;
  concurrency?: number;
  retry?: { initialMs: number; maxMs: number };
  /** Re-reads and reconciles again after a 409 (a write that landed between our read and our write). */
  conflictRetry?: ConflictRetryOptions;
  /** Secret (keys username, password) the controller copies into policy namespaces for the sidecars' NATS user. */
  auditCredentials?: { namespace: string; name: string };
  /** Secret (key signing.key) the controller copies into policy namespaces for the sidecars' checkpoint signatures. */
  auditSigningKey?: { namespace: string; name: string };
  /** Secret (key ca.crt) the controller copies into policy namespaces: the CA the sidecars verify NATS with. */
  auditNatsCa?: { namespace: string; name: string };
  /** While an audit Secret's source is missing, look again this often (default 30 s). */
  auditRecheckMs?: number;
  /** ReconcileDeps.refreshPods: annotate a policy's running pods when its content changes. */
  refreshPods?: boolean;
}

export class PolicyController {
  readonly policies: ListWatch;
  readonly maskingRules: ListWatch;
  readonly pods: ListWatch;
  readonly configMaps: ListWatch;
  readonly queue: WorkQueue;

  constructor(opts: PolicyControllerOptions) {
    const { kc, events, namespace } = opts;
    const w = opts.watch ?? {};
    this.policies = new ListWatch(
      kc,
      {
        apiVersion: 'pgwarden.dev/v1alpha1',
        kind: 'DatabaseAccessPolicy',
        plural: 'databaseaccesspolicies',
        namespace,
      },
      events,
      w,
    );
    this.maskingRules = new ListWatch(
      kc,
      { apiVersion: 'pgwarden.dev/v1alpha1', kind: 'MaskingRule', plural: 'maskingrules', namespace },
      events,
      w,
    );
    // Pods are the biggest cache: keep only the metadata the controller reads (labels, owners, deletion).
    this.pods = new ListWatch(kc, { apiVersion: 'v1', kind: 'Pod', plural: 'pods', namespace }, events, {
      ...w,
      transform: podMetadataOnly,
    });
    this.configMaps = new ListWatch(
      kc,
      {
        apiVersion: 'v1',
        kind: 'ConfigMap',
        plural: 'configmaps',
        namespace,
        labelSelector: 'app.kubernetes.io/managed-by=pgwarden',
      },
      events,
      w,
    );
    const writes = new K8sWrites(kc);
    const lastRendered = new Map<string, string>();
    this.queue = new WorkQueue(
      async (key) => {
        if (key.startsWith(RULE_PREFIX)) {
          const rule = this.maskingRules.cache.get(key.slice(RULE_PREFIX.length));
          if (rule) {
            await reconcileRetryingConflicts(
              rule,
              () => writes.readCustomObject(pgwardenRef('MaskingRule', rule)),
              (r) => reconcileMaskingRule({ policies: () => this.policies.list(), writes }, r),
              opts.conflictRetry,
            );
          }
          return;
        }
        const obj = this.policies.cache.get(key);
        if (!obj) {
          lastRendered.delete(key);
          return; // deleted: the ConfigMap goes with it (ownerReference garbage collection)
        }
        const deps = {
          policies: () => this.policies.list(),
          maskingRules: () => this.maskingRules.list(),
          pods: () => this.pods.list(),
          writes,
          events,
          sidecar: opts.sidecar,
          defaultRollout: opts.defaultRollout ?? 'Workload',
          lastRendered,
          auditCredentials: opts.auditCredentials,
          auditSigningKey: opts.auditSigningKey,
          auditNatsCa: opts.auditNatsCa,
          refreshPods: opts.refreshPods,
          requeueAfter: () => {
            const t = setTimeout(() => this.queue.add(key), opts.auditRecheckMs ?? 30_000);
            t.unref();
          },
        };
        await reconcileRetryingConflicts(
          obj,
          () => writes.readCustomObject(pgwardenRef('DatabaseAccessPolicy', obj)),
          (p) => reconcilePolicy(deps, p),
          opts.conflictRetry,
        );
      },
      events,
      { concurrency: opts.concurrency ?? 2, retry: opts.retry },
    );

    this.policies.onChange((type, obj, old) => {
      // Our own status writes come back as MODIFIED events; only spec/metadata changes (or resyncs) need work.
      if (type === 'updated' && old && sameExceptStatus(obj, old)) return;
      this.queue.add(objectKey(obj));
      // Which MaskingRules select which policies may have changed (names, labels).
      if (type !== 'updated' || !old || JSON.stringify(obj.metadata.labels) !== JSON.stringify(old.metadata.labels)) {
        for (const r of this.maskingRules.list())
          if (r.metadata.namespace === obj.metadata.namespace) this.queue.add(RULE_PREFIX + objectKey(r));
      }
    });
    this.maskingRules.onChange((type, obj, old) => {
      if (type === 'updated' && old && sameExceptStatus(obj, old)) return;
      this.queue.add(RULE_PREFIX + objectKey(obj));
      this.enqueueNamespace(obj.metadata.namespace);
    });
    this.pods.onChange((type, obj, old) => {
      // Pod status churns constantly; only label/owner/annotation/deletion changes matter here.
      if (type === 'updated' && old && samePodMetadata(obj, old)) return;
      for (const pod of [obj, old]) if (pod) this.enqueueSelecting(pod);
    });
    this.configMaps.onChange((type, obj) => {
      // Someone edited or deleted a rendered ConfigMap: put it back.
      if (type === 'resync') return;
      // An edit that drops our label leaves the watch's selector; the DELETED it causes may show the edited object.
      const policy =
        obj.metadata.labels?.['pgwarden.dev/policy'] ??
        this.policies
          .list()
          .find(
            (p) =>
              p.metadata.namespace === obj.metadata.namespace && configMapName(p.metadata.name) === obj.metadata.name,
          )?.metadata.name;
      if (policy) this.queue.add(`${obj.metadata.namespace}/${policy}`);
    });
  }

  async start(): Promise<void> {
    for (const lw of [this.policies, this.maskingRules, this.pods, this.configMaps]) lw.start();
    // The webhook waits for the MaskingRules too: a pod admitted before them would lack its masking key mounts
    // for its whole life (the sidecar would hash with a random key).
    void Promise.all([this.policies.waitForSync(), this.maskingRules.waitForSync()]).then(() => {
      this._synced = true;
    });
    await Promise.all([this.policies, this.maskingRules, this.pods, this.configMaps].map((lw) => lw.waitForSync()));
  }

  get synced(): boolean {
    return this._synced;
  }
  private _synced = false;

  /**
   * Starts reconciling (on becoming leader). Only against complete caches: a policy rendered before its
   * MaskingRules were listed would briefly lose its masking.
   */
  async activate(): Promise<void> {
    await Promise.all([this.policies, this.maskingRules, this.pods, this.configMaps].map((lw) => lw.waitForSync()));
    for (const p of this.policies.list()) this.queue.add(objectKey(p));
    for (const r of this.maskingRules.list()) this.queue.add(RULE_PREFIX + objectKey(r));
    this.queue.resume();
  }

  /** Stops starting new reconciliations (on losing leadership); caches stay warm for the webhook. */
  deactivate(): void {
    this.queue.pause();
  }

  async stop(): Promise<void> {
    this.queue.stop();
    await Promise.all([this.policies, this.maskingRules, this.pods, this.configMaps].map((lw) => lw.stop()));
  }

  /** The current (cached) policies of a namespace: what the webhook matches pods against. */
  policiesIn(namespace: string): DatabaseAccessPolicy[] {
    return this.policies.list().filter((p) => p.metadata.namespace === namespace) as unknown as DatabaseAccessPolicy[];
  }

  /** The current (cached) MaskingRules of a namespace: the webhook mounts the key Secrets they name. */
  maskingRulesIn(namespace: string): MaskingRule[] {
    return this.maskingRules.list().filter((r) => r.metadata.namespace === namespace) as unknown as MaskingRule[];
  }

  private enqueueNamespace(ns: string | undefined): void {
    for (const p of this.policies.list()) if (p.metadata.namespace === ns) this.queue.add(objectKey(p));
  }

  private enqueueSelecting(pod: KubeObject): void {
    for (const p of this.policies.list()) {
      if (p.metadata.namespace !== pod.metadata.namespace) continue;
      if (matchesLabelSelector(p.spec?.podSelector ?? {}, pod.metadata.labels ?? {})) this.queue.add(objectKey(p));
    }
  }
}

export function podMetadataOnly(pod: KubeObject): KubeObject {
  const m = pod.metadata;
  return {
    apiVersion: pod.apiVersion,
    kind: pod.kind,
    metadata: {
      name: m.name,
      namespace: m.namespace,
      uid: m.uid,
      resourceVersion: m.resourceVersion,
      labels: m.labels,
      // Only pgwarden's own annotations (the injected sidecar's shape hash) are read.
      annotations: Object.fromEntries(
        Object.entries(m.annotations ?? {}).filter(([k]) => k.startsWith('pgwarden.dev/')),
      ),
      ownerReferences: m.ownerReferences,
      deletionTimestamp: m.deletionTimestamp,
      // Which pods started before a frozen ConfigMap was replaced (reconcile-policy's frozenPods).
      creationTimestamp: m.creationTimestamp,
    },
    // Only whether it still runs: a finished pod enforces no policy.
    status: { phase: pod.status?.phase },
  };
}

function samePodMetadata(a: KubeObject, b: KubeObject): boolean {
  const strip = (o: KubeObject) => JSON.stringify({ ...o.metadata, resourceVersion: undefined });
  return strip(a) === strip(b);
}

function sameExceptStatus(a: KubeObject, b: KubeObject): boolean {
  const strip = (o: KubeObject) =>
    JSON.stringify({
      spec: o.spec,
      labels: o.metadata.labels,
      annotations: o.metadata.annotations,
      gen: o.metadata.generation,
    });
  return strip(a) === strip(b);
}

function pgwardenRef(kind: string, obj: KubeObject) {
  return {
    apiVersion: 'pgwarden.dev/v1alpha1',
    kind,
    name: obj.metadata.name,
    namespace: obj.metadata.namespace ?? '',
  };
}
