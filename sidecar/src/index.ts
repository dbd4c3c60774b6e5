/** @pgwarden/sidecar: the wire proxy and its building blocks others plug into. */

export { SidecarMetrics } from './admin/metrics.js';
export {
  AUDIT_CLI_OPTIONS,
  type AuditFailMode,
  type AuditFlags,
  type AuditRecorder,
  type AuditSetup,
  type AuditSink,
  auditFromFlags,
  createAuditRecorder,
  createAuditSink,
  recordPolicyEvent,
  type UndeliveredAudit,
  undeliveredLogParts,
  undeliveredMessage,
  withAudit,
} from './audit/index.js';
export { type CredentialsSource, credentialsProvider } from './credentials.js';
export {
  type ApprovalGate,
  approvalGateForSink,
  type GovernedSidecar,
  type GovernedSidecarOptions,
  startGovernedSidecar,
} from './governance/index.js';
export { ProtocolError, type ProtocolErrorCode } from './protocol/errors.js';
export { allowAllHooks } from './proxy/allow-all-hooks.js';
export type * from './proxy/hooks.js';
export { type Sidecar, type SidecarLogger, type SidecarOptions, startSidecar } from './start-sidecar.js';
export { CHANNEL_BINDING_MODES, type ChannelBindingMode } from './upstream/channel-binding.js';
export type { SslMode } from './upstream/connect.js';
export { UpstreamError, type UpstreamErrorCode } from './upstream/errors.js';
