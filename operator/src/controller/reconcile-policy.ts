/**
 * One reconciliation of one DatabaseAccessPolicy: render it with its masking rules into ConfigMap
 * `pgwarden-<policy>`, roll workloads whose sidecar shape changed (rolloutStrategy Workload), and write status.
 * Spec problems are reported in status and Events and are not retried; API errors throw, so the queue retries.
 * Every write is conditional on the resourceVersion it was computed from: a 409 means someone wrote in between, and
 * the caller runs the reconciliation again on fresh objects (conflict-retry.ts), never overwriting them blindly.
 */
import {
  type DatabaseAccessPolicy,
  type MaskingRule,
  matchesLabelSelector,
  PolicyError,
  renderPolicy,
} from '@pgwarden/policy';
import { describeIssues, normalisePolicy } from '../core/normalise-policy.js';
import type { OperatorEvents } from '../core/operator-events.js';
import { expectedSidecarHash, selectingPolicies } from '../webhook/mutate-pod.js';
import {
  ANNOTATIONS,
  AUDIT_CREDENTIALS_SECRET,
  AUDIT_SIGNING_KEY_SECRET,
  type SidecarConfig,
} from '../webhook/sidecar-config.js';
import { configMapName } from '../webhook/sidecar-container.js';
import type { K8sWrites, ObjectRef } from './k8s-writes.js';
import type { KubeObject } from './list-watch.js';
import {
  type Condition,
  countWorkloads,
  mergeConditions,
  type PolicyStatus,
  type UndeliverableReason,
} from './policy-status.js';
import {
  buildRenderedConfigMap,
  MAX_CONFIGMAP_BYTES,
  RENDERED_KEY,
  renderedConfigMapBytes,
} from './rendered-configmap.js';
import { replicateAuditSecret } from './replicate-audit-secrets.js';

export type RolloutStrategy = 'Workload' | 'None';

export const ROLLOUT_KINDS = [
  { apiVersion: 'apps/v1', kind: 'Deployment' },
  { apiVersion: 'apps/v1', kind: 'StatefulSet' },
  { apiVersion: 'apps/v1', kind: 'DaemonSet' },
] as const;

export interface ReconcileDeps {
  policies: () => KubeObject[];
  maskingRules: () => KubeObject[];
  pods: () => KubeObject[];
  writes: K8sWrites;
  events: OperatorEvents;
  sidecar: SidecarConfig;
  defaultRollout: RolloutStrategy;
  /**
   * Last outcome this process reported per policy (rendered hash, or the invalid-spec message): the cached status
   * may lag our own write (watch latency), and Events must not repeat.
   */
  lastRendered?: Map<string, string>;
  /**
   * Source of the audit NATS credentials (keys username, password) that sidecars publish with; copied into each
   * policy's namespace as Secret `sidecar.auditCredentialsSecret`, so pods there can mount it.
   */
  auditCredentials?: { namespace: string; name: string };
  /**
   * Source of the audit signing key (key `signing.key`) sidecars sign checkpoints with; copied into each policy's
   * namespace as Secret `sidecar.auditSigningKeySecret`.
   */
  auditSigningKey?: { namespace: string; name: string };
  /**
   * Source of the CA bundle (key `ca.crt`) sidecars verify NATS's certificate with; copied into each policy's
   * namespace as the Secret `sidecar.auditNatsCa` names.
   */
  auditNatsCa?: { namespace: string; name: string };
  /**
   * After the rendered content changes, annotate the running pods with this policy's sidecar, so that their kubelets
   * deliver the new ConfigMap at once rather than at their next periodic sync (up to about a minute): what makes
   * `spec.suspend` and other edits take effect in seconds. Needs `patch` on pods (chart operator.refreshPods).
   */
  refreshPods?: boolean;
  /** Asks for this policy to be reconciled again later (the source Secrets are not watched). */
  requeueAfter?: () => void;
  now?: () => Date;
}

