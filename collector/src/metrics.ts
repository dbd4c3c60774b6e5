import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** The collector's Prometheus metrics, in a registry of its own so several collectors can live in one process (tests). */
export class CollectorMetrics {
  readonly registry = new Registry();
  readonly ingested = new Counter({
    name: 'pgwarden_collector_events_ingested_total',
    help: 'Events stored',
    labelNames: ['type'] as const,
    registers: [this.registry],
  });
  readonly duplicates = new Counter({
    name: 'pgwarden_collector_events_duplicate_total',
    help: 'Redelivered events already stored (dropped by id)',
    registers: [this.registry],
  });
  readonly rejected = new Counter({
    name: 'pgwarden_collector_events_rejected_total',
    help: 'Events that could not be parsed or stored, kept in audit_rejected',
    registers: [this.registry],
  });
  readonly findings = new Counter({
    name: 'pgwarden_collector_chain_findings_total',
    help: 'Hash-chain findings (gaps, tampering)',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  readonly healed = new Counter({
    name: 'pgwarden_collector_chain_gaps_healed_total',
    help: 'Gaps closed by late events',
    registers: [this.registry],
  });
  readonly storeRetries = new Counter({
    name: 'pgwarden_collector_store_retries_total',
    help: 'Failed store writes that were retried',
    registers: [this.registry],
  });
  readonly batchSeconds = new Histogram({
    name: 'pgwarden_collector_batch_duration_seconds',
    help: 'Time to store one batch',
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly queueLength = new Gauge({
    name: 'pgwarden_collector_queue_length',
    help: 'Events received, not yet stored',
    registers: [this.registry],
  });
  readonly natsConnected = new Gauge({
    name: 'pgwarden_collector_nats_connected',
    help: '1 while connected to NATS',
    registers: [this.registry],
  });
  readonly exported = new Counter({
    name: 'pgwarden_collector_export_events_total',
    help: 'Events delivered by an exporter',
    labelNames: ['exporter'] as const,
    registers: [this.registry],
  });
  readonly exportFailures = new Counter({
    name: 'pgwarden_collector_export_failures_total',
    help: 'Failed export attempts (retried)',
    labelNames: ['exporter'] as const,
    registers: [this.registry],
  });
  readonly exportActive = new Gauge({
    name: 'pgwarden_collector_export_active',
    help: '1 while this replica is the one delivering the exporter (it holds its lock in a shared store), 0 on standby',
    labelNames: ['exporter'] as const,
    registers: [this.registry],
  });
  readonly exportLag = new Gauge({
    name: 'pgwarden_collector_export_lag_events',
    help: 'Stored events an exporter has not delivered yet (as of its last attempt); reported by the active replica only',
    labelNames: ['exporter'] as const,
    registers: [this.registry],
  });
  /** Per exporter, the seconds its oldest undelivered event has waited (set by each export runner). */
  readonly exportLagSources = new Map<string, () => number>();
  readonly exportLagSeconds: Gauge<'exporter'> = new Gauge({
    name: 'pgwarden_collector_export_lag_seconds',
    help: 'Seconds since the oldest stored event an exporter has not delivered yet was stored (0 when caught up); reported by the active replica only',
    labelNames: ['exporter'] as const,
    registers: [this.registry],
    // Read at scrape time: while a destination refuses, nothing else happens that could update a gauge.
    collect: (): void => {
      for (const [exporter, seconds] of this.exportLagSources) this.exportLagSeconds.set({ exporter }, seconds());
    },
  });
  /** What the pending-approvals gauge reads at each scrape (set by the approval queue's owner). */
  countPendingApprovals: () => number = () => 0;
  readonly approvalsPending: Gauge = new Gauge({
    name: 'pgwarden_collector_approvals_pending',
    help: 'Held statements waiting for a decision (not expired)',
    registers: [this.registry],
    // Read at scrape time: a request turns expired by the clock alone, with no message to update a gauge.
    collect: (): void => this.approvalsPending.set(this.countPendingApprovals()),
  });
  readonly approvalDecisions = new Counter({
    name: 'pgwarden_collector_approval_decisions_total',
    help: 'Decisions published by this collector',
    labelNames: ['decision'] as const,
    registers: [this.registry],
  });
  readonly approvalsMalformed = new Counter({
    name: 'pgwarden_collector_approval_messages_malformed_total',
    help: "Messages in the approvals stream that were not valid requests, decisions or closings, or named another namespace than their request's (ignored)",
    registers: [this.registry],
  });
  readonly approvalNotifications = new Counter({
    name: 'pgwarden_collector_approval_notifications_total',
    help: 'Notices posted to the approval webhook by this replica, kind request (a statement is held) or outcome (its hold ended): sent (2xx), failed (given up), retried (another attempt scheduled), skipped (not needed: a request expired, decided or closed first; an outcome of a request not announced)',
    labelNames: ['kind', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly controlActions = new Counter({
    name: 'pgwarden_collector_control_actions_total',
    help: 'Terminate, suspend and resume requests to this collector: published, refused (4xx, 501), or unavailable (NATS did not acknowledge)',
    labelNames: ['kind', 'outcome'] as const,
    registers: [this.registry],
  });
  /** What the audit keys gauges read at each scrape (set by the owner of the --audit-keys file). */
  auditKeysState: () => { keys: number; invalid: boolean } = () => ({ keys: 0, invalid: false });
  readonly auditKeys: Gauge = new Gauge({
    name: 'pgwarden_collector_audit_keys',
    help: 'Audit signing keys that checkpoints are verified against (--audit-keys)',
    registers: [this.registry],
    // Read at scrape time, which also re-reads a changed file: an idle collector still shows a broken one.
    collect: (): void => this.auditKeys.set(this.auditKeysState().keys),
  });
  readonly auditKeysInvalid: Gauge = new Gauge({
    name: 'pgwarden_collector_audit_keys_file_invalid',
    help: '1 while the --audit-keys file on disk is invalid (the previous keys stay in force)',
    registers: [this.registry],
    collect: (): void => this.auditKeysInvalid.set(this.auditKeysState().invalid ? 1 : 0),
  });
  readonly readsUnrecorded = new Counter({
    name: 'pgwarden_collector_reads_unrecorded_total',
    help: 'Reads of the audit trail whose audit.read event could not be stored in time (answered 503 unless fail-open)',
    registers: [this.registry],
  });
  readonly readCheckpointFailures = new Counter({
    name: 'pgwarden_collector_read_checkpoints_failed_total',
    help: 'audit.checkpoint events of the collector’s own chain that could not be stored',
    registers: [this.registry],
  });
  readonly findingEventsUnrecorded = new Counter({
    name: 'pgwarden_collector_finding_events_failed_total',
    help: 'Chain findings whose audit.finding event could not be stored in the collector’s own chain (the finding itself is stored)',
    registers: [this.registry],
  });
  readonly webSessionEventsUnrecorded = new Counter({
    name: 'pgwarden_collector_web_session_events_failed_total',
    help: 'Web sign-ins whose end (web.session.end) could not be stored in the collector’s own chain (they ended all the same)',
    registers: [this.registry],
  });
  readonly sessionsInterrupted = new Counter({
    name: 'pgwarden_collector_sessions_interrupted_total',
    help: 'Sessions found interrupted: their sidecar stopped naming them in audit.heads without ending them (killed, OOM, node loss), so statements in flight then left no event',
    registers: [this.registry],
  });
  readonly sseClients = new Gauge({
    name: 'pgwarden_collector_stream_clients',
    help: 'Connected live-tail clients',
    registers: [this.registry],
  });
}
