/**
 * Copies the Secrets injected sidecars need for auditing from the operator's namespace into a policy's namespace,
 * where pods can mount them: the NATS user they publish as, and the key they sign checkpoints with. Each is mounted
 * into the sidecar container alone (webhook/sidecar-container.ts).
 */

import type { ObjectRef } from './k8s-writes.js';
import type { ReconcileDeps } from './reconcile-policy.js';

export interface AuditSecretCopy {
  /** The source in the operator's namespace; a Secret `<name>-<policy namespace>` beside it wins when it exists. */
  source: { namespace: string; name: string };
  /** Name of the copy in the policy namespace (the one the webhook mounts). */
  copy: string;
  /** The keys copied; all must be present in the source. */
  keys: readonly string[];
  /** `pgwarden.dev/role` label of the copy. */
  role: string;
  /** Event and condition reason while the source is missing or incomplete. */
  reason: string;
  /** Names the Secret in messages, e.g. `audit credentials`. */
  what: string;
}

/**
 * Copies one audit Secret into the policy's namespace. Returns a problem to report when the source is missing or
 * incomplete: injected pods would then wait for a volume that never appears (they fail closed), so Ready says why.
 * A Secret `<source>-<namespace>` is that namespace's own (the chart's `audit.namespaceUsers` for the NATS user,
 * `audit.signingKeyNamespaces` for the signing key), so a leak in one namespace does not reach the others.
 */
export async function replicateAuditSecret(
  deps: Pick<ReconcileDeps, 'writes' | 'lastRendered'>,
  ref: ObjectRef,
  spec: AuditSecretCopy,
): Promise<string | undefined> {
  const shared = spec.source;
  const own = { namespace: shared.namespace, name: `${shared.name}-${ref.namespace}` };
  const complete = (d: Record<string, string> | undefined): d is Record<string, string> =>
    d !== undefined && spec.keys.every((k) => Boolean(d[k]));
  // Forbidden counts as absent: RBAC grants `get` only on the per-namespace names the chart lists.
  const ownData =
    own.name.length <= 253
      ? await deps.writes.readSecretData(own.namespace, own.name).catch((err: { code?: number }) => {
          if (err?.code === 403) return undefined;
          throw err;
        })
      : undefined;
  const src = complete(ownData) ? own : shared;
  const data = src === own ? ownData : await deps.writes.readSecretData(src.namespace, src.name);
  const key = `${spec.role}:${ref.namespace}/${ref.name}`;
  if (!complete(data)) {
    const problem = `${spec.what} Secret ${src.namespace}/${src.name} is missing or lacks ${spec.keys.join('/')}: injected sidecars cannot start`;
    if (deps.lastRendered?.get(key) !== problem) {
      deps.lastRendered?.set(key, problem);
      await deps.writes.recordEvent(ref, 'Warning', spec.reason, problem);
    }
    return problem;
  }
  deps.lastRendered?.delete(key);
  if (src.namespace === ref.namespace && src.name === spec.copy) return undefined;
  await deps.writes.applySecret({
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: {
      name: spec.copy,
      namespace: ref.namespace,
      labels: { 'app.kubernetes.io/managed-by': 'pgwarden', 'pgwarden.dev/role': spec.role },
    },
    type: 'Opaque',
    data: Object.fromEntries(spec.keys.map((k) => [k, data[k]])),
  });
  return undefined;
}
