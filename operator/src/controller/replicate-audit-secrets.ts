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

/** Why a policy's injected sidecars cannot get an audit Secret: the Ready condition's reason and message. */
export interface AuditSecretProblem {
  reason: string;
  message: string;
}

const MANAGED_BY = 'app.kubernetes.io/managed-by';

/**
 * Copies one audit Secret into the policy's namespace. Returns a problem to report when the source is missing or
 * incomplete: injected pods would then wait for a volume that never appears (they fail closed), so Ready says why.
 * A Secret `<source>-<namespace>` is that namespace's own (the chart's `audit.namespaceUsers` for the NATS user,
 * `audit.signingKeyNamespaces` for the signing key), so a leak in one namespace does not reach the others.
 *
 * The copy is written only when it differs, and only onto what was read: created when absent (409 if someone created
 * one meanwhile), applied with the resourceVersion read otherwise (409 if it changed since); a 409 makes the
 * reconciliation read again and decide again (conflict-retry.ts). A Secret of the copy's name that pgwarden did not
 * create (no `app.kubernetes.io/managed-by: pgwarden`) is someone else's, perhaps an external secrets manager's: a
 * forced apply would silently take it over, so it is left as it is and reported (`AuditSecretNotOwned`).
 */
export async function replicateAuditSecret(
  deps: Pick<ReconcileDeps, 'writes' | 'lastRendered'>,
  ref: ObjectRef,
  spec: AuditSecretCopy,
): Promise<AuditSecretProblem | undefined> {
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
  const report = async (problem: AuditSecretProblem) => {
    if (deps.lastRendered?.get(key) !== problem.message) {
      deps.lastRendered?.set(key, problem.message);
      await deps.writes.recordEvent(ref, 'Warning', problem.reason, problem.message);
    }
    return problem;
  };
  if (!complete(data))
    return report({
      reason: spec.reason,
      message: `${spec.what} Secret ${src.namespace}/${src.name} is missing or lacks ${spec.keys.join('/')}: injected sidecars cannot start`,
    });
  if (src.namespace === ref.namespace && src.name === spec.copy) {
    deps.lastRendered?.delete(key);
    return undefined;
  }
  const wanted = {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: {
      name: spec.copy,
      namespace: ref.namespace,
      labels: { [MANAGED_BY]: 'pgwarden', 'pgwarden.dev/role': spec.role },
    },
    type: 'Opaque',
    data: Object.fromEntries(spec.keys.map((k) => [k, data[k]])),
  };
  const live = await deps.writes.readSecret(ref.namespace, spec.copy);
  if (!live) await deps.writes.createSecret(wanted);
  else if (live.metadata.labels?.[MANAGED_BY] !== 'pgwarden')
    return report({
      reason: 'AuditSecretNotOwned',
      message:
        `Secret ${ref.namespace}/${spec.copy} exists and pgwarden did not create it (no label ${MANAGED_BY}: pgwarden): ` +
        `left as it is, so injected sidecars mount it instead of the ${spec.what} from ${src.namespace}/${src.name}; ` +
        'delete it, or label it, for the operator to keep it current',
    });
  else if (!sameCopy(live, wanted)) await deps.writes.applySecret(wanted, live.metadata.resourceVersion);
  deps.lastRendered?.delete(key);
  return undefined;
}

/** The live copy already is what would be applied: nothing to write (a steady state makes no API writes). */
function sameCopy(
  live: { metadata: Record<string, any>; type?: string; data: Record<string, string> },
  wanted: { metadata: { labels: Record<string, string> }; type: string; data: Record<string, string> },
): boolean {
  const keys = Object.keys(wanted.data);
  return (
    (live.type ?? 'Opaque') === wanted.type &&
    Object.entries(wanted.metadata.labels).every(([k, v]) => live.metadata.labels?.[k] === v) &&
    keys.every((k) => live.data[k] === wanted.data[k])
  );
}
