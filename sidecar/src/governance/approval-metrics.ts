import { Counter, Gauge, type Registry } from 'prom-client';
import type { GovernanceEvent } from './governance-events.js';
import { registerOnce } from './governance-metrics.js';

/**
 * Review holds as metrics: how many statements wait for a decision now, and how each hold ended. `unavailable`
 * (the approval queue could not take the request: NATS down, no stream) is split out of `rejected` because it
 * is an outage to alert on, not a person's decision.
 */
export class ApprovalMetrics {
  private readonly held = new Gauge({
    name: 'pgwarden_approvals_held',
    help: 'Statements held by review rules, waiting for a decision',
    registers: [],
  });
  private readonly ended = new Counter({
    name: 'pgwarden_approvals_total',
    help: 'Review holds by outcome (approved, rejected, timeout, unavailable)',
    labelNames: ['outcome'],
    registers: [],
  });

  /** The governance event listener that keeps the metrics. */
  readonly onEvent = (e: GovernanceEvent): void => {
    if (e.type === 'statement.held') this.held.inc();
    else if (e.type === 'statement.released') {
      this.held.dec();
      this.ended.inc({ outcome: e.outcome });
    }
  };

  register(registry: Registry): void {
    registerOnce(registry, [
      ['pgwarden_approvals_held', this.held],
      ['pgwarden_approvals_total', this.ended],
    ]);
  }
}
