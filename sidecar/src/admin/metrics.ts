import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import type { StatementRecord } from '../proxy/hooks.js';
import type { RetainedBudget } from '../proxy/retained-budget.js';
import type { StatementBudget } from '../proxy/statement-budget.js';

/**
 * The sidecar's Prometheus metrics, in a registry of its own (several sidecars can live in one process in tests).
 * Byte counts are summed in plain numbers on the hot path and copied into the counter at scrape time.
 */
export class SidecarMetrics {
  readonly registry = new Registry();
  private bytesFromClient = 0;
  private bytesFromUpstream = 0;
  private readonly sessionsActive: Gauge;
  private readonly sessionsTotal: Counter;
  /** Statements by "action outcome", counted in plain numbers on the hot path (prom-client hashes labels per call). */
  private readonly statementCounts = new Map<string, number>();
  private readonly upstreamErrors: Counter<'code'>;
  private readonly connectionsRefused: Counter<'reason'>;
  /** Seconds spent in statements (receipt to completion), summed: with the statement count it gives the mean. */
  private statementSeconds = 0;

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'pgwarden_' });
    this.sessionsActive = new Gauge({
      name: 'pgwarden_sessions_active',
      help: 'Client sessions currently open',
      registers,
    });
    this.sessionsTotal = new Counter({
      name: 'pgwarden_sessions_total',
      help: 'Client sessions established since start',
      registers,
    });
    const self = this;
    const counts = this.statementCounts;
    new Counter({
      name: 'pgwarden_statements_total',
      help: 'Statement-bearing messages by verdict action and outcome',
      labelNames: ['action', 'outcome'],
      registers,
      collect() {
        this.reset();
        for (const [key, n] of counts) {
          const [action, outcome] = key.split(' ');
          this.inc({ action, outcome }, n);
        }
      },
    });
    this.connectionsRefused = new Counter({
      name: 'pgwarden_connections_refused_total',
      help: 'Client connections refused before a session opened, by reason (connection_limit)',
      labelNames: ['reason'],
      registers,
    });
    this.upstreamErrors = new Counter({
      name: 'pgwarden_upstream_errors_total',
      help: 'Failures connecting, authenticating or cancelling upstream, by error code',
      labelNames: ['code'],
      registers,
    });
    // A prom-client Histogram validates and hashes labels on every observe (≈3% of CPU on 1000-row results):
    // too much for the per-statement path, so the total is kept in a number and read at scrape time.
    new Counter({
      name: 'pgwarden_statement_seconds_total',
      help: 'Seconds from receiving statement-bearing messages to their completion, summed',
      registers,
      collect() {
        this.reset();
        this.inc(self.statementSeconds);
      },
    });
    new Counter({
      name: 'pgwarden_bytes_total',
      help: 'Bytes relayed, by direction (client_to_upstream, upstream_to_client)',
      labelNames: ['direction'],
      registers,
      collect() {
        this.reset();
        this.inc({ direction: 'client_to_upstream' }, self.bytesFromClient);
        this.inc({ direction: 'upstream_to_client' }, self.bytesFromUpstream);
      },
    });
  }

  /** The process's budgets for statements being read and kept (statement-budget.ts, retained-budget.ts), at scrape. */
  budgets(statements: StatementBudget, budget: RetainedBudget): void {
    const registers = [this.registry];
    new Gauge({
      name: 'pgwarden_buffered_statement_bytes',
      help: 'Bytes of large statements being read or awaiting their answer (--max-buffered-statement-bytes)',
      registers,
      collect() {
        this.set(statements.held);
      },
    });
    new Counter({
      name: 'pgwarden_statement_stalls_ended_total',
      help: 'Sessions ended (FATAL 08P01) because their statement stopped arriving while others needed its memory',
      registers,
      collect() {
        this.reset();
        this.inc(statements.stallsEnded);
      },
    });
    new Gauge({
      name: 'pgwarden_retained_statement_bytes',
      help: 'Bytes of prepared statements, described columns and Bind values the sidecar keeps for its sessions',
      registers,
      collect() {
        this.set(budget.held);
      },
    });
    new Gauge({
      name: 'pgwarden_retained_statement_bytes_limit',
      help: 'Bound on pgwarden_retained_statement_bytes (--max-retained-statement-bytes); a Parse past it gets 53200',
      registers,
      collect() {
        this.set(budget.limit);
      },
    });
  }

  connectionRefused(reason: 'connection_limit'): void {
    this.connectionsRefused.inc({ reason });
  }

  sessionOpened(): void {
    this.sessionsActive.inc();
    this.sessionsTotal.inc();
  }

  sessionClosed(): void {
    this.sessionsActive.dec();
  }

  statement(record: StatementRecord): void {
    let outcome = 'ok';
    for (const r of record.results) if (r.error) outcome = 'error';
    const key = `${record.verdict.action} ${outcome}`;
    this.statementCounts.set(key, (this.statementCounts.get(key) ?? 0) + 1);
    this.statementSeconds += record.durationMs / 1000;
  }

  upstreamError(code: string): void {
    this.upstreamErrors.inc({ code });
  }

  bytes(fromClient: number, fromUpstream: number): void {
    this.bytesFromClient += fromClient;
    this.bytesFromUpstream += fromUpstream;
  }
}