export async function reconcilePolicy(deps: ReconcileDeps, raw: KubeObject): Promise<void> {
  const dap = raw as unknown as DatabaseAccessPolicy & { metadata: any; status?: PolicyStatus };
  const ns = dap.metadata.namespace!;
  const ref: ObjectRef = {
    apiVersion: 'pgwarden.dev/v1alpha1',
    kind: 'DatabaseAccessPolicy',
    name: dap.metadata.name,
    namespace: ns,
    uid: dap.metadata.uid,
  };
  const now = deps.now?.() ?? new Date();
  const key = `${ns}/${ref.name}`;
  const generation = dap.metadata.generation;
  const prev = dap.status;
  // Status is computed from this version of the policy (its spec, its previous conditions): written only onto it.
  const policyVersion: string | undefined = dap.metadata.resourceVersion;

  const { policy, errors } = normalisePolicy(dap);
  const rules = deps.maskingRules().filter((r) => r.metadata.namespace === ns) as unknown as MaskingRule[];
  let invalid = errors.length ? describeIssues(errors) : undefined;
  let rendered: ReturnType<typeof renderPolicy> | undefined;
  if (!invalid) {
    try {
      rendered = renderPolicy(policy, rules);
    } catch (err) {
      if (!(err instanceof PolicyError)) throw err;
      invalid = err.issues.length ? describeIssues(err.issues) : err.message;
    }
  }
  const matchedWorkloads = invalid ? 0 : countWorkloads(policy, deps.pods() as any);

  if (invalid || !rendered) {
    const message = `invalid spec: ${invalid}`;
    const conditions = mergeConditions(
      prev?.conditions,
      [
        { type: 'Accepted', status: 'False', reason: 'InvalidSpec', message, observedGeneration: generation },
        {
          type: 'Ready',
          status: 'False',
          reason: 'InvalidSpec',
          message: 'not rendered: the spec is invalid',
          observedGeneration: generation,
        },
      ],
      now,
    );
    const previousMessage =
      deps.lastRendered?.get(key) ?? prev?.conditions?.find((c) => c.type === 'Accepted')?.message;
    deps.lastRendered?.set(key, message);
    if (previousMessage !== message) {
      deps.events.emit('policy.invalid', { namespace: ns, name: ref.name, message });
      await deps.writes.recordEvent(ref, 'Warning', 'InvalidSpec', message);
    }
    // The last good ConfigMap stays in place: running sidecars keep enforcing the previous valid policy.
    await deps.writes.applyStatus(
      ref,
      {
        observedGeneration: generation,
        conditions,
        matchedWorkloads,
        renderedHash: prev?.renderedHash,
      },
      policyVersion,
    );
    return;
  }

  const cmName = configMapName(ref.name);
  const delivery = await writeRenderedConfigMap(
    deps,
    ref,
    buildRenderedConfigMap({ name: ref.name, namespace: ns, uid: ref.uid }, rendered),
    prev?.renderedHash,
  );
  if ('blocked' in delivery) {
    const { blocked } = delivery;
    const previousMessage = deps.lastRendered?.get(key) ?? prev?.conditions?.find((c) => c.type === 'Ready')?.message;
    deps.lastRendered?.set(key, blocked.message);
    // Deleting a ConfigMap without our labels is not seen by the ConfigMap watch: look again later.
    if (blocked.reason === 'ConfigMapNotOwned') deps.requeueAfter?.();
    if (previousMessage !== blocked.message) {
      deps.events.emit('policy.undeliverable', { namespace: ns, name: ref.name, ...blocked });
      await deps.writes.recordEvent(ref, 'Warning', blocked.reason, blocked.message);
    }
    await deps.writes.applyStatus(
      ref,
      {
        observedGeneration: generation,
        conditions: mergeConditions(
          prev?.conditions,
          [
            {
              type: 'Accepted',
              status: 'True',
              reason: 'Valid',
              message: 'the spec is valid',
              observedGeneration: generation,
            },
            { type: 'Ready', status: 'False', ...blocked, observedGeneration: generation },
          ],
          now,
        ),
        matchedWorkloads,
        // What the sidecars enforce: the last content this policy's own ConfigMap received, if it still has one.
        renderedHash: blocked.reason === 'ConfigMapNotOwned' ? undefined : prev?.renderedHash,
        configMap: blocked.reason === 'ConfigMapNotOwned' ? undefined : prev?.configMap,
      },
      policyVersion,
    );
    return;
  }
  const changed = (deps.lastRendered?.get(key) ?? prev?.renderedHash) !== rendered.hash;
  deps.lastRendered?.set(key, rendered.hash);
  deps.events.emit('policy.rendered', {
    namespace: ns,
    name: ref.name,
    hash: rendered.hash,
    changed,
    matchedWorkloads,
  });
  if (changed)
    await deps.writes.recordEvent(
      ref,
      'Normal',
      'Rendered',
      `rendered to ConfigMap ${cmName} (${rendered.hash.slice(0, 19)})`,
    );
  // A first render has no pods running an older content of it.
  if (changed && deps.refreshPods && prev?.renderedHash !== undefined) await refreshPods(deps, ref, rendered.hash);

  const credentialsProblem = deps.auditCredentials
    ? await replicateAuditSecret(deps, ref, {
        source: deps.auditCredentials,
        copy: deps.sidecar.auditCredentialsSecret ?? AUDIT_CREDENTIALS_SECRET,
        keys: ['username', 'password'],
        role: 'audit-credentials',
        reason: 'AuditCredentialsMissing',
        what: 'audit credentials',
      })
    : undefined;
  const signingKeyProblem = deps.auditSigningKey
    ? await replicateAuditSecret(deps, ref, {
        source: deps.auditSigningKey,
        copy: deps.sidecar.auditSigningKeySecret ?? AUDIT_SIGNING_KEY_SECRET,
        keys: ['signing.key'],
        role: 'audit-signing-key',
        reason: 'AuditSigningKeyMissing',
        what: 'audit signing key',
      })
    : undefined;
  const natsCa = deps.sidecar.auditNatsCa;
  const natsCaProblem =
    deps.auditNatsCa && natsCa?.kind === 'secret'
      ? await replicateAuditSecret(deps, ref, {
          source: deps.auditNatsCa,
          copy: natsCa.name,
          keys: ['ca.crt'],
          role: 'audit-nats-ca',
          reason: 'AuditNatsCaMissing',
          what: 'NATS CA',
        })
      : undefined;
  const problems = [credentialsProblem, signingKeyProblem, natsCaProblem].filter((p) => p !== undefined);
  const problem = problems[0]?.reason;
  if (problem) deps.requeueAfter?.();

  const strategy = rolloutStrategy(dap, deps.defaultRollout);
  if (strategy === 'Workload') await rollWorkloads(deps, policy, ref, rules);
  const live = delivery.written;
  const replacedUid: string | undefined = live.metadata?.annotations?.[ANNOTATIONS.replacedImmutable];
  const frozen = replacedUid ? frozenPods(deps, ref, live) : [];
  if (frozen.length > 0 && strategy === 'Workload') await rollOffFrozenConfigMap(deps, ref, live, frozen);

  const conditions: Omit<Condition, 'lastTransitionTime'>[] = [
    { type: 'Accepted', status: 'True', reason: 'Valid', message: 'the spec is valid', observedGeneration: generation },
    problem
      ? {
          type: 'Ready',
          status: 'False',
          reason: problem,
          message: problems.map((p) => p.message).join('; '),
          observedGeneration: generation,
        }
      : {
          type: 'Ready',
          status: 'True',
          reason: 'Rendered',
          message: `rendered to ConfigMap ${cmName}; ${matchedWorkloads} workload(s) selected`,
          observedGeneration: generation,
        },
  ];
  if (replacedUid) {
    const names = frozen.map((p) => p.metadata.name).sort();
    const listed = names.length > 5 ? `${names.slice(0, 5).join(', ')} and ${names.length - 5} more` : names.join(', ');
    conditions.push(
      frozen.length === 0
        ? {
            type: 'PodsCurrent',
            status: 'True',
            reason: 'AllPodsCurrent',
            message: `every running pod of this policy mounts ConfigMap ${cmName} as the operator writes it`,
            observedGeneration: generation,
          }
        : {
            type: 'PodsCurrent',
            status: 'False',
            reason: 'FrozenConfigMap',
            message:
              `${names.length} pod(s) (${listed}) started before ConfigMap ${cmName} was made immutable and replaced ` +
              `(uid ${replacedUid}): they enforce the policy as it was then until restarted; ` +
              (strategy === 'Workload'
                ? 'their Deployments, StatefulSets and DaemonSets are rolled; delete bare pods and Job pods yourself'
                : 'rollout strategy None: restart them (kubectl rollout restart, or delete the pods)'),
            observedGeneration: generation,
          },
    );
  }
  await deps.writes.applyStatus(
    ref,
    {
      observedGeneration: generation,
      conditions: mergeConditions(prev?.conditions, conditions, now),
      matchedWorkloads,
      renderedHash: rendered.hash,
      configMap: cmName,
    },
    policyVersion,
  );
}

