export {
  AUDIT_STREAM,
  AUDIT_SUBJECT_PREFIX,
  auditSubject,
  subjectToken,
} from './audit-subject.js';
export { formatAuditTime, parseAuditTime } from './audit-time.js';
export {
  type AuditSigner,
  auditSigner,
  auditVerifyKey,
  type CheckpointProblem,
  type CheckpointVerdict,
  checkpointSignedBytes,
  verifyCheckpoint,
} from './checkpoint-signature.js';
export { AUDIT_HASH_PATTERN, AUDIT_TIME_PATTERN, auditEventSchema } from './event-schema.js';
export * from './event-types.js';
export {
  type ChainGap,
  type ChainReport,
  type ChainState,
  type ChainTamper,
  hashCanonical,
  hashEvent,
  newChain,
  sealEvent,
  sealEventToJson,
  type TamperReason,
  verifyChain,
} from './hash-chain.js';
export { type NatsUserFiles, natsUserFiles } from './nats-user-files.js';
export { redactSecrets } from './redact-secrets.js';
