/**
 * Subscribers to the operator's typed events: structured logs (pino) and Prometheus metrics (prom-client).
 * Nothing here feeds back into decisions. Messages never carry Secret data (the operator never reads any except
 * its own webhook TLS Secret, whose contents are never logged).
 */

import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { OperatorEvents } from './core/operator-events.js';

export function attachLogging(events: OperatorEvents, log: Logger): void {
  events.on('watch.restarted', (e) =>
    e.reason === 'closed' ? log.debug(e, 'watch restarted') : log.info(e, 'watch restarted'),
  );
  events.on('watch.error', (e) => log.warn(e, 'watch error'));
  events.on('watch.synced', (e) => log.debug(e, 'cache synced'));
  events.on('reconcile.failed', (e) => log.warn(e, 'reconcile failed'));
  events.on('policy.rendered', (e) => (e.changed ? log.info(e, 'policy rendered') : log.debug(e, 'policy unchanged')));
  events.on('policy.invalid', (e) => log.warn(e, 'policy invalid'));
  events.on('policy.configmap-restored', (e) => log.warn(e, 'rendered ConfigMap had keys of someone else: removed'));
  events.on('policy.undeliverable', (e) => log.warn(e, 'policy not delivered: the last good ConfigMap stays'));
  events.on('policy.configmap-recreated', (e) => log.warn(e, 'rendered ConfigMap was immutable: recreated'));
  events.on('workload.rolled', (e) => log.info(e, 'workload rollout triggered'));
  events.on('leader.acquired', (e) => log.info(e, 'became leader'));
  events.on('leader.lost', (e) => log.warn(e, 'lost leadership'));
  events.on('webhook.admission', (e) =>
    e.result === 'skipped' ? log.debug(e, 'admission') : log.info(e, 'admission'),
  );
  events.on('tls.issued', (e) => log.info(e, 'webhook certificate'));
  events.on('tls.error', (e) => log.error(e, 'webhook TLS'));
}

export function createMetrics(events: OperatorEvents, registry = new Registry()): Registry {
  const p = 'pgwarden_operator_';
  const reconciles = new Counter({
    name: `${p}reconcile_total`,
    help: 'Policy reconciliations by result',
    labelNames: ['result'],
    registers: [registry],
  });
  const reconcileSeconds = new Histogram({
    name: `${p}reconcile_duration_seconds`,
    help: 'Duration of one policy reconciliation',
    buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
    registers: [registry],
  });
  const restarts = new Counter({
    name: `${p}watch_restarts_total`,
    help: 'Watch reconnects by resource and reason',
    labelNames: ['resource', 'reason'],
    registers: [registry],
  });
  const depth = new Gauge({ name: `${p}queue_depth`, help: 'Keys waiting in the work queue', registers: [registry] });
  const rendered = new Counter({
    name: `${p}policies_rendered_total`,
    help: 'Rendered policies by whether the content changed',
    labelNames: ['changed'],
    registers: [registry],
  });
  const invalid = new Counter({
    name: `${p}policies_invalid_total`,
    help: 'Reconciliations that found an invalid spec',
    registers: [registry],
  });
  const rollouts = new Counter({
    name: `${p}workload_rollouts_total`,
    help: 'Workload rollouts triggered by sidecar shape changes',
    registers: [registry],
  });
  const leader = new Gauge({ name: `${p}leader`, help: '1 while this replica holds the Lease', registers: [registry] });
  const admissions = new Counter({
    name: `${p}admissions_total`,
    help: 'Admission reviews by result',
    labelNames: ['result'],
    registers: [registry],
  });
  const admissionSeconds = new Histogram({
    name: `${p}admission_duration_seconds`,
    help: 'Time to answer one admission review',
    buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1],
    registers: [registry],
  });
  const certExpiry = new Gauge({
    name: `${p}webhook_certificate_expiry_seconds`,
    help: 'Unix time the serving certificate expires',
    registers: [registry],
  });
  events.on('reconcile.done', (e) => {
    reconciles.inc({ result: 'ok' });
    reconcileSeconds.observe(e.durationMs / 1000);
  });
  events.on('reconcile.failed', () => reconciles.inc({ result: 'error' }));
  events.on('watch.restarted', (e) => restarts.inc({ resource: e.resource, reason: e.reason }));
  events.on('queue.depth', (e) => depth.set(e.depth));
  events.on('policy.rendered', (e) => rendered.inc({ changed: String(e.changed) }));
  events.on('policy.invalid', () => invalid.inc());
  events.on('workload.rolled', () => rollouts.inc());
  events.on('leader.acquired', () => leader.set(1));
  events.on('leader.lost', () => leader.set(0));
  events.on('webhook.admission', (e) => {
    admissions.inc({ result: e.result });
    admissionSeconds.observe(e.durationMs / 1000);
  });
  events.on('tls.issued', (e) => certExpiry.set(Date.parse(e.notAfter) / 1000));
  return registry;
}