/**
 * Writes the rendered ConfigMap, or says why it cannot (then the ConfigMap is left as it is: running sidecars keep the
 * last good content, and the webhook refuses new pods of this policy, see undeliverablePolicy).
 * - over the API server's 1 MiB ConfigMap limit: the write would be refused with 422 and retried forever;
 * - a ConfigMap of that name that this policy does not control (pre-created, or left by another owner): a forced
 *   apply would take it over, and whoever created it chose what the pods mount, so it is left alone;
 * - one of ours someone made `immutable`: updates are refused with 422, so it is deleted and created again.
 * Each decision holds only for the version read: the delete, the key removal and the apply carry its uid or
 * resourceVersion as a precondition, and an absent ConfigMap is created (not applied), so one created meanwhile is
 * a 409 rather than taken over.
 */
async function writeRenderedConfigMap(
  deps: ReconcileDeps,
  ref: ObjectRef,
  desired: Record<string, any>,
  lastHash: string | undefined,
): Promise<{ blocked: { reason: UndeliverableReason; message: string } } | { written: Record<string, any> }> {
  const cmName = desired.metadata.name;
  const size = renderedConfigMapBytes(desired);
  if (size > MAX_CONFIGMAP_BYTES) {
    const kept = lastHash ? `keeps the last good policy (${lastHash.slice(0, 19)})` : 'is not created';
    return {
      blocked: {
        reason: 'RenderedPolicyTooLarge',
        message:
          `the rendered policy is ${size} bytes, over the ${MAX_CONFIGMAP_BYTES} bytes (1 MiB) a ConfigMap holds: ` +
          `ConfigMap ${cmName} ${kept} and new pods this policy selects are refused; make the policy or its ` +
          'MaskingRules smaller, or split it',
      },
    };
  }
  let live = await deps.writes.readConfigMap(ref.namespace, cmName);
  if (live && !controlledBy(live, ref)) {
    const owner = (live.metadata?.ownerReferences ?? []).find((o: any) => o.controller);
    const stale = owner?.kind === 'DatabaseAccessPolicy' && owner.name === ref.name;
    return {
      blocked: {
        reason: 'ConfigMapNotOwned',
        message: stale
          ? `ConfigMap ${cmName} belongs to an earlier DatabaseAccessPolicy of this name (uid ${owner.uid}): it is ` +
            'rendered once garbage collection has deleted that ConfigMap; new pods this policy selects are refused until then'
          : `ConfigMap ${cmName} exists but this policy does not own it (${owner ? `its controller is ${owner.kind} ${owner.name}` : 'no controller ownerReference'}): ` +
            'the operator does not overwrite it and new pods this policy selects are refused; delete it (or rename the policy)',
      },
    };
  }
  // Which ConfigMap the frozen one was stays on its successors: its pods are found (and rolled) from it until the
  // policy's pods are all newer than the successor.
  let replaced: string | undefined = live?.metadata?.annotations?.[ANNOTATIONS.replacedImmutable];
  if (live?.immutable === true) {
    // Kubelets stop refreshing an immutable ConfigMap once they have read it; a new object of the same name is what
    // new pods get. Pods that ran while it was immutable keep that content until restarted.
    await deps.writes.deleteConfigMap(ref.namespace, cmName, live.metadata.uid, live.metadata.resourceVersion);
    replaced = live.metadata.uid;
    live = undefined;
    deps.events.emit('policy.configmap-recreated', { namespace: ref.namespace, name: ref.name });
    await deps.writes.recordEvent(
      ref,
      'Warning',
      'ConfigMapRecreated',
      `ConfigMap ${cmName} was made immutable, which freezes it: deleted and created it again; kubelets stop ` +
        'refreshing an immutable ConfigMap, so pods of this policy that ran while it was immutable keep its content ' +
        'until restarted (kubectl rollout restart)',
    );
  }
  if (replaced) {
    desired = {
      ...desired,
      metadata: {
        ...desired.metadata,
        annotations: { ...desired.metadata.annotations, [ANNOTATIONS.replacedImmutable]: replaced },
      },
    };
  }
  if (!live) return { written: await deps.writes.createConfigMap(desired) };
  // Keys of others go first: with them the apply could exceed the size limit.
  live = await removeStrayKeys(deps, ref, live);
  return { written: await deps.writes.applyConfigMap(desired, live.metadata.resourceVersion) };
}

