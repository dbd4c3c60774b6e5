import { Counter, register as defaultRegistry, Gauge, type Registry } from 'prom-client';

/** The sink's metrics; get-or-create so several sinks (tests, reloads) can share one registry. */
export interface AuditMetrics {
  dropped: Counter<'sink' | 'cause'>;
  fsyncFailures: Counter<'sink'>;
  published: Counter<'sink'>;
  spooled: Counter<'sink'>;
  spoolBytes: Gauge<'sink'>;
  queued: Gauge<'sink'>;
  ready: Gauge<'sink'>;
}

function counter<L extends string>(reg: Registry, name: string, help: string, labelNames: L[]): Counter<L> {
  return (
    (reg.getSingleMetric(name) as Counter<L> | undefined) ?? new Counter({ name, help, labelNames, registers: [reg] })
  );
}

function gauge<L extends string>(reg: Registry, name: string, help: string, labelNames: L[]): Gauge<L> {
  return (reg.getSingleMetric(name) as Gauge<L> | undefined) ?? new Gauge({ name, help, labelNames, registers: [reg] });
}

export const AUDIT_METRIC_NAMES = [
  'pgwarden_audit_dropped_total',
  'pgwarden_audit_fsync_failures_total',
  'pgwarden_audit_published_total',
  'pgwarden_audit_spooled_total',
  'pgwarden_audit_spool_bytes',
  'pgwarden_audit_queue_events',
  'pgwarden_audit_ready',
] as const;

export function auditMetrics(reg: Registry = defaultRegistry): AuditMetrics {
  return {
    dropped: counter(
      reg,
      'pgwarden_audit_dropped_total',
      'Audit events dropped because they could not be made durable',
      ['sink', 'cause'],
    ),
    fsyncFailures: counter(
      reg,
      'pgwarden_audit_fsync_failures_total',
      'fdatasync calls of the audit file or spool that failed (events written before them may be lost)',
      ['sink'],
    ),
    published: counter(reg, 'pgwarden_audit_published_total', 'Audit events acknowledged by the sink', ['sink']),
    spooled: counter(reg, 'pgwarden_audit_spooled_total', 'Audit events written to the disk spool', ['sink']),
    spoolBytes: gauge(reg, 'pgwarden_audit_spool_bytes', 'Bytes in the audit disk spool', ['sink']),
    queued: gauge(reg, 'pgwarden_audit_queue_events', 'Audit events waiting in memory for an ack', ['sink']),
    ready: gauge(reg, 'pgwarden_audit_ready', '1 when audit events can be made durable', ['sink']),
  };
}
