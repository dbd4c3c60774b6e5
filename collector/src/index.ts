/**
 * @pgwarden/collector — audit store over NATS JetStream: ingest, chain verification, HTTP API, exports.
 * Public surface used by the CLI, the demo and tests.
 */
export { APPROVAL_STATES, type ApprovalEntry, type ApprovalState } from './approvals/approval-book.js';
export { schemaV1Rules } from './chain/chain-rules.js';
export type { ChainFinding, ChainRules, FullReport } from './chain/verify-chain.js';
export { verifyEvents } from './chain/verify-events.js';
export { type Collector, type CollectorOptions, startCollector } from './collector.js';
export type { Suspension } from './control/control-actions.js';
export { boundValuesText, boundValueText } from './display/bound-values.js';
export { lookAlikeSkeleton, lookAlikes } from './display/look-alikes.js';
export { nonAsciiCharacters, terminalSafeJson, terminalSafeJsonText, visibleText } from './display/visible-text.js';
export { CollectorError, type CollectorErrorCode } from './errors.js';
export type { AuditEvent } from './event.js';
export { buildExporter, type ExportSpec, type ExportsConfig, loadExportsConfig } from './exports/export-config.js';
export type { Exporter } from './exports/export-runner.js';
export type { ControlApplication } from './http/control-api.js';
export type { DeliveryOutcome } from './ingest/ingest-queue.js';
export { AUDIT_STREAM, AUDIT_SUBJECTS, ensureStream } from './ingest/jetstream-source.js';
export { type AuditKey, type AuditKeyring, parseAuditKeys, watchAuditKeys } from './signatures/audit-keys.js';
export { SIGNATURE_STATES, type SignatureReport, type SignatureState } from './signatures/checkpoint-judgement.js';
export { AuditStore, type SignatureOptions } from './store/audit-store.js';
export type { FindingRow, SessionSummary } from './store/queries.js';