/** The policy's own: its controller ownerReference names this very object (uid), as the operator writes it. */
function controlledBy(cm: Record<string, any>, ref: ObjectRef): boolean {
  return (cm.metadata?.ownerReferences ?? []).some(
    (o: any) => o.controller === true && o.kind === 'DatabaseAccessPolicy' && ref.uid && o.uid === ref.uid,
  );
}

/**
 * The sidecar loads every *.yaml/*.json file of the mounted ConfigMap (binaryData keys become files too), so a key
 * someone added beside policy.json would be enforced with it, and apply (ours is forced) only takes back the fields
 * it writes. Anything else goes, with a Warning naming the keys.
 */
async function removeStrayKeys(
  deps: ReconcileDeps,
  ref: ObjectRef,
  live: Record<string, any>,
): Promise<Record<string, any>> {
  const data = Object.keys(live.data ?? {}).filter((k) => k !== RENDERED_KEY);
  const binaryData = Object.keys(live.binaryData ?? {});
  if (data.length + binaryData.length === 0) return live;
  const cmName = configMapName(ref.name);
  const patched = await deps.writes.removeConfigMapKeys(
    ref.namespace,
    cmName,
    { data, binaryData },
    live.metadata.resourceVersion,
  );
  const keys = [...data, ...binaryData].sort().join(', ');
  deps.events.emit('policy.configmap-restored', { namespace: ref.namespace, name: ref.name, keys });
  await deps.writes.recordEvent(
    ref,
    'Warning',
    'ConfigMapRestored',
    `removed keys someone else wrote into ConfigMap ${cmName}: ${keys}`,
  );
  return patched;
}

