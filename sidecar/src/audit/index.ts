export {
  AUDIT_CLI_OPTIONS,
  type AuditFlags,
  type AuditSetup,
  auditFromFlags,
  parseDuration,
  parseSize,
} from './audit-flags.js';
export {
  type AuditRecorder,
  type AuditRecorderOptions,
  createAuditRecorder,
  type LoginRefusal,
  type SessionAuditor,
  type StatementResultExtras,
} from './audit-recorder.js';
export type { AuditSink, AuditSinkStats, GapListener } from './audit-sink.js';
export { type AuditStreamLimits, DEFAULT_STREAM_LIMITS, ensureAuditStream } from './audit-stream.js';
export { type AuditSinkOptions, createAuditSink, parseNatsServers } from './create-audit-sink.js';
export { DiskSpool, type DiskSpoolOptions, type SpoolFsync } from './disk-spool.js';
export { AUDIT_UNAVAILABLE_SQLSTATE, AuditError, type AuditErrorCode } from './errors.js';
export { type AuditedGovernanceEvent, governanceAuditListener, recordPolicyEvent } from './governance-audit.js';
export { NatsAuditSink, type NatsSinkOptions } from './nats-sink.js';
export { type UndeliveredAudit, undeliveredLogParts, undeliveredMessage } from './undelivered-events.js';
export { AUDIT_UNAVAILABLE_VERDICT, type AuditFailMode, type PolicyView, policyOf, withAudit } from './with-audit.js';
