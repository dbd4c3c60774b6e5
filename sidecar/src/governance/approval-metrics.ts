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
    help: 'Review holds by outcome (approved, rejected, stale: approved after a policy reload and denied, timeout, unavailable)',
    labelNames: ['outcome'],
    registers: [],
  });

  private readonly grants = new Counter({
    name: 'pgwarden_approval_grants_total',
    help: 'Approval grants: given (an approval covering later statements of its shape), used (a statement ran under one, without a hold), revoked',
    labelNames: ['event'],
    registers: [],
  });

  /** The governance event listener that keeps the metrics. */
  readonly onEvent = (e: GovernanceEvent): void => {
    if (e.type === 'statement.held') this.held.inc();
    else if (e.type === 'statement.released') {
      this.held.dec();
      this.ended.inc({ outcome: e.outcome });
      if (e.grantUntil !== undefined) this.grants.inc({ event: 'given' });
    } else if (e.type === 'statement.granted') this.grants.inc({ event: 'used' });
    else if (e.type === 'approval.grant_revoked') this.grants.inc({ event: 'revoked' });
  };

  register(registry: Registry): void {
    registerOnce(registry, [
      ['pgwarden_approvals_held', this.held],
      ['pgwarden_approvals_total', this.ended],
      ['pgwarden_approval_grants_total', this.grants],
    ]);
  }
}