/**
 * Annotates each live pod that runs this policy's sidecar (the webhook's pgwarden.dev/policies) with the new content
 * hash: a change to the pod object makes its kubelet sync the pod, which refreshes its ConfigMap volumes now.
 * https://kubernetes.io/docs/tasks/configure-pod-container/configure-pod-configmap/#mounted-configmaps-are-updated-automatically
 */
async function refreshPods(deps: ReconcileDeps, ref: ObjectRef, hash: string): Promise<void> {
  let n = 0;
  for (const p of deps.pods()) {
    const a = p.metadata.annotations ?? {};
    if (p.metadata.namespace !== ref.namespace || p.metadata.deletionTimestamp) continue;
    if (!(a[ANNOTATIONS.policies] ?? '').split(',').includes(ref.name) || a[ANNOTATIONS.policyRefresh] === hash)
      continue;
    if (await deps.writes.annotatePod(ref.namespace, p.metadata.name, ANNOTATIONS.policyRefresh, hash)) n++;
  }
  if (n > 0)
    await deps.writes.recordEvent(ref, 'Normal', 'PodsRefreshed', `asked the kubelet to deliver it to ${n} pod(s) now`);
}

/**
 * Running pods of this policy that mounted the frozen ConfigMap the live one replaced: created no later than the live
 * one and not rolled onto it. creationTimestamp has whole seconds, so a pod of the same second counts as frozen: it
 * may have been admitted before the delete.
 */
function frozenPods(deps: ReconcileDeps, ref: ObjectRef, cm: Record<string, any>): KubeObject[] {
  const since = Date.parse(cm.metadata?.creationTimestamp ?? '');
  return deps.pods().filter((p) => {
    const a = p.metadata.annotations ?? {};
    return (
      p.metadata.namespace === ref.namespace &&
      !p.metadata.deletionTimestamp &&
      p.status?.phase !== 'Succeeded' &&
      p.status?.phase !== 'Failed' &&
      (a[ANNOTATIONS.policies] ?? '').split(',').includes(ref.name) &&
      a[ANNOTATIONS.configMapUid] !== cm.metadata.uid &&
      !(Date.parse(p.metadata.creationTimestamp ?? '') > since)
    );
  });
}

/**
 * Rolls the Deployments, StatefulSets and DaemonSets whose pods still mount a frozen ConfigMap: their template gets
 * the live ConfigMap's uid, so the workload's controller replaces the pods, and the new ones carry that uid (which
 * tells them from the frozen ones). Once per replacement: a template that has the uid is left alone.
 */
async function rollOffFrozenConfigMap(
  deps: ReconcileDeps,
  ref: ObjectRef,
  cm: Record<string, any>,
  frozen: KubeObject[],
): Promise<void> {
  const uid: string = cm.metadata.uid;
  for (const { apiVersion, kind } of ROLLOUT_KINDS) {
    for (const w of await deps.writes.listWorkloads(apiVersion, kind, ref.namespace)) {
      if (w.spec?.template?.metadata?.annotations?.[ANNOTATIONS.configMapUid] === uid) continue;
      const selector = w.spec?.selector ?? { matchLabels: w.spec?.template?.metadata?.labels ?? {} };
      if (!frozen.some((p) => matchesLabelSelector(selector, p.metadata.labels ?? {}))) continue;
      await rollWorkload(
        deps,
        ref,
        { apiVersion, kind, name: w.metadata.name },
        { configMapUid: uid },
        `its pods mount the frozen ConfigMap ${cm.metadata.name} replaced`,
      );
    }
  }
}

