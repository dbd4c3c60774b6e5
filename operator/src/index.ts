/**
 * @pgwarden/operator — Kubernetes operator: policy rendering controller, sidecar-injection webhook, webhook TLS.
 * Pure parts (mutatePod, buildRenderedConfigMap, CRD generation) are exported for the CLI's offline tools.
 */

export type { RolloutStrategy } from './controller/reconcile-policy.js';
export { buildRenderedConfigMap, RENDERED_KEY } from './controller/rendered-configmap.js';
export { applyJsonPatch, type JsonPatchOp } from './core/json-patch.js';
export { type OperatorEventMap, OperatorEvents } from './core/operator-events.js';
export { crdFiles, databaseAccessPolicyCrd, maskingRuleCrd } from './crd/custom-resource-definitions.js';
export { OperatorError, type OperatorErrorCode } from './errors.js';
export { InjectError, type InjectReport, injectManifests } from './offline/inject-manifests.js';
export { PolicyFilesError, readPolicyFiles } from './offline/policy-files.js';
export { renderConfigMaps, renderConfigMapsYaml } from './offline/render-configmaps.js';
export {
  createOperatorLogger,
  loadKubeConfig,
  type OperatorConfig,
  type RunningOperator,
  runOperator,
} from './run-operator.js';
export { type MutationResult, mutatePod } from './webhook/mutate-pod.js';
export {
  ANNOTATIONS,
  AUDIT_CREDENTIALS_SECRET,
  AUDIT_NATS_CA_SECRET,
  AUDIT_SIGNING_KEY_SECRET,
  DEFAULT_SIDECAR_CONFIG,
  INJECTION_NAMESPACE_LABEL,
  type SidecarConfig,
} from './webhook/sidecar-config.js';
export { SIDECAR_ENTRYPOINT, SIDECAR_NODE_ARGS } from './webhook/sidecar-container.js';
