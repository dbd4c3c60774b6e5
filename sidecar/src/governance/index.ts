export { type ApprovalGate, type ApprovalOutcome, type ApprovalRequest, noApproversGate } from './approval-gate.js';
export type { GovernanceEvent, LoginRefusedEvent, PolicyRef } from './governance-events.js';
export { approvalGateForSink, type NatsApprovalGateOptions, natsApprovalGate } from './nats-approval-gate.js';
export { type ControlListener, type NatsControlOptions, natsControl } from './nats-control.js';
export { createPolicyAuthenticator, identityConfigOf } from './policy-authenticator.js';
export { createPolicyHooks, type PolicyHooks, type PolicyHooksOptions, selectPolicy } from './policy-hooks.js';
export { PolicySession, toVerdict } from './policy-session.js';
export { quoteIdent, sessionSetupSql } from './session-setup.js';
export { SQLSTATE } from './sqlstate.js';
export {
  compileSidecarPolicy,
  type GovernedSidecar,
  type GovernedSidecarOptions,
  startGovernedSidecar,
} from './start-governed-sidecar.js';
