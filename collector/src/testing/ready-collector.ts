import pino from 'pino';
import { type Collector, type CollectorOptions, startCollector } from '../collector.js';
import { waitFor } from './wait-for.js';

/**
 * A collector replica on `nats` and `store`, silent, resolved once it reports NATS ready: its stream and consumer
 * exist, so what a test publishes next is not lost to "no responders". Findings wait 10 minutes for late events
 * unless `options` says otherwise, so only what a test declares shows.
 */
export async function startReadyCollector(
  nats: string,
  store: string,
  options: Partial<CollectorOptions> = {},
): Promise<Collector> {
  const c = await startCollector({
    nats: { url: nats },
    store: { url: store },
    http: { port: 0 },
    logger: pino({ level: 'silent' }),
    gapGraceMs: 600_000,
    ...options,
  });
  await waitFor(async () => ((await (await fetch(`${c.url}/readyz`)).json()) as any).checks?.nats === true, 20_000);
  return c;
}
