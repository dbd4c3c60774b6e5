import type { Metric, Registry } from 'prom-client';

/**
 * Adds governance metrics to a listener's registry unless they are there already: every listener of a sidecar
 * serves one /metrics, and the same process-wide counters must appear in it once.
 */
export function registerOnce(registry: Registry, metrics: readonly (readonly [string, Metric])[]): void {
  for (const [name, m] of metrics) if (registry.getSingleMetric(name) !== m) registry.registerMetric(m);
}
