import { Counter, Gauge, type Registry } from 'prom-client';
import { registerOnce } from '../governance/governance-metrics.js';
import type { CatalogEvent } from './catalog-cache.js';

/**
 * Whether each listener's catalog can be read, and its failed loads and checks. While it cannot, statements that
 * need a catalog check are refused (53000), so this is what an alert on those refusals looks at first.
 */
export class CatalogMetrics {
  private readonly available = new Gauge({
    name: 'pgwarden_catalog_available',
    help: '1 while the catalog connection answers (its last load or check succeeded), 0 while statements needing a catalog check are refused',
    labelNames: ['policy'],
    registers: [],
  });
  private readonly failures = new Counter({
    name: 'pgwarden_catalog_failures_total',
    help: 'Failed catalog loads and checks, by cause (timeout: no answer within --catalog-query-timeout; error)',
    labelNames: ['policy', 'cause'],
    registers: [],
  });

  /** A listener whose catalog has not failed counts as available (it may not have been needed yet). */
  listen(policy: string): (e: CatalogEvent) => void {
    this.available.set({ policy }, 1);
    return (e) => {
      if (e.type === 'catalog.failed') {
        this.available.set({ policy }, 0);
        this.failures.inc({ policy, cause: e.cause });
      } else this.available.set({ policy }, 1);
    };
  }

  register(registry: Registry): void {
    registerOnce(registry, [
      ['pgwarden_catalog_available', this.available],
      ['pgwarden_catalog_failures_total', this.failures],
    ]);
  }
}
