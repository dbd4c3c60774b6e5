import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { StatementRecord } from '../proxy/hooks.js';

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
  private readonly duration: Histogram;

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
    this.upstreamErrors = new Counter({
      name: 'pgwarden_upstream_errors_total',
      help: 'Failures connecting, authenticating or cancelling upstream, by error code',
      labelNames: ['code'],
      registers,
    });
    this.duration = new Histogram({
      name: 'pgwarden_statement_duration_seconds',
      help: 'Time from receiving a statement to its completion',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      registers,
    });
    const self = this;
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
    this.duration.observe(record.durationMs / 1000);
  }

  upstreamError(code: string): void {
    this.upstreamErrors.inc({ code });
  }

  bytes(fromClient: number, fromUpstream: number): void {
    this.bytesFromClient += fromClient;
    this.bytesFromUpstream += fromUpstream;
  }
}