/** Does any running pod of this workload (by its selector) lack the wanted sidecar hash? */
function podsNeedRollout(workload: Record<string, any>, pods: KubeObject[], namespace: string, want: string): boolean {
  const selector = workload.spec?.selector ?? { matchLabels: workload.spec?.template?.metadata?.labels ?? {} };
  return pods.some(
    (p) =>
      p.metadata.namespace === namespace &&
      !p.metadata.deletionTimestamp &&
      matchesLabelSelector(selector, p.metadata.labels ?? {}) &&
      p.metadata.annotations?.[ANNOTATIONS.sidecarHash] !== want,
  );
}

export function rolloutStrategy(dap: { metadata: any; spec?: any }, fallback: RolloutStrategy): RolloutStrategy {
  const v = dap.spec?.rolloutStrategy ?? dap.metadata.annotations?.[ANNOTATIONS.rolloutStrategy];
  return v === 'None' || v === 'Workload' ? v : fallback;
}

/**
 * Sets `pgwarden.dev/sidecar-hash` on the pod templates this policy selects to the hash of the sidecars a new pod
 * would get. When the sidecar's shape (image, args, ports, resources) changes, the template changes and the
 * workload's own controller rolls its pods; policy content changes alone never roll (the ConfigMap hot-reloads).
 * A template not yet marked is rolled only when its running pods lack the wanted sidecar.
 */
async function rollWorkloads(
  deps: ReconcileDeps,
  policy: DatabaseAccessPolicy,
  ref: ObjectRef,
  maskingRules: readonly MaskingRule[],
): Promise<void> {
  const all = deps
    .policies()
    .filter((p) => p.metadata.namespace === ref.namespace) as unknown as DatabaseAccessPolicy[];
  for (const { apiVersion, kind } of ROLLOUT_KINDS) {
    const workloads = await deps.writes.listWorkloads(apiVersion, kind, ref.namespace);
    for (const w of workloads) {
      const template = w.spec?.template ?? {};
      const labels = template.metadata?.labels ?? {};
      if (!matchesLabelSelector(policy.spec.podSelector ?? {}, labels)) continue;
      if (template.metadata?.annotations?.[ANNOTATIONS.inject] === 'false') continue;
      const selecting = selectingPolicies(
        { metadata: { labels, namespace: ref.namespace } },
        all.map((p) => normalisePolicy(p).policy),
      );
      const want = expectedSidecarHash(selecting, deps.sidecar, maskingRules);
      const marked = template.metadata?.annotations?.[ANNOTATIONS.sidecarHash];
      if (marked === want) continue;
      // An unmarked template whose running pods already carry the right sidecar (created after the policy, injected
      // at admission) needs no restart; one whose pods lack it, or carry an old shape, does.
      if (marked === undefined && !podsNeedRollout(w, deps.pods(), ref.namespace, want)) continue;
      await rollWorkload(
        deps,
        ref,
        { apiVersion, kind, name: w.metadata.name },
        { sidecarHash: want },
        'sidecar shape changed',
      );
    }
  }
}

/** Rolls one workload by changing one pgwarden annotation on its pod template (its controller replaces the pods). */
async function rollWorkload(
  deps: ReconcileDeps,
  ref: ObjectRef,
  w: { apiVersion: string; kind: string; name: string },
  mark: { sidecarHash: string } | { configMapUid: string },
  why: string,
): Promise<void> {
  const [key, value] =
    'sidecarHash' in mark ? [ANNOTATIONS.sidecarHash, mark.sidecarHash] : [ANNOTATIONS.configMapUid, mark.configMapUid];
  await deps.writes.annotatePodTemplate(w.apiVersion, w.kind, ref.namespace, w.name, key, value);
  deps.events.emit('workload.rolled', { namespace: ref.namespace, kind: w.kind, name: w.name, ...mark });
  await deps.writes.recordEvent(ref, 'Normal', 'RolloutTriggered', `${w.kind} ${w.name}: ${why}, rolling pods`);
}
